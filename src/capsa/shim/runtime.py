"""The OCI runtime, driven through runc's command line, as containerd's shim does.

    <runtime> [--root R] [runtime args] create --bundle B --pid-file P
              [--console-socket S] ID
    <runtime> [--root R] [runtime args] start|delete [--force] ID
    <runtime> [--root R] [runtime args] kill ID SIGNAL
    <runtime> [--root R] [runtime args] exec --pid-file P ID ARGV...
    <runtime> [--root R] [runtime args] --log L --log-format json exec --process F
              --pid-file P --detach [--console-socket S] ID

Any runc-compatible runtime works (capsa-runtime, runc, crun). Children are
started with posix_spawn: no Python runs between fork and exec, and the
signals Python ignores (SIGPIPE, SIGXFSZ) are reset, since an ignored signal
would be inherited by the runtime and, through it, by the container. The one
fast path: capsa's own runtime, on this shim's interpreter, runs in forks of
a child that has it loaded, without exec, while the container is young
(forked_runtime.py); everything else here is the same.

`create` leaves the init waiting on the runtime's exec fifo. The init
inherits create's stdio, so create gets the container's own pipes: what the
runtime prints there before `start` (its errors, above all) is read back
here; nothing the container runs can write before `start`.
"""

import _socket
import posix
import select
import time

from capsa.errors import CapsaError
from capsa.shim import forked_runtime

CALL_TIMEOUT = 30.0
CREATE_TIMEOUT = 120.0
_RESET_SIGNALS = (13, 25)  # SIGPIPE, SIGXFSZ


class RuntimeFailed(CapsaError):
    """A runtime command exited non-zero (or timed out)."""


class Created:
    """What `create` (or `exec`) produced: the process's pid, the pty master
    (with a tty), and whatever the runtime printed."""

    def __init__(self, pid: int, master: int | None, output: bytes):
        self.pid = pid
        self.master = master
        self.output = output


class Runtime:
    def __init__(self, path: str, root: str | None, args: list[str], container_id: str,
                 zygote: forked_runtime.Zygote | None = None):  # fmt: skip
        """ZYGOTE: the fast path (see forked_runtime), forked as the shim
        started; kept if PATH is capsa-runtime's launcher."""
        self.path = path
        self.global_args = (["--root", root] if root else []) + list(args)
        self.id = container_id
        self.zygote = zygote
        if zygote is not None and not forked_runtime.recognises(path):
            self.release_zygote()  # another runtime: always exec'd

    def argv(self, *command: str) -> list[str]:
        return [self.path, *self.global_args, *command]

    def spawn(self, argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
        """Exec argv with the given stdio (descriptors above 2) in a child of
        the shim; return its pid."""
        actions = [(posix.POSIX_SPAWN_DUP2, stdin, 0), (posix.POSIX_SPAWN_DUP2, stdout, 1),
                   (posix.POSIX_SPAWN_DUP2, stderr, 2)]  # fmt: skip
        return posix.posix_spawn(argv[0], argv, posix.environ, file_actions=actions,
                                 setsigdef=_RESET_SIGNALS)  # fmt: skip

    def run(self, argv: list[str], stdio: tuple[int, int, int]):
        """Start argv to be waited for (wait_child): in a fork of the
        zygote while there is one, else exec'd."""
        if self.zygote is not None:
            try:
                return self.zygote.spawn(argv[1:], stdio)
            except OSError:
                self.release_zygote()  # it died: exec from now on
        return Spawned(self.spawn(argv, *stdio))

    def release_zygote(self) -> None:
        """From now on every command is exec'd (see forked_runtime)."""
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def call(self, verb: str, *args: str, timeout: float = CALL_TIMEOUT) -> None:
        """Run `<runtime> verb args...` to its end; RuntimeFailed with its message."""
        out = posix.memfd_create("runtime-output", posix.MFD_CLOEXEC)
        null = posix.open("/dev/null", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            code = wait_child(self.run(self.argv(verb, *args), (null, out, out)), timeout)
            if code != 0:
                output = posix.pread(out, 65536, 0)
                raise RuntimeFailed(f"failed to {verb} container {self.id}: "
                                    f"{failure_message(output, code)}")  # fmt: skip
        finally:
            posix.close(out)
            posix.close(null)

    def create(self, bundle: str, pid_file: str, stdio: tuple[int, int, int],
               drain: tuple[int, ...] = (), console=None,
               console_path: str | None = None) -> Created:  # fmt: skip
        """Run create with stdio as the container's; read the runtime's own
        output from the drain fds meanwhile, and the pty master from console."""
        command = ["create", "--bundle", bundle, "--pid-file", pid_file]
        code, output, master = self._run_serving(command, pid_file, stdio, drain, console,
                                                 console_path, CREATE_TIMEOUT)  # fmt: skip
        if code != 0:
            raise RuntimeFailed(f"failed to create container {self.id}: "
                                f"{failure_message(output, code)}")  # fmt: skip
        try:
            init_pid = self._read_pid(pid_file, "create container")
            self._check_master(console, master, "create container")
        except RuntimeFailed:
            # The runtime did create it: nothing may be left behind.
            _close_if_open(master)
            try:
                self.delete(force=True)
            except RuntimeFailed:
                pass
            raise
        return Created(init_pid, master, output)

    def exec(self, process_file: str, pid_file: str, log_file: str, stdio: tuple[int, int, int],
             console=None, console_path: str | None = None) -> Created:  # fmt: skip
        """Run `exec --detach` of the process in process_file, stdio its own
        (the pty master comes from console): the runtime leaves it running,
        an orphan whose reaper is the caller (a child subreaper). The
        runtime's message comes from its --log: once the process runs,
        what arrives on stdio is the process's."""
        log_args = ["--log", log_file, "--log-format", "json"]
        command = [*log_args, "exec", "--process", process_file, "--pid-file", pid_file, "--detach"]
        code, _, master = self._run_serving(command, pid_file, stdio, (), console, console_path,
                                            CALL_TIMEOUT)  # fmt: skip
        if code != 0:
            raise RuntimeFailed(f"failed to exec in container {self.id}: "
                                f"{failure_message(_read_file(log_file), code)}")  # fmt: skip
        try:
            pid = self._read_pid(pid_file, "exec in container")
        except RuntimeFailed:
            _close_if_open(master)
            raise
        try:
            self._check_master(console, master, "exec in container")
        except RuntimeFailed:
            posix.kill(pid, 9)  # reaped by the caller as any orphan
            raise
        return Created(pid, master, b"")

    def _run_serving(self, command: list[str], pid_file: str, stdio: tuple[int, int, int],
                     drain: tuple[int, ...], console, console_path: str | None,
                     timeout: float) -> tuple[int, bytes, int | None]:  # fmt: skip
        """Run `<runtime> COMMAND [--console-socket S] ID` to its end (a stale
        pid_file removed first), reading the drain fds and the console
        meanwhile: (its exit code, what it printed there, the pty master it
        sent if it succeeded)."""
        try:
            posix.unlink(pid_file)
        except FileNotFoundError:
            pass
        if console_path:
            command = [*command, "--console-socket", console_path]
        child = self.run(self.argv(*command, self.id), stdio)
        output = bytearray()
        master = []

        def on_ready(fd: int) -> None:
            if console is not None and fd == console.fileno():
                master.append(_receive_console(console))
            else:
                output.extend(_read_available(fd))

        watched = ([console.fileno()] if console is not None else []) + list(drain)
        code = wait_child(child, timeout, watched, on_ready)
        for fd in drain:
            output.extend(_read_available(fd))
        if code != 0:
            for fd in master:
                posix.close(fd)
            return code, bytes(output), None
        # The master may have come in with the runtime's last breath.
        if console is not None and not master and select.select([console], [], [], 0.5)[0]:
            master.append(_receive_console(console))
        return code, bytes(output), master[0] if master else None

    def _read_pid(self, pid_file: str, what: str) -> int:
        try:
            with open(pid_file, "rb") as f:
                pid = int(f.read().strip() or b"0")
        except (OSError, ValueError) as err:
            raise RuntimeFailed(f"failed to {what} {self.id}: the runtime wrote "
                                f"no pid to {pid_file}: {err}") from None  # fmt: skip
        if pid <= 0:
            raise RuntimeFailed(f"failed to {what} {self.id}: the runtime wrote "
                                f"no pid to {pid_file}")  # fmt: skip
        return pid

    def _check_master(self, console, master: int | None, what: str) -> None:
        if console is not None and master is None:
            raise RuntimeFailed(f"failed to {what} {self.id}: the runtime sent "
                                f"no terminal on the console socket")  # fmt: skip

    def start(self) -> None:
        self.call("start", self.id)

    def kill(self, signum: int) -> None:
        self.call("kill", self.id, str(signum))

    def delete(self, force: bool = False) -> None:
        self.call("delete", *(["--force"] if force else []), self.id)

    def exec_argv(self, pid_file: str, argv: list[str]) -> list[str]:
        return self.argv("exec", "--pid-file", pid_file, self.id, *argv)


class Spawned:
    """An exec'd child, waited for as forked_runtime.Worker is."""

    def __init__(self, pid: int):
        self.pid = pid
        self.pidfd = posix.pidfd_open(pid)

    def fileno(self) -> int:
        """Readable once the child has exited."""
        return self.pidfd

    def wait(self) -> int:
        """The child's wait status."""
        try:
            return posix.waitpid(self.pid, 0)[1]
        finally:
            posix.close(self.pidfd)
            self.pidfd = -1


def wait_child(child, timeout: float, fds=(), on_ready=None) -> int:
    """Wait for CHILD (Spawned or a zygote's Worker), serving fds meanwhile;
    its exit code as a shell shows it. Past the timeout it is killed."""
    poller = select.poll()
    poller.register(child.fileno(), select.POLLIN)
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(remaining * 1000))
            for fd, events in ready.items():
                if fd == child.fileno():
                    continue
                if events & select.POLLIN:
                    on_ready(fd)
                if events & (select.POLLHUP | select.POLLERR):
                    poller.unregister(fd)  # the other end is closed: nothing more to read
            if child.fileno() in ready:
                break
        else:
            _kill(child)
            return -1
    except BaseException:
        _kill(child)  # never left running unwatched
        raise
    return exit_code(child.wait())


def _kill(child) -> None:
    posix.kill(child.pid, 9)
    child.wait()


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128 + the signal."""
    if posix.WIFSIGNALED(status):
        return 128 + posix.WTERMSIG(status)
    return posix.WEXITSTATUS(status)


def failure_message(output: bytes, code: int) -> str:
    """The runtime's last non-empty line of output, or its exit status. A
    logrus line (runc's `time=".." level=error msg=".."`, or its JSON form)
    gives its msg."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line:
            return _logrus_message(line)[:1000]
    return "timed out" if code < 0 else f"exit status {code}"


def _logrus_message(line: str) -> str:
    from capsa import fastjson

    try:
        if line.startswith("{"):
            return str(fastjson.loads(line).get("msg", line))
        if line.startswith('time="') and ' msg="' in line:
            from _json import scanstring

            start = line.index(' msg="') + 6
            return scanstring(line, start)[0]  # a Go-quoted string reads as a JSON one
    except (ValueError, AttributeError):
        pass
    return line


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _close_if_open(fd: int | None) -> None:
    if fd is not None:
        posix.close(fd)


def _read_available(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = posix.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _receive_console(listener) -> int:
    """Accept the runtime's connection and take the pty master it sends
    (close-on-exec: the runtimes started later must not hold the terminal)."""
    from capsa.linux.fdpass import recv_fds

    fd, _ = listener._accept()
    conn = _socket.socket(fileno=fd)
    try:
        conn.settimeout(5)
        _, fds = recv_fds(conn, 1, _socket.MSG_CMSG_CLOEXEC)
    finally:
        conn.close()
    if not fds:
        raise OSError(71, "no file descriptor received on the console socket")
    return fds[0]
