"""capsa-runtime's command line: runc's commands, flags and exit codes.

Each cmd_<verb> parses nothing itself: it receives the parsed flags, calls
one library function and prints the result. The parser is a small table
rather than argparse, which costs more to import (via re and enum) than a
whole container takes to start.
"""

import os
import sys

from capsa import fastjson
from capsa.errors import CapsaError, InvalidArgument
from capsa.atomicfile import write_atomic
from capsa.runtime import container, spec, state
from capsa.runtime.log import Log

VERSION = "0.1.0"


class Flag:
    def __init__(self, name, short=None, value=False, default=None, help=""):  # noqa: A002
        self.name, self.short, self.value, self.default, self.help = (
            name, short, value, default, help)  # fmt: skip


class Command:
    def __init__(self, name, summary, args, flags, handler, nargs=(0, 0)):
        self.name, self.summary, self.args, self.flags, self.handler = (
            name, summary, args, flags, handler)  # fmt: skip
        self.nargs = nargs

    def usage(self) -> str:
        lines = [f"usage: capsa-runtime {self.name} [options] {self.args}".rstrip(), "",
                 self.summary, ""]  # fmt: skip
        for f in self.flags:
            names = f"--{f.name}" + (f", -{f.short}" if f.short else "")
            names += " value" if f.value else ""
            lines.append(f"  {names:<28} {f.help}")
        return "\n".join(lines)


def parse_flags(argv: list[str], flags: list[Flag]) -> tuple[dict, list[str]]:
    """Go-style flags (-x, --x, --x=v, -x v) up to the first argument, as runc."""
    by_name = {}
    for f in flags:
        by_name[f.name] = f
        if f.short:
            by_name[f.short] = f
    opts = {f.name.replace("-", "_"): f.default for f in flags}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return opts, argv[i + 1 :]
        if not token.startswith("-") or token == "-":
            break
        name, eq, value = token.lstrip("-").partition("=")
        flag = by_name.get(name)
        if flag is None:
            raise InvalidArgument(f"flag provided but not defined: -{name}")
        if flag.value:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise InvalidArgument(f"flag needs an argument: -{name}")
                value = argv[i]
            key = flag.name.replace("-", "_")
            if isinstance(flag.default, list):
                opts[key] = opts[key] + [value]
            else:
                opts[key] = value
        else:
            opts[flag.name.replace("-", "_")] = value.lower() not in ("false", "0") if eq else True
        i += 1
    return opts, argv[i:]


def _count_flag(value, name: str) -> int:
    """A non-negative integer flag (runc's uint flags): "", "-1" and "x" are refused."""
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise InvalidArgument(f"invalid value {value!r} for --{name}")


# --- commands -------------------------------------------------------------------


def cmd_spec(g, opts, args):
    from capsa.runtime import spec

    bundle = opts["bundle"] or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise CapsaError(f"failed to write {path}: file exists, remove it first")
    data = fastjson.dumps(spec.default(rootless=opts["rootless"]), indent="\t") + "\n"
    write_atomic(path, data.encode(), 0o644)


def _create_options(g, opts) -> container.Options:
    return container.Options(
        bundle=opts["bundle"] or ".", pid_file=opts["pid_file"],
        console_socket=opts["console_socket"], no_pivot=opts["no_pivot"],
        no_new_keyring=opts["no_new_keyring"],
        preserve_fds=_count_flag(opts["preserve_fds"], "preserve-fds"),
        systemd_cgroup=g.systemd_cgroup,
    )  # fmt: skip


def cmd_create(g, opts, args):
    container.create(g.root, args[0], _create_options(g, opts))


def cmd_start(g, opts, args):
    container.start(g.root, args[0], g.log.warn)


def cmd_run(g, opts, args):
    from capsa.runtime import run

    return run.run(g.root, args[0], _create_options(g, opts), opts["detach"], g.log.warn)


def cmd_state(g, opts, args):
    print(fastjson.dumps(state.load(g.root, args[0]).oci(), indent="  "))


def cmd_kill(g, opts, args):
    signum = parse_signal(args[1] if len(args) > 1 else "SIGTERM")
    container.kill(g.root, args[0], signum, opts["all"])


def cmd_exec(g, opts, args):
    from capsa.runtime import enter

    if not opts["process"] and len(args) < 2:
        raise InvalidArgument("exec: expected <container-id> <command> [args...] or --process")
    request = enter.Request(
        args=args[1:], process_file=opts["process"], tty=opts["tty"], env=opts["env"],
        cwd=opts["cwd"], user=opts["user"], additional_gids=opts["additional_gids"],
        caps=opts["cap"], no_new_privs=opts["no_new_privs"], apparmor=opts["apparmor"],
        process_label=opts["process_label"], detach=opts["detach"], pid_file=opts["pid_file"],
        console_socket=opts["console_socket"],
        preserve_fds=_count_flag(opts["preserve_fds"], "preserve-fds"),
        cgroup=opts["cgroup"], ignore_paused=opts["ignore_paused"],
    )  # fmt: skip
    return enter.exec_in(g.root, args[0], request, g.log.warn)


def cmd_delete(g, opts, args):
    container.delete(g.root, args[0], opts["force"], g.log.warn)


def cmd_ps(g, opts, args):
    fmt = opts["format"] or "table"
    if fmt not in ("table", "json"):
        raise InvalidArgument(f"failed to list processes: invalid format option {fmt!r}")
    pids = container.processes(g.root, args[0])
    if fmt == "json":
        # As Go encodes runc's []int: compact, and null when there is none.
        print("[" + ",".join(str(pid) for pid in pids) + "]" if pids else "null")
        return
    from capsa.runtime import ps

    table = ps.filter_table(ps.run_ps(args[1:]), pids)
    sys.stdout.flush()
    sys.stdout.buffer.write(table)


def cmd_pause(g, opts, args):
    container.pause(g.root, args[0])


def cmd_resume(g, opts, args):
    container.resume(g.root, args[0])


def cmd_update(g, opts, args):
    from capsa.runtime import update

    values = {name: opts[name.replace("-", "_")]
              for name in (*update.FLAG_FIELDS, *update.RDT_FLAGS)}  # fmt: skip
    try:
        update.refuse_rdt(values)
        # As runc: with --resources every other flag is ignored.
        resources = (update.resources_from_json(opts["resources"]) if opts["resources"]
                     else update.resources_from_flags(values))  # fmt: skip
    except CapsaError as err:
        raise type(err)(f"failed to update container {args[0]}: {err}") from None
    update.update(g.root, args[0], resources, g.log.warn)


def cmd_events(g, opts, args):
    from capsa.runtime import events

    try:
        interval = events.parse_duration(opts["interval"])
    except InvalidArgument as err:
        raise InvalidArgument(f"failed to get events: --interval: {err}") from None
    events.events(g.root, args[0], interval, opts["stats"], g.log.warn)


def cmd_features(g, opts, args):
    from capsa.runtime import features

    print(fastjson.dumps(features.document(VERSION), indent="    "))


def cmd_list(g, opts, args):
    states = container.list_states(g.root, g.log.warn)
    if opts["quiet"]:
        print("\n".join(st.id for st in states) if states else "", end="\n" if states else "")
        return
    rows = []
    for st in states:
        status = st.status()
        rows.append({"ociVersion": st.oci(status)["ociVersion"], "id": st.id,
                     "pid": st.oci(status)["pid"], "status": status, "bundle": st.bundle,
                     "rootfs": st.data.get("rootfs", ""), "created": st.data.get("created", ""),
                     "owner": st.data.get("owner") or "root"})  # fmt: skip
    fmt = opts["format"] or "table"
    if fmt == "json":
        print(fastjson.dumps(rows) if rows else "null")
    elif fmt == "table":
        print_table(["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
                    [[r["id"], r["pid"], r["status"], r["bundle"], r["created"], r["owner"]]
                     for r in rows])  # fmt: skip
    else:
        raise InvalidArgument(f"invalid format option {fmt!r}")


def print_table(header: list[str], rows: list[list]) -> None:
    table = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def parse_signal(raw: str) -> int:
    """KILL, SIGKILL, kill and 9 all name SIGKILL, as with runc; 0 only checks
    that the init is alive (as kill(2) and runc do)."""
    import _signal

    if raw.isascii() and raw.isdigit():
        signum = int(raw)
        if 0 <= signum < _signal.NSIG:
            return signum
        raise InvalidArgument(f"invalid signal {raw}")
    name = raw.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base, _, offset = name[3:].partition("+" if "+" in name else "-")
        if offset.isascii() and offset.isdigit():
            signum = (_signal.SIGRTMIN + int(offset) if base == "RTMIN"
                      else _signal.SIGRTMAX - int(offset))  # fmt: skip
            if _signal.SIGRTMIN <= signum <= _signal.SIGRTMAX:
                return signum
    value = getattr(_signal, name, None)
    if isinstance(value, int) and not name.startswith("SIG_"):
        return value
    raise InvalidArgument(f"unknown signal {raw!r}")


_CREATE_FLAGS = [
    Flag("bundle", "b", value=True, help="path to the root of the bundle directory"),
    Flag("console-socket", value=True, help="unix socket to receive the pty master on"),
    Flag("pid-file", value=True, help="file to write the init's host pid to"),
    Flag("no-pivot", help="use MS_MOVE and chroot instead of pivot_root (ramfs roots)"),
    Flag("no-new-keyring", help="do not create a new session keyring"),
    Flag("preserve-fds", value=True, default=0, help="pass N extra fds (from 3) to the init"),
]

_EXEC_FLAGS = [
    Flag("process", "p", value=True, help="a process.json (as config.json's process) to run"),
    Flag("tty", "t", help="allocate a pseudo-TTY"),
    Flag("env", "e", value=True, default=[], help="set an environment variable (repeatable)"),
    Flag("cwd", value=True, help="working directory in the container"),
    Flag("user", "u", value=True, help="uid[:gid] to run as"),
    Flag("additional-gids", "g", value=True, default=[], help="an extra group (repeatable)"),
    Flag("cap", "c", value=True, default=[], help="add a capability (repeatable)"),
    Flag("no-new-privs", help="set no_new_privs for the process"),
    Flag("apparmor", value=True, help="AppArmor profile for the process"),
    Flag("process-label", value=True, help="SELinux label for the process"),
    Flag("detach", "d", help="do not wait for the process"),
    Flag("pid-file", value=True, help="file to write the process's host pid to"),
    Flag("console-socket", value=True, help="unix socket to receive the pty master on"),
    Flag("preserve-fds", value=True, default=0, help="pass N extra fds (from 3)"),
    Flag("cgroup", value=True, help="run in this sub-cgroup of the container's"),
    Flag("ignore-paused", help="allow exec in a paused container"),
]

# Spelled out rather than built from update.FLAG_FIELDS: importing update
# here would cost every create/start/delete (a unit test keeps them equal).
_UPDATE_FLAGS = [
    Flag("resources", "r", value=True,
         help="a linux.resources JSON file, or - for stdin (other flags are ignored)"),
    Flag("blkio-weight", value=True, help="block IO weight, 10 to 1000"),
    Flag("cpu-period", value=True, help="CPU CFS period in microseconds"),
    Flag("cpu-quota", value=True, help="CPU CFS quota in microseconds per period"),
    Flag("cpu-burst", value=True, help="CPU CFS burst in microseconds"),
    Flag("cpu-share", value=True, help="CPU shares (relative weight)"),
    Flag("cpu-rt-period", value=True, help="CPU realtime period in microseconds"),
    Flag("cpu-rt-runtime", value=True, help="CPU realtime runtime in microseconds"),
    Flag("cpu-idle", value=True, help="1 for SCHED_IDLE, 0 for the default"),
    Flag("cpuset-cpus", value=True, help="CPUs to use, e.g. 0-1"),
    Flag("cpuset-mems", value=True, help="memory nodes to use"),
    Flag("memory", value=True, help="memory limit: bytes or 256m, 1g (-1: unlimited)"),
    Flag("memory-reservation", value=True, help="memory soft limit"),
    Flag("memory-swap", value=True, help="memory plus swap limit (-1: unlimited swap)"),
    Flag("kernel-memory", value=True, help="kernel memory limit (obsolete in the kernel)"),
    Flag("kernel-memory-tcp", value=True, help="kernel TCP buffer memory limit"),
    Flag("pids-limit", value=True, help="maximum number of pids (-1: unlimited)"),
    Flag("l3-cache-schema", value=True, help="Intel RDT/CAT schema (not supported)"),
    Flag("mem-bw-schema", value=True, help="Intel RDT/MBA schema (not supported)"),
]

COMMANDS = {c.name: c for c in [
    Command("spec", "create a new specification file (config.json)", "",
            [Flag("bundle", "b", value=True, help="directory to write config.json in"),
             Flag("rootless", help="a spec for a rootless container")], cmd_spec),
    Command("create", "create a container; its init waits for `start`", "<container-id>",
            _CREATE_FLAGS, cmd_create, (1, 1)),
    Command("start", "run the program of a created container", "<container-id>", [],
            cmd_start, (1, 1)),
    Command("run", "create and start a container, wait for it and delete it",
            "<container-id>", _CREATE_FLAGS + [Flag("detach", "d", help="do not wait")],
            cmd_run, (1, 1)),
    Command("exec", "run a process in a running container",
            "<container-id> <command> [args...]", _EXEC_FLAGS, cmd_exec, (1, 1 << 20)),
    Command("state", "print the state of a container as JSON", "<container-id>", [],
            cmd_state, (1, 1)),
    Command("kill", "send a signal (default SIGTERM) to the container's init",
            "<container-id> [signal]",
            [Flag("all", "a", help="send it to every process in the container")],
            cmd_kill, (1, 2)),
    Command("delete", "delete a stopped container and what it holds", "<container-id>",
            [Flag("force", "f", help="kill the container first if it is running")],
            cmd_delete, (1, 1)),
    Command("list", "list the containers under --root", "",
            [Flag("format", "f", value=True, default="table", help="table or json"),
             Flag("quiet", "q", help="print only the ids")], cmd_list),
    Command("ps", "show the processes of a container (ps options after the id)",
            "<container-id> [ps options]",
            [Flag("format", "f", value=True, default="table", help="table or json")],
            cmd_ps, (1, 1 << 20)),
    Command("pause", "freeze every process of a container", "<container-id>", [],
            cmd_pause, (1, 1)),
    Command("resume", "thaw a paused container", "<container-id>", [], cmd_resume, (1, 1)),
    Command("update", "change the cgroup limits of a container", "<container-id>",
            _UPDATE_FLAGS, cmd_update, (1, 1)),
    Command("events", "stream a container's stats and oom events as JSON lines",
            "<container-id>",
            [Flag("interval", value=True, default="5s", help="time between stats"),
             Flag("stats", help="print the stats once and exit")], cmd_events, (1, 1)),
    Command("features", "show what this runtime and host support (JSON)", "", [],
            cmd_features),
]}  # fmt: skip

GLOBAL_FLAGS = [
    Flag("root", value=True, default=state.DEFAULT_ROOT, help="directory for container state"),
    Flag("log", value=True, help="log file (default: stderr)"),
    Flag("log-format", value=True, default="text", help="text or json"),
    Flag("debug", help="debug output, and tracebacks on errors"),
    Flag("systemd-cgroup", help="take cgroupsPath as slice:prefix:name (systemd hosts)"),
    Flag("help", "h", help="show this help"),
    Flag("version", "v", help="print the version"),
]


def usage() -> str:
    lines = ["usage: capsa-runtime [global options] <command> [options] [arguments]", "",
             "An OCI runtime with runc's command line.", "", "commands:"]  # fmt: skip
    lines += [f"  {c.name:<10} {c.summary}" for c in COMMANDS.values()]
    lines += ["", "global options:"]
    lines += [f"  --{f.name:<16} {f.help}" for f in GLOBAL_FLAGS]
    return "\n".join(lines)


class Globals:
    def __init__(self, opts: dict):
        self.root = opts["root"]
        if opts["log_format"] not in ("text", "json"):
            raise InvalidArgument(f"invalid --log-format {opts['log_format']!r}")
        self.log = Log(opts["log"], opts["log_format"], opts["debug"])
        self.debug = opts["debug"]
        self.systemd_cgroup = bool(opts["systemd_cgroup"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    g = None
    try:
        gopts, rest = parse_flags(argv, GLOBAL_FLAGS)
        g = Globals(gopts)
        if gopts["version"]:
            print(f"capsa-runtime version {VERSION}\nspec: {spec.OCI_VERSION}")
            return 0
        if gopts["help"] or not rest or rest[0] == "help":
            print(usage())
            return 0
        command = COMMANDS.get(rest[0])
        if command is None:
            raise InvalidArgument(f"no such command {rest[0]!r}")
        if "-h" in rest[1:] or "--help" in rest[1:]:
            print(command.usage())
            return 0
        opts, args = parse_flags(rest[1:], command.flags)
        low, high = command.nargs
        if not low <= len(args) <= high:
            raise InvalidArgument(f"{command.name}: expected {command.args or 'no arguments'}")
        result = command.handler(g, opts, args)
        return result if isinstance(result, int) else 0
    except CapsaError as err:
        return _fail(g, str(err))
    except OSError as err:
        if g is not None and g.debug:
            raise
        return _fail(g, _os_error_message(err))
    except KeyboardInterrupt:
        return 130


def _os_error_message(err: OSError) -> str:
    if err.filename:
        return f"{err.strerror}: {err.filename}"
    return err.strerror or str(err)


def _fail(g: Globals | None, msg: str) -> int:
    if g is None:
        sys.stderr.write(f"capsa-runtime: {msg}\n")
    else:
        g.log.error(msg)
    return 1


if __name__ == "__main__":
    sys.exit(main())
