"""What tests observe of a container from the host, whatever peer runs it:
its init's freezer state, files inside its root, a terminal session; and
shell snippets that print a container's own cgroup limits (v1 or v2)."""

import fcntl
import os
import pty
import select
import struct
import termios
import time

MEMORY_LIMIT = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                " || cat /sys/fs/cgroup/memory.max")  # fmt: skip
PIDS_LIMIT = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"
CPU_QUOTA = ("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null"
             " || cut -d' ' -f1 /sys/fs/cgroup/cpu.max")  # fmt: skip
CPUSET = "cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus"


def _cgroup_lines(pid: int) -> list[tuple[str, str, str]]:
    with open(f"/proc/{pid}/cgroup") as f:
        return [tuple(line.rstrip("\n").split(":", 2)) for line in f]


def _mountpoint(fstype: str, controller: str | None) -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == fstype and (
                    controller is None or controller in fields[sep + 3].split(",")):  # fmt: skip
                return fields[4]
    return None


def frozen(pid: int) -> bool:
    """Whether PID's cgroup is frozen: the v1 freezer if the host mounts it,
    else cgroup v2's cgroup.events."""
    for _, controllers, path in _cgroup_lines(pid):
        if "freezer" in controllers.split(","):
            with open(f"{_mountpoint('cgroup', 'freezer')}{path}/freezer.state") as f:
                return f.read().strip() == "FROZEN"
    for hierarchy, _, path in _cgroup_lines(pid):
        if hierarchy == "0":
            with open(f"{_mountpoint('cgroup2', None)}{path}/cgroup.events") as f:
                return "frozen 1" in f.read().splitlines()
    raise AssertionError(f"no freezer for pid {pid}")


def read_in_root(pid: int, path: str) -> str:
    """A file as PID (a container process) sees it, read from the host."""
    with open(f"/proc/{pid}/root{path}") as f:
        return f.read()


def counter(pid: int) -> int:
    """The count the tests' LOOP scripts write to /tmp/count, 0 before it starts."""
    try:
        return int(read_in_root(pid, "/tmp/count").strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def wait_for(predicate, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def drive_terminal(argv: list[str], env: dict | None = None, send: bytes = b"",
                   after: bytes | None = None, timeout: float = 60,
                   size: tuple[int, int] = (24, 80)) -> tuple[bytes, int]:  # fmt: skip
    """Run ARGV on a new pseudo-terminal of SIZE (rows, columns), type SEND
    once AFTER appears in its output (at once if AFTER is None), and return
    (output, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
            os.execvpe(argv[0], argv, env if env is not None else os.environ)
        finally:
            os._exit(127)
    output = b""
    sent = not send
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sent and (after is None or after in output):
                os.write(fd, send)
                sent = True
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the terminal's last holder is gone
                    break
                if not data:
                    break
                output += data
        else:
            os.kill(pid, 9)
            raise AssertionError(f"{argv} still running after {timeout}s; output: {output!r}")
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return output, os.waitstatus_to_exitcode(status)
