"""The OCI runtimes under test, and a record of how the peers call them.

Each runtime is handed to the peers as a small wrapper named like it (podman
keys features such as `runtime_supports_json` on the runtime's name) that
appends its argv to a shared log, runs the real runtime by its absolute
path, then appends the exit status and, when it failed, what the runtime
wrote to its `--log` file during the call. The peers' own error messages
rarely say which runtime command failed; this log does.

Log lines (one write each, so concurrent calls interleave whole lines):
    CALL <pid> <time> <runtime> <argv quoted by bash's printf %q>
    EXIT <pid> <rc> <time>
    LOG  <pid> <a line the runtime appended to its --log file>
"""

import dataclasses
import os
import shlex
import shutil
import subprocess

WRAPPER = r"""#!/bin/bash
# Written by tests/interop: log this call, run the real runtime, log its status.
calls=@CALLS@
real=@REAL@
log= prev=
for arg in "$@"; do
    [ "$prev" = --log ] && log=$arg
    case $arg in --log=*) log=${arg#--log=} ;; esac
    prev=$arg
done
size=0
[ -n "$log" ] && [ -f "$log" ] && size=$(stat -c %s -- "$log")
printf -v argv ' %q' "$@"
printf 'CALL %s %s @NAME@%s\n' "$$" "$EPOCHREALTIME" "$argv" >> "$calls"
"$real" "$@"
rc=$?
printf 'EXIT %s %s %s\n' "$$" "$rc" "$EPOCHREALTIME" >> "$calls"
if [ "$rc" != 0 ] && [ -n "$log" ] && [ -f "$log" ]; then
    tail -c +"$((size + 1))" -- "$log" | head -c 4000 | sed "s/^/LOG $$ /" >> "$calls"
fi
exit "$rc"
"""

# The runtimes every interop test runs with: (test id, program name).
RUNTIMES = [("capsa-runtime", "capsa-runtime"), ("runc", "runc")]


@dataclasses.dataclass
class Call:
    pid: str
    runtime: str
    argv: list[str]
    rc: int | None = None
    log: list[str] = dataclasses.field(default_factory=list)

    @property
    def command(self) -> str:
        """The runtime command (create, exec, kill...) after the global flags."""
        args = iter(self.argv)
        for arg in args:
            if arg in ("--root", "--log", "--log-format", "--criu", "--rootless"):
                next(args, None)
            elif not arg.startswith("-"):
                return arg
        return ""

    def global_option(self, name: str) -> str | None:
        command_at = self.argv.index(self.command) if self.command else len(self.argv)
        head = self.argv[:command_at]
        for i, arg in enumerate(head):
            if arg == name and i + 1 < len(head):
                return head[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return None

    def __str__(self) -> str:
        status = "running" if self.rc is None else f"rc={self.rc}"
        text = f"[{status}] {self.runtime} {shlex.join(self.argv)}"
        return "\n".join([text] + [f"    log: {line}" for line in self.log])


class CallLog:
    """The file the wrappers append to, read back from an offset."""

    def __init__(self, path: str):
        self.path = path
        self.kept: bytes | None = None
        open(path, "a").close()

    def keep(self) -> None:
        """Read the log into memory, to report from after its file is gone."""
        with open(self.path, "rb") as f:
            self.kept = f.read()

    def mark(self) -> int:
        return len(self.kept) if self.kept is not None else os.path.getsize(self.path)

    def since(self, offset: int) -> list[Call]:
        if self.kept is not None:
            text = self.kept[offset:].decode(errors="replace")
        else:
            with open(self.path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        calls: dict[str, Call] = {}
        ordered = []
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "CALL":
                pid, _time, runtime, quoted = (rest.split(" ", 3) + [""])[:4]
                try:
                    argv = shlex.split(quoted)
                except ValueError:
                    argv = [quoted]
                call = calls[pid] = Call(pid, runtime, argv)
                ordered.append(call)
            elif kind == "EXIT" and rest.split(" ")[0] in calls:
                pid, rc = rest.split(" ")[:2]
                calls[pid].rc = int(rc)
            elif kind == "LOG":
                pid, _, logged = rest.partition(" ")
                if pid in calls:
                    calls[pid].log.append(logged)
        return ordered


@dataclasses.dataclass
class Runtime:
    """One runtime under test: `path` is what the peers are given."""

    key: str  # the test id: capsa-runtime or runc
    real: str  # the runtime's own absolute path
    path: str  # the logging wrapper (or `real` with CAPSA_INTEROP_DIRECT=1)

    @property
    def short(self) -> str:
        return "capsa" if self.key == "capsa-runtime" else self.key

    def still_exists(self, container_id: str, root: str | None) -> bool:
        """Whether the runtime itself still knows the container (`state`)."""
        argv = [self.real] + (["--root", root] if root else []) + ["state", container_id]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return result.returncode == 0


def find_runtime(program: str) -> str | None:
    """The absolute path of PROGRAM (runc lives in /usr/sbin)."""
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def write_wrapper(directory: str, name: str, real: str, log: CallLog) -> str:
    """DIRECTORY/NAME/NAME: the logging wrapper for REAL."""
    os.makedirs(os.path.join(directory, name), exist_ok=True)
    path = os.path.join(directory, name, name)
    text = (WRAPPER.replace("@CALLS@", shlex.quote(log.path))
            .replace("@REAL@", shlex.quote(real)).replace("@NAME@", name))  # fmt: skip
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path
