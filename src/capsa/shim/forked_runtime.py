"""The fast path for capsa's own runtime: forks that call its main, no exec.

Running `capsa-runtime create` as a program costs a new interpreter and the
runtime's imports (about 25 ms, three times per container: create, start,
delete). When the runtime is capsa-runtime's launcher (scripts/install-launchers)
on the very interpreter binary this shim runs on, with this shim's source tree
and flags, a fork that calls `capsa.runtime.cli.main(args)` runs the same code
on the same binary, with the interpreter started and the runtime's modules
imported.

Those forks come from the zygote (as Android calls its own): a child the shim
forks as it starts, which imports the runtime while the shim prepares the
container's stdio, then forks one worker per command the shim sends. The shim
itself never imports the runtime (nor os: see capsa.shim), because what an idle
shim holds, every running container costs. So the zygote lives only while the
container is young: the shim lets it go LINGER seconds after the start, or
after the delete of a container that exited sooner; from then on every runtime
command is exec'd, as any other runtime's.

A worker is the zygote's child, not the shim's; what it leaves running (the
container's init after `create`, the process of `exec --detach`) is orphaned
when it exits and goes, as from an exec'd runtime, to the nearest child
subreaper: the shim.

What exec would have done is done by hand in the worker, so the runtime sees
what a new process would: the stdio given, every close-on-exec descriptor
closed (the container's init must not hold the zygote's socket), the signal
dispositions of a new interpreter, and the shim's objects never finalised
(gc.freeze) so that nothing of theirs closes a descriptor the runtime reuses.

The container's init is then a fork of the shim's interpreter, so
/proc/<init>/exe is the binary the launcher's `#!` line names and an exec'd
runtime would run on. The protection against CVE-2019-5736 (that binary is a
private copy marked immutable) is therefore unchanged; a shim on any other
interpreter (say `python -m capsa.shim.main` from a venv) does not take this
path. Any other runtime (runc, crun, a path) is always exec'd.

The shim and the zygote talk over a SOCK_SEQPACKET pair, one JSON message each:

    shim -> zygote   ["create", "--bundle", ...], with stdin, stdout and
                     stderr attached (SCM_RIGHTS)
    zygote -> shim   {"pid": <worker>}, then {"status": <its wait status>}

The end of input (the shim closed its end, or died) ends the zygote.
"""

import _signal
import _socket
import gc
import posix
import sys

import capsa
from capsa import fastjson
from capsa.linux.fdpass import recv_fds, send_fds

LINGER = 1.0

# What create, start, exec and delete import as they go (the runtime defers
# them, so that `capsa-runtime state` or `list` never pays for them): loaded
# by the zygote once, while the engine still makes the bundle, instead of by
# every worker on the container's way to running.
PRELOAD = ("capsa.runtime.proc_inter", "capsa.runtime.cgroups.v1", "capsa.runtime.cgroups.v2",
           "capsa.runtime.cgroups.devices_bpf", "capsa.runtime.seccomp", "capsa.runtime.enter",
           "capsa.runtime.proc_exec")  # fmt: skip

# scripts/install-launchers writes capsa-runtime's launcher from this text
# (a unit test keeps the two equal); anything else is run as a program.
LAUNCHER = """#!{python} -IS
import gc, sys
gc.set_threshold(50000, 20, 20)
sys.path.insert(0, {src!r})
from capsa.runtime.cli import main
sys.exit(main())
"""


def runs_as_launcher() -> bool:
    """Whether this shim runs as the launchers run (-IS): only then may its
    runtime be one of them."""
    return bool(sys.flags.isolated and sys.flags.no_site)


def recognises(path: str) -> bool:
    """Whether PATH is capsa-runtime's launcher for this shim's own source
    tree on this shim's own interpreter binary, run as the shim runs (-IS)."""
    if not runs_as_launcher():
        return False
    try:
        with open(path, "rb") as f:
            text = f.read(4096).decode()
    except (OSError, UnicodeDecodeError):
        return False
    src = capsa.__file__.rpartition("/")[0].rpartition("/")[0]
    return is_launcher(text, "/proc/self/exe", src)


def is_launcher(text: str, interpreter: str, src: str) -> bool:
    """Whether TEXT is the launcher of capsa-runtime from SRC that runs on the
    binary INTERPRETER (its #! line may name it through a symlink)."""
    python = text[2:].partition(" ")[0] if text.startswith("#!") else ""
    return text == LAUNCHER.format(python=python, src=src) and _same_file(python, interpreter)


def _same_file(a: str, b: str) -> bool:
    try:
        one, other = posix.stat(a), posix.stat(b)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


class Zygote:
    """The shim's end: started at once, runs commands one at a time."""

    def __init__(self):
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self.pid = posix.fork()
        if self.pid == 0:
            ours.close()
            _serve(theirs)  # never returns
        theirs.close()
        self.sock = ours

    def spawn(self, args: list[str], stdio: tuple[int, int, int]) -> "Worker":
        """`capsa-runtime ARGS` with STDIO as its 0, 1, 2, in a worker;
        OSError if the zygote is gone."""
        send_fds(self.sock, list(stdio), fastjson.dumps(args).encode())
        return Worker(self, self._receive("pid"))

    def _receive(self, key: str) -> int:
        """The next message with KEY (a status is skipped if a wait for it
        was given up)."""
        while True:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionResetError(104, "the runtime's zygote is gone")
            message = fastjson.loads(data)
            if key in message:
                return message[key]

    def close(self) -> None:
        """Let the zygote go (it exits; the shim reaps it as any child)."""
        self.sock.close()


class Worker:
    """One runtime command in a fork of the zygote, waited for as a child."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid

    def fileno(self) -> int:
        """Readable once the worker has exited."""
        return self.zygote.sock.fileno()

    def wait(self) -> int:
        """The worker's wait status."""
        return self.zygote._receive("status")


def _serve(sock) -> None:
    """The zygote: import the runtime, then fork a worker per request and
    report its end, until the shim hangs up."""
    code = 0
    try:
        gc.freeze()  # nothing of the shim's is finalised here either
        posix.closerange(3, sock.fileno())  # the shim's (the start-up answer pipe above all)
        posix.closerange(sock.fileno() + 1, 1 << 20)
        _signals_of_a_new_interpreter()
        from capsa.runtime import cli

        for name in PRELOAD:
            __import__(name)

        while True:
            data, stdio = recv_fds(sock, 3, _socket.MSG_CMSG_CLOEXEC, 65536)
            if not data:
                break
            pid = posix.fork()
            if pid == 0:
                _work(cli, fastjson.loads(data), stdio)  # never returns
            for fd in stdio:
                posix.close(fd)
            sock.send(fastjson.dumps({"pid": pid}).encode())
            _, status = posix.waitpid(pid, 0)
            sock.send(fastjson.dumps({"status": status}).encode())
    except BaseException:  # noqa: BLE001 - the shim sees the hang-up and execs instead
        code = 1
    finally:
        posix._exit(code)


def _work(cli, args: list[str], stdio: tuple[int, int, int]) -> None:
    code = 1
    try:
        gc.freeze()  # the shim's objects (and their descriptors) are never finalised here
        for target, fd in enumerate(stdio):
            posix.dup2(fd, target)  # inheritable: the init gets it, as through exec
        _close_on_exec()
        code = cli.main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    except BaseException:  # noqa: BLE001 - as an uncaught exception in a program: shown, exit 1
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # the runtime closed it, or its reader is gone
                pass
        posix._exit(code & 0xFF)


def _close_on_exec() -> None:
    """Close what execve would: every descriptor marked close-on-exec."""
    for name in posix.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if not posix.get_inheritable(fd):
                    posix.close(fd)
            except OSError:
                pass  # the directory's own descriptor, closed by now


def _signals_of_a_new_interpreter() -> None:
    """No wakeup fd, and default dispositions where the shim set handlers
    (a new interpreter ignores SIGPIPE and SIGXFSZ, as this one still does)."""
    _signal.set_wakeup_fd(-1)
    for signum in range(1, _signal.NSIG):
        try:
            handler = _signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not _signal.default_int_handler:
            _signal.signal(signum, _signal.SIG_DFL)
