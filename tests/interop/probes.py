"""What tests observe of a container from the host, whatever peer runs it:
its init's freezer state, files inside its root, a terminal session;
shell snippets that print a container's own cgroup limits (v1 or v2); and
the exec-then-stop scenario every Docker-compatible CLI goes through."""

import fcntl
import os
import pty
import select
import struct
import termios
import time

from waiting import wait_for

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


# A container init that counts while it runs and exits 42 on SIGTERM.
LOOP = 'trap "exit 42" TERM; i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done'


def exec_then_stop(cli, name: str, image: str) -> None:
    """The same scenario through a Docker-compatible CLI (podman's, docker's):
    run LOOP detached; exec joins its pid namespace and cgroups, with the
    asked user, workdir, environment and a terminal, and returns its exit
    status; stop ends the init with SIGTERM (exit 42), then rm."""
    cli.run("-d", "--name", name, image, "sh", "-c", LOOP)
    init_pid = cli.inspect(name)["State"]["Pid"]
    wait_for(lambda: counter(init_pid), what="the container's loop")

    seen = cli("exec", name, "sh", "-c", "cat /proc/1/cmdline; echo; echo $$")
    init_cmdline, exec_pid = seen.stdout.splitlines()
    assert "trap" in init_cmdline and exec_pid != "1", seen.stdout
    cgroups = cli("exec", name, "sh", "-c", "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup")
    of_init, of_exec = cgroups.stdout.split("--\n")
    assert sorted(of_exec.split()) == sorted(of_init.split()), cgroups.stdout

    who = cli("exec", "--user", "65534:65534", "--workdir", "/tmp", "--env", "GREETING=hi",
              name, "sh", "-c", 'echo "$(id -u):$(id -g) $(pwd) $GREETING"')  # fmt: skip
    assert who.stdout.strip() == "65534:65534 /tmp hi"
    assert cli("exec", name, "sh", "-c", "exit 5", check=False).returncode == 5
    # a terminal: the runtime hands the pty master over --console-socket
    tty = cli("exec", "--tty", name, "tty")
    assert tty.stdout.strip().startswith("/dev/pts/"), tty.stdout

    started = time.monotonic()
    cli("stop", "--time", "10", name)
    assert time.monotonic() - started < 8, "SIGTERM did not end the init: stop waited for SIGKILL"
    state = cli.inspect(name)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 42)
    cli("rm", name)


def pause_unpause(cli, name: str, image: str, *rm_flags: str) -> None:
    """pause freezes the init (its loop stops counting), unpause thaws it,
    and a paused container can be removed (kill and delete --force of a
    frozen one); RM_FLAGS: what this CLI's `rm --force` needs besides."""
    cli.run("-d", "--name", name, image, "sh", "-c", LOOP)
    pid = cli.inspect(name)["State"]["Pid"]
    wait_for(lambda: counter(pid), what="the container's loop")

    cli("pause", name)
    assert cli.inspect(name)["State"]["Status"] == "paused"
    assert frozen(pid)
    count = counter(pid)
    time.sleep(0.3)
    assert counter(pid) == count, "the paused container kept running"

    cli("unpause", name)
    assert cli.inspect(name)["State"]["Status"] == "running"
    assert not frozen(pid)
    wait_for(lambda: counter(pid) > count, what="the loop to go on after unpause")

    cli("pause", name)
    cli("rm", "--force", *rm_flags, name)

