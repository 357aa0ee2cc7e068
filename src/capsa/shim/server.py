"""The listening socket: accept, read one request line, hand it to the shim.

A connection is read without blocking until its first newline; the request
then goes to `handle(conn, request)`, which answers at once, parks the
connection until the container exits (`wait`, `stop`) or turns it into an
attach stream. Replies are a few hundred bytes, sent with a short timeout so
that a client that never reads cannot stall the loop.
"""

import _socket
import errno
import posix

from capsa.errors import AlreadyExists, CapsaError
from capsa.shim.loop import IN
from capsa.shim.protocol import MAX_REQUEST, error_reply, parse_request
from capsa.shim.streams import bind_unix

REPLY_TIMEOUT = 1.0


class Connection:
    """One client, from its request line to the last reply."""

    def __init__(self, server: "Server", sock):
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = b""
        self.rest = b""  # what came after the request line (an attacher's first input)

    def reply(self, data: bytes, close: bool = True) -> None:
        """Send a reply line; the connection is closed after it unless told."""
        try:
            self.sock.settimeout(REPLY_TIMEOUT)
            self.sock.sendall(data)
        except OSError:
            close = True  # the client is gone
        if close:
            self.close()

    def close(self) -> None:
        self.server.loop.remove(self.fd)
        self.sock.close()

    def park(self) -> None:
        """Stop reading: the reply comes later (wait, stop)."""
        self.server.loop.remove(self.fd)

    def take(self):
        """Hand the socket over (to attach); this object is done with it."""
        self.server.loop.remove(self.fd)
        return self.sock


class Server:
    def __init__(self, loop, path: str, handle):
        self.loop = loop
        self.path = path
        self.handle = handle
        refuse_if_served(path)
        self.sock = bind_unix(path, backlog=64)
        self.sock.setblocking(False)

    def serve(self) -> None:
        """Start accepting (requests queued in the backlog meanwhile wait)."""
        self.loop.add(self.sock.fileno(), IN, self._accept)

    def _accept(self, _events: int) -> None:
        while True:
            try:
                fd, _ = self.sock._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE and the like: try again on the next event
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                raise
            sock = _socket.socket(fileno=fd)
            sock.setblocking(False)
            conn = Connection(self, sock)
            self.loop.add(fd, IN, lambda events, conn=conn: self._read(conn))

    def _read(self, conn: Connection) -> None:
        try:
            chunk = conn.sock.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            conn.close()
            return
        conn.buffer += chunk
        line, newline, conn.rest = conn.buffer.partition(b"\n")
        if not newline:
            if not chunk:
                if conn.buffer.strip():
                    self._dispatch(conn, conn.buffer)  # a request without a newline, then EOF
                else:
                    conn.close()
            elif len(conn.buffer) > MAX_REQUEST:
                conn.reply(error_reply("invalid request: longer than 64 KiB"))
            return
        self._dispatch(conn, line)

    def _dispatch(self, conn: Connection, line: bytes) -> None:
        try:
            request = parse_request(line)
        except CapsaError as err:
            conn.reply(error_reply(str(err)))
            return
        self.loop.remove(conn.fd)
        try:
            self.handle(conn, request)
        except CapsaError as err:
            conn.reply(error_reply(str(err)))
        except Exception as err:
            conn.reply(error_reply(f"internal error: {err!r}"))
            raise  # to the loop, which logs it

    def close(self) -> None:
        self.loop.remove(self.sock.fileno())
        self.sock.close()
        try:
            posix.unlink(self.path)
        except FileNotFoundError:
            pass


def refuse_if_served(path: str) -> None:
    """A live shim already answers at path: this one must not take it over."""
    if not posix.access(path, posix.F_OK):
        return
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except OSError:
        return  # stale: nobody listens
    finally:
        probe.close()
    raise AlreadyExists(f"a shim already serves {path}")
