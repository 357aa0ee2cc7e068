"""The engine's side of capsa-shim: start one for a container, and talk to
it over its socket (one JSON request line per connection, JSON replies;
`attach` turns the connection into the container's byte stream)."""

import json
import os
import shutil
import socket
import sys

from capsa.errors import CapsaError, FailedPrecondition

# A request that must answer at once (status, kill) waits at most this long.
TIMEOUT = 10


def program() -> list[str]:
    path = shutil.which("capsa-shim")
    return [path] if path else [sys.executable, "-m", "capsa.shim.main"]


class Standby:
    """A capsa-shim started before its container is ready (`--standby`): its
    interpreter and modules load on the other core while the engine makes
    the bundle. Its command line names the container (ID, and its STATE
    directory, as any shim's does), so the engine creates the container with
    that id; start() hands it the flags; cancel() lets it go if it was not
    started (its owner calls it in any case)."""

    def __init__(self, container_id: str, state: str):
        self.id, self.state = container_id, state
        flags_r, self.flags_w = os.pipe2(os.O_CLOEXEC)
        self.answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
        try:
            argv = [*program(), "--standby", "--id", container_id, "--state-dir", state]
            # stdout and stderr on one pipe: the answer is its last line
            self.pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, flags_r, 0), (os.POSIX_SPAWN_DUP2, answer_w, 1),
                (os.POSIX_SPAWN_DUP2, answer_w, 2)])  # fmt: skip
        finally:
            for fd in (flags_r, answer_w):
                os.close(fd)

    def start(self, args: list[str]) -> dict:
        """Run the shim with ARGS; it answers once the container started (or
        not) and leaves a shim of its own running: {"pid": ..., "shim_pid": ...}."""
        try:
            os.write(self.flags_w, json.dumps(args).encode())
        except BrokenPipeError:
            pass  # it died early: its output says why
        os.close(self.flags_w)
        self.flags_w = None
        output = b""
        while chunk := os.read(self.answer_r, 65536):
            output += chunk
        os.close(self.answer_r)
        _, status = os.waitpid(self.pid, 0)
        return _answer(output.decode(errors="replace"), status)

    def cancel(self) -> None:
        """Unless started: no flags come, so the shim exits at once."""
        if self.flags_w is None:
            return
        for fd in (self.flags_w, self.answer_r):
            os.close(fd)
        self.flags_w = None
        os.waitpid(self.pid, 0)


def _answer(output: str, status: int) -> dict:
    line = output.strip().splitlines()[-1:] or [""]
    try:
        answer = json.loads(line[0])
    except ValueError:
        detail = line[0] or f"exit status {os.waitstatus_to_exitcode(status)}"
        raise CapsaError(f"failed to start the container's shim: {detail}") from None
    if "error" in answer:
        raise CapsaError(answer["error"])
    return answer


def start(container_id: str, state: str, args: list[str], standby: Standby | None = None) -> dict:
    """Start the shim of CONTAINER_ID (STATE: its state directory) with
    ARGS, in STANDBY if one was started for it; the shim's answer."""
    if standby is None or (standby.id, standby.state) != (container_id, state):
        standby = Standby(container_id, state)  # none, or named for another: its owner lets it go
    return standby.start(args)


def connect(path: str, request: dict, wait: float | None = TIMEOUT) -> tuple[socket.socket, dict]:
    """Send REQUEST; returns the connection and the first reply, which may
    take WAIT seconds (None: as long as it takes)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    conn.settimeout(wait)
    try:
        conn.connect(path)
        conn.sendall(json.dumps(request).encode() + b"\n")
        reply = _read_line(conn)
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        raise ShimGone(f"nothing answers at {path}") from None
    except BaseException:
        conn.close()
        raise
    if reply.get("error") and "status" not in reply:  # status carries a restart's error too
        conn.close()
        raise FailedPrecondition(reply["error"])
    return conn, reply


def call(path: str, op: str, wait: float | None = TIMEOUT, **fields) -> dict:
    conn, reply = connect(path, {"op": op, **fields}, wait)
    conn.close()
    return reply


def _read_line(conn: socket.socket) -> dict:
    """The reply line, and not a byte more: what follows it (an attach's
    stream) stays in the socket for the caller."""
    data = b""
    while True:
        peeked = conn.recv(65536, socket.MSG_PEEK)
        if not peeked:
            if not data:
                raise ShimGone("it closed the connection")
            break
        end = peeked.find(b"\n")
        data += conn.recv(end + 1 if end >= 0 else len(peeked))
        if end >= 0:
            break
    return json.loads(data)


def receive(conn: socket.socket) -> bytes:
    """The next chunk of a shim's stream, b"" at its end (also when it hung
    up with our input unread, which reads as ECONNRESET)."""
    try:
        return conn.recv(65536)
    except ConnectionResetError:
        return b""


class ShimGone(CapsaError):
    """No shim answers for the container (it was killed, or never ran)."""

    def __init__(self, why: str):
        super().__init__(f"the container's shim is gone ({why}); `capsa rm -f` removes what is left")


def pids_under(state: str) -> list[int]:
    """The shims whose state directory lies under STATE (their command line
    names it): what is left of a store whose containers could not all be removed."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"capsa-shim" in arg or b"capsa.shim" in arg for arg in argv[:3]) and \
                any(arg.startswith(state.encode() + b"/") for arg in argv):  # fmt: skip
            found.append(int(pid))
    return found
