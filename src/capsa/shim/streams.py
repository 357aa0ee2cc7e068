"""The container's stdio: its pipes or its pty, the log, and the attached clients.

Without a tty the container's stdout and stderr are two pipes the shim reads;
its stdin is a third pipe with --stdin, else /dev/null. With a tty the runtime
sends the pty master over `<state-dir>/console.sock` and the shim reads and
writes the master (tty output is logged as "stdout"). Each run (a restart is
a new run) gets new pipes; the log and the attachers carry over.

Output goes to the log and to every attacher: raw bytes with a tty, else
Docker's multiplexed frames. Attachers are never waited for: one whose
unsent output passes MAX_PENDING is dropped rather than slow the container.
What attachers send goes to the container's stdin (when it has one and they
asked for it); an end of file from the last such client closes the stdin
pipe, as Docker's StdinOnce does.
"""

import _socket
import errno
import posix

from capsa.shim.loop import HUP, IN, OUT
from capsa.shim.protocol import STDERR, STDOUT, frame

MAX_PENDING = 4 << 20  # unsent output per attacher
STDIN_HIGH = 256 << 10  # stop reading attachers while this much stdin is unwritten
_READ = 65536


class RunStdio:
    """The descriptors of one run: what create's runtime gets, and ours."""

    def __init__(self):
        self.child = (-1, -1, -1)  # the runtime's (and so the init's) stdin/out/err
        self.drain: tuple[int, ...] = ()  # ours, read while create runs
        self.outputs: dict[int, str] = {}  # ours: fd -> "stdout" | "stderr"
        self.stdin = -1  # ours: the write end of the container's stdin (or the master)
        self.master = -1  # ours: the pty master, with a tty
        self.console = None  # a listening socket for the pty master
        self.console_path: str | None = None
        self.close_after_create: list[int] = []

    def close_all(self) -> None:
        fds = set(self.close_after_create) | set(self.outputs) | set(self.drain)
        for fd in fds | {self.stdin, self.master}:
            if fd >= 0:
                _close(fd)
        self.close_after_create, self.outputs, self.drain = [], {}, ()
        self.stdin = self.master = -1
        self.close_console()

    def keep_ours(self) -> None:
        """The runtime has run: close the ends that are the process's now, the
        console listener, and the drain fds that are not outputs."""
        for fd in self.close_after_create:
            _close(fd)
        self.close_after_create = []
        self.close_console()
        for fd in self.drain:
            if fd not in self.outputs:
                _close(fd)
        self.drain = ()

    def close_console(self) -> None:
        if self.console is not None:
            self.console.close()
            self.console = None
            _unlink(self.console_path)


class Attacher:
    """A client connection after `attach`: output to it, its bytes to stdin."""

    def __init__(self, sock, stdin: bool):
        self.sock = sock
        self.fd = sock.fileno()
        self.stdin = stdin
        self.reading = True  # until the client's end of file
        self.pending = bytearray()


class Streams:
    def __init__(self, loop, log, tty: bool, stdin: bool, diag):
        self.loop = loop
        self.log = log
        self.tty = tty
        self.has_stdin = stdin
        self.diag = diag
        self.run = RunStdio()
        self.stdin_buffer = bytearray()
        self.stdin_eof = False  # close stdin once the buffer is written
        self.attachers: dict[int, Attacher] = {}

    # --- one run --------------------------------------------------------------------

    def prepare(self, console_path: str) -> RunStdio:
        """New descriptors for a run, before the runtime's create."""
        return prepare_stdio(self.tty, self.has_stdin, console_path)

    def begin(self, run: RunStdio, master: int | None) -> None:
        """create succeeded: drop the container's ends, watch ours."""
        run.keep_ours()
        if master is not None:
            posix.set_blocking(master, False)
            run.master = master
            run.outputs = {master: "stdout"}
            run.stdin = master if self.has_stdin else -1
        self.run = run
        self.stdin_buffer = bytearray()
        self.stdin_eof = False
        for fd in run.outputs:
            self.loop.add(fd, IN, self._handler(fd))
        if run.stdin >= 0 and run.stdin not in run.outputs:
            self.loop.add(run.stdin, 0, self._handler(run.stdin))

    def drain(self) -> None:
        """The init has exited: take in all the output that is left."""
        for fd in list(self.run.outputs):
            while fd in self.run.outputs and self._read_output(fd):
                pass

    def end_run(self) -> None:
        """Close this run's descriptors; pending partial lines go to the log."""
        for fd in list(self.run.outputs) + [self.run.stdin, self.run.master]:
            self.loop.remove(fd)
        self.run.close_all()
        self.run = RunStdio()
        self.stdin_buffer = bytearray()
        self.log.flush()
        self._update_attachers()

    @property
    def master(self) -> int:
        return self.run.master

    # --- descriptors of the run -----------------------------------------------------

    def _handler(self, fd: int):
        def handle(events: int) -> None:
            if events & (IN | HUP) and fd in self.run.outputs:
                self._read_output(fd)
            if events & OUT and fd == self.run.stdin:
                self._write_stdin()
            elif events & HUP and fd == self.run.stdin and fd not in self.run.outputs:
                self._close_stdin()  # the container closed its end

        return handle

    def _read_output(self, fd: int) -> bool:
        """Read once from an output; False when there is nothing (more) now."""
        data = read_output(fd)
        if data is None:
            return False
        stream = self.run.outputs[fd]
        if not data:
            self._output_ended(fd, stream)
            return False
        self.log.write(stream, data)
        if self.attachers:
            payload = data if self.tty else frame(STDOUT if stream == "stdout" else STDERR, data)
            for attacher in list(self.attachers.values()):
                self._send(attacher, payload)
        return True

    def _output_ended(self, fd: int, stream: str) -> None:
        self.log.flush(stream)
        del self.run.outputs[fd]
        self.loop.remove(fd)
        if fd == self.run.master:  # kept for resize until the run ends; no one reads input
            self.run.stdin = -1
            self.stdin_buffer.clear()
        else:
            _close(fd)

    def write_stdin(self, data: bytes) -> None:
        if self.run.stdin < 0 or self.stdin_eof:
            return
        self.stdin_buffer += data
        self._write_stdin()

    def _write_stdin(self) -> None:
        fd = self.run.stdin
        while self.stdin_buffer and fd >= 0:
            try:
                written = posix.write(fd, self.stdin_buffer)
            except BlockingIOError:
                break
            except OSError as err:  # EPIPE: nobody in the container reads stdin any more
                if err.errno != errno.EPIPE:
                    self.diag.warn(f"failed to write to the container's stdin: {err}")
                self.stdin_buffer.clear()
                self._close_stdin()
                return
            del self.stdin_buffer[:written]
        if not self.stdin_buffer and self.stdin_eof and not self.tty:
            self._close_stdin()
            return
        self._watch(fd)
        self._update_attachers()

    def _close_stdin(self) -> None:
        fd = self.run.stdin
        if fd < 0:
            return
        self.run.stdin = -1
        self.stdin_buffer.clear()
        if fd == self.run.master:
            self._watch(fd)
        else:
            self.loop.remove(fd)
            _close(fd)
        self._update_attachers()

    def _watch(self, fd: int) -> None:
        """Set fd's events from what is wanted of it now."""
        if fd < 0 or fd not in self.loop.handlers:
            return
        events = IN if fd in self.run.outputs else 0
        if fd == self.run.stdin and self.stdin_buffer:
            events |= OUT
        self.loop.modify(fd, events)

    # --- attachers ------------------------------------------------------------------

    def attach(self, sock, stdin: bool, first_input: bytes = b"") -> None:
        """A new attacher; first_input is what it sent along with its request."""
        sock.setblocking(False)
        attacher = Attacher(sock, stdin)
        self.attachers[attacher.fd] = attacher
        handler = self._attacher_handler(attacher)
        self.loop.add(attacher.fd, self._attacher_events(attacher), handler)
        if first_input and stdin and self.has_stdin:
            self.write_stdin(first_input)

    def _attacher_handler(self, attacher: Attacher):
        def handle(events: int) -> None:
            if events & OUT:
                self._flush(attacher)
            if events & IN and attacher.reading:
                self._read_attacher(attacher)
            elif events & HUP:
                self._drop(attacher)

        return handle

    def _attacher_events(self, attacher: Attacher) -> int:
        events = OUT if attacher.pending else 0
        if attacher.reading and len(self.stdin_buffer) < STDIN_HIGH:
            events |= IN
        return events

    def _update_attachers(self) -> None:
        for attacher in self.attachers.values():
            self.loop.modify(attacher.fd, self._attacher_events(attacher))

    def _read_attacher(self, attacher: Attacher) -> None:
        try:
            data = attacher.sock.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            self._drop(attacher)
            return
        if data:
            if attacher.stdin and self.has_stdin:
                self.write_stdin(data)
            return
        attacher.reading = False
        self.loop.modify(attacher.fd, self._attacher_events(attacher))
        if attacher.stdin and not any(a.stdin and a.reading for a in self.attachers.values()):
            self.stdin_eof = True
            self._write_stdin()

    def _send(self, attacher: Attacher, payload: bytes) -> None:
        if attacher.pending:
            attacher.pending += payload
        else:
            try:
                sent = attacher.sock.send(payload)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(attacher)
                return
            if sent < len(payload):
                attacher.pending += payload[sent:]
                self.loop.modify(attacher.fd, self._attacher_events(attacher))
        if len(attacher.pending) > MAX_PENDING:
            self.diag.warn("dropped an attached client that did not keep up with the output")
            self._drop(attacher)

    def _flush(self, attacher: Attacher) -> None:
        try:
            sent = attacher.sock.send(attacher.pending)
        except BlockingIOError:
            return
        except OSError:
            self._drop(attacher)
            return
        del attacher.pending[:sent]
        if not attacher.pending:
            self.loop.modify(attacher.fd, self._attacher_events(attacher))

    def _drop(self, attacher: Attacher) -> None:
        if self.attachers.pop(attacher.fd, None) is None:
            return
        self.loop.remove(attacher.fd)
        attacher.sock.close()
        if attacher.stdin and attacher.reading and self.has_stdin and \
                not any(a.stdin and a.reading for a in self.attachers.values()):  # fmt: skip
            self.stdin_eof = True
            self._write_stdin()

    def detach_all(self, timeout: float = 1.0) -> None:
        """The container is gone for good: send what is pending, then hang up."""
        for attacher in list(self.attachers.values()):
            self.attachers.pop(attacher.fd)
            self.loop.remove(attacher.fd)
            try:
                attacher.sock.settimeout(timeout)
                attacher.sock.sendall(attacher.pending)
                attacher.sock.shutdown(_socket.SHUT_WR)
            except OSError:
                pass
            attacher.sock.close()


def prepare_stdio(tty: bool, stdin: bool, console_path: str, discard: bool = False) -> RunStdio:
    """New descriptors for a process the runtime starts (an init, an exec's):
    pipes, or a console socket for the pty master; without a tty and with
    discard, /dev/null for all three."""
    run = RunStdio()
    try:
        if tty:
            _prepare_tty(run, console_path)
        elif discard:
            _prepare_null(run)
        else:
            _prepare_pipes(run, stdin)
    except BaseException:
        run.close_all()
        raise
    return run


def _prepare_null(run: RunStdio) -> None:
    null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    run.close_after_create.append(null)
    run.child = (null, null, null)


def _prepare_pipes(run: RunStdio, stdin: bool) -> None:
    out_r, out_w = posix.pipe2(posix.O_CLOEXEC)
    run.outputs[out_r] = "stdout"
    run.close_after_create.append(out_w)
    err_r, err_w = posix.pipe2(posix.O_CLOEXEC)
    run.outputs[err_r] = "stderr"
    run.close_after_create.append(err_w)
    if stdin:
        in_r, run.stdin = posix.pipe2(posix.O_CLOEXEC)
        posix.set_blocking(run.stdin, False)
    else:
        in_r = posix.open("/dev/null", posix.O_RDONLY | posix.O_CLOEXEC)
    run.close_after_create.append(in_r)
    for fd in (out_r, err_r):
        posix.set_blocking(fd, False)  # ours only: the container's ends stay blocking
    run.child = (in_r, out_w, err_w)
    run.drain = (out_r, err_r)


def _prepare_tty(run: RunStdio, console_path: str) -> None:
    """The init gets the pty; create's own stdio is a pipe for its messages."""
    null = posix.open("/dev/null", posix.O_RDONLY | posix.O_CLOEXEC)
    run.close_after_create.append(null)
    noise_r, noise_w = posix.pipe2(posix.O_CLOEXEC)
    run.close_after_create += [noise_r, noise_w]
    posix.set_blocking(noise_r, False)
    run.child = (null, noise_w, noise_w)
    run.drain = (noise_r,)
    run.console = bind_unix(console_path, backlog=1)
    run.console_path = console_path


def bind_unix(path: str, backlog: int):
    """A listening unix socket at path, mode 0600 from the start (bound under
    umask 0177); a stale file is replaced. Long paths are bound relative to
    their directory, as sun_path holds only 108 bytes."""
    _unlink(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    old_umask = posix.umask(0o177)
    try:
        if len(path.encode(errors="surrogateescape")) < 108:
            sock.bind(path)
        else:
            directory, _, name = path.rpartition("/")
            cwd = posix.open(".", posix.O_PATH | posix.O_CLOEXEC)
            try:
                posix.chdir(directory or "/")
                sock.bind(name)
            finally:
                posix.fchdir(cwd)
                posix.close(cwd)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    finally:
        posix.umask(old_umask)
    return sock


def read_output(fd: int) -> bytes | None:
    """One read of a process's output: None when there is nothing now, b""
    at its end (a pty master reads EIO once every slave fd is closed)."""
    try:
        return posix.read(fd, _READ)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _close(fd: int) -> None:
    try:
        posix.close(fd)
    except OSError:
        pass


def _unlink(path: str | None) -> None:
    if path:
        try:
            posix.unlink(path)
        except FileNotFoundError:
            pass
