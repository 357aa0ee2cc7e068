"""`exec`: more processes in the running container, run and reaped by the
shim, as containerd's shim runs them.

For each exec the shim writes the process (an OCI process object) to
exec-N.json in its state directory and runs `<runtime> exec --process
--pid-file --detach [--console-socket]` (Runtime.exec). The runtime leaves
the process running and exits; the shim, their child subreaper, is the
process's parent from then on and reaps it through Shim.children. Its stdio:
pipes the shim holds (stdin a pipe when asked for, else /dev/null), or the
pty master the runtime sends to the console socket; detached, /dev/null (a
tty's output is read and thrown away).

Output goes to the client as frames. A slow client slows the process, as a
pipe would, and never the shim: past CLIENT_HIGH unsent bytes the shim stops
reading the output until the client catches up (and past STDIN_HIGH unwritten
bytes stops reading the client). The client's end of file closes the stdin
pipe (a pty stays open). At the exit the shim takes in the output that is
left, sends the EXIT frame and hangs up once everything is sent. A client
that leaves does not end the process: its output is thrown away from then
on and its stdin is closed.

Imported at the first exec request: a shim that never runs one stays lean.
"""

import posix

from capsa import fastjson
from capsa.errors import FailedPrecondition
from capsa.shim.loop import HUP, IN, OUT
from capsa.shim.protocol import EXIT, STDERR, STDOUT, frame, reply
from capsa.shim.streams import RunStdio, prepare_stdio, read_output

CLIENT_HIGH = 1 << 20  # unsent output: stop reading the process's
STDIN_HIGH = 256 << 10  # unwritten stdin: stop reading the client
DRAIN_READS = 64  # at the end: reads of what is left (a writer may go on)
_READ = 65536


class Execs:
    """The execs of one shim whose process runs, by pid."""

    def __init__(self, loop, runtime, state_dir: str, children: dict):
        self.loop = loop
        self.runtime = runtime
        self.state_dir = state_dir
        self.children = children  # the shim's: pid -> callback(exit code)
        self.count = 0
        self.running: dict[int, Exec] = {}

    def start(self, conn, request, console_path: str) -> None:
        """Run request.process; reply with its pid, then (unless detached)
        conn carries its stream. RuntimeFailed if it cannot run."""
        stdin = request.stdin and not request.detach
        run = prepare_stdio(request.process.get("terminal", False), stdin, console_path,
                            discard=request.detach)  # fmt: skip
        try:
            started = self._run(request.process, run)
        except BaseException:
            run.close_all()
            raise
        run.keep_ours()
        process = Exec(self, started.pid, run, started.master, stdin)
        self.running[started.pid] = process
        self.children[started.pid] = process.exited
        if request.detach:
            conn.reply(reply(ok=True, pid=started.pid))
            return
        conn.reply(reply(ok=True, pid=started.pid), close=False)
        sock = conn.take()
        process.serve(sock if sock.fileno() >= 0 else None, conn.rest)  # closed: the client left

    def _run(self, process: dict, run: RunStdio):
        self.count += 1
        base = f"{self.state_dir}/exec-{self.count}"
        process_file, pid_file, log_file = base + ".json", base + ".pid", base + ".log"
        try:
            fd = posix.open(process_file, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
            try:
                posix.write(fd, fastjson.dumps(process).encode())
            finally:
                posix.close(fd)
            return self.runtime.exec(process_file, pid_file, log_file, run.child, run.console,
                                     run.console_path)  # fmt: skip
        finally:
            for path in (process_file, pid_file, log_file):
                _unlink(path)

    def terminal(self, pid: int) -> int:
        """The pty master of exec pid; FailedPrecondition without one."""
        process = self.running.get(pid)
        if process is None:
            raise FailedPrecondition(f"no exec with pid {pid} is running")
        if process.master < 0:
            raise FailedPrecondition(f"exec {pid} has no terminal")
        return process.master


class Exec:
    """One exec'd process: its stdio, and the client its stream goes to."""

    def __init__(self, execs: Execs, pid: int, run: RunStdio, master: int | None, stdin: bool):
        self.execs = execs
        self.loop = execs.loop
        self.pid = pid
        self.master = -1 if master is None else master
        if master is not None:
            posix.set_blocking(master, False)
            self.outputs = {master: STDOUT}
            self.stdin = master if stdin else -1
        else:
            self.outputs = {fd: STDOUT if name == "stdout" else STDERR for fd, name in run.outputs.items()}
            self.stdin = run.stdin
        self.client = None
        self.client_reading = False  # until the client's end of file
        self.to_client = bytearray()
        self.to_stdin = bytearray()
        self.stdin_eof = False  # close stdin once to_stdin is written
        self.exit_code: int | None = None
        for fd in self.outputs:
            self.loop.add(fd, IN, self._process_handler(fd))
        if self.stdin >= 0 and self.stdin not in self.outputs:
            self.loop.add(self.stdin, 0, self._process_handler(self.stdin))

    def serve(self, sock, first_input: bytes) -> None:
        """Stream to sock (None: the client is gone already); first_input is
        what it sent along with its request."""
        if sock is None:
            self._end_stdin()
            return
        sock.setblocking(False)
        self.client = sock
        self.client_reading = True
        self.loop.add(sock.fileno(), IN, self._client_handler)
        if first_input:
            self._take_input(first_input)

    # --- the process's side -----------------------------------------------------------

    def _process_handler(self, fd: int):
        def handle(events: int) -> None:
            if events & (IN | HUP) and fd in self.outputs:
                self._read_output(fd)
            if events & OUT and fd == self.stdin:
                self._write_stdin()
            elif events & HUP and fd == self.stdin and fd not in self.outputs:
                self._close_stdin()  # nobody reads it any more

        return handle

    def _read_output(self, fd: int) -> bool:
        """Read once from an output; False when there is nothing (more) now."""
        data = read_output(fd)
        if data is None:
            return False
        if not data:
            self._output_ended(fd)
            return False
        if self.client is not None:
            self._send(frame(self.outputs[fd], data))
        return True

    def _output_ended(self, fd: int) -> None:
        del self.outputs[fd]
        self.loop.remove(fd)
        if fd == self.master:  # kept for resize until the exit
            self.stdin = -1
            self.to_stdin.clear()
        else:
            _close(fd)

    def _write_stdin(self) -> None:
        while self.to_stdin and self.stdin >= 0:
            try:
                written = posix.write(self.stdin, self.to_stdin)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: nobody reads it any more
                self._close_stdin()
                return
            del self.to_stdin[:written]
        if not self.to_stdin and self.stdin_eof:
            self._close_stdin()
            return
        self._update()

    def _end_stdin(self) -> None:
        """No more input comes: close stdin once what came is written."""
        self.stdin_eof = True
        self._write_stdin()

    def _close_stdin(self) -> None:
        """Write no more; a pipe is closed, a pty stays open (it is the output too)."""
        fd, self.stdin = self.stdin, -1
        self.to_stdin.clear()
        if fd >= 0 and fd != self.master:
            self.loop.remove(fd)
            _close(fd)
        self._update()

    def exited(self, code: int) -> None:
        """Reaped: the output left, the exit frame, then hang up."""
        self.exit_code = code
        self.execs.running.pop(self.pid, None)
        for fd in list(self.outputs):
            for _ in range(DRAIN_READS):
                if not self._read_output(fd):
                    break
        for fd in {*self.outputs, self.stdin, self.master} - {-1}:
            self.loop.remove(fd)
            _close(fd)
        self.outputs, self.stdin, self.master = {}, -1, -1
        if self.client is None:
            return
        self._send(frame(EXIT, fastjson.dumps({"exit_code": code}).encode()))
        if self.client is not None and not self.to_client:
            self._hang_up()

    # --- the client's side ------------------------------------------------------------

    def _client_handler(self, events: int) -> None:
        if events & OUT:
            self._flush()
        if self.client is None:
            return
        if events & IN and self.client_reading:
            self._read_client()
        elif events & HUP:
            self._drop_client()

    def _read_client(self) -> None:
        try:
            data = self.client.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client()
            return
        if data:
            self._take_input(data)
            return
        self.client_reading = False
        self._end_stdin()
        self._update()

    def _take_input(self, data: bytes) -> None:
        if self.stdin >= 0 and not self.stdin_eof:
            self.to_stdin += data
            self._write_stdin()

    def _send(self, payload: bytes) -> None:
        if not self.to_client:
            try:
                sent = self.client.send(payload)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop_client()
                return
            if sent == len(payload):
                return
            payload = payload[sent:]
        self.to_client += payload
        self._update()

    def _flush(self) -> None:
        try:
            sent = self.client.send(self.to_client)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client()
            return
        del self.to_client[:sent]
        if self.to_client:
            return
        if self.exit_code is not None:
            self._hang_up()
        else:
            self._update()

    def _hang_up(self) -> None:
        """All is sent: close. What the client sent and was not read goes
        first, or its read would end in ECONNRESET rather than end of file."""
        try:
            for _ in range(DRAIN_READS):
                if not self.client.recv(_READ):
                    break
        except OSError:
            pass
        self._drop_client()

    def _drop_client(self) -> None:
        """Hung up, or gone: the process runs on, its output read and thrown
        away, its stdin closed."""
        self.loop.remove(self.client.fileno())
        self.client.close()
        self.client = None
        self.client_reading = False
        self.to_client.clear()
        if self.exit_code is None:
            self._end_stdin()
            self._update()

    def _update(self) -> None:
        """Set every descriptor's events from what is wanted of it now."""
        reading = self.client is None or len(self.to_client) < CLIENT_HIGH
        for fd in {*self.outputs, self.stdin} - {-1}:
            if fd in self.loop.handlers:
                events = IN if fd in self.outputs and reading else 0
                self.loop.modify(fd, events | (OUT if fd == self.stdin and self.to_stdin else 0))
        if self.client is not None:
            events = OUT if self.to_client else 0
            if self.client_reading and len(self.to_stdin) < STDIN_HIGH:
                events |= IN
            self.loop.modify(self.client.fileno(), events)


def _close(fd: int) -> None:
    try:
        posix.close(fd)
    except OSError:
        pass


def _unlink(path: str) -> None:
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass
