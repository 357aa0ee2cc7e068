"""`exec`: a process the container's shim runs in the running container
(the shim's "exec" op, see capsa/shim/protocol.py), read from here.

The shim is the process's parent and reaper, as for docker's containerd
shim: it holds the process's stdio and sends its output as frames on the
connection the request came on, takes stdin from it, and ends the stream
with a frame holding the exit code. Leaving early does not end the process.
"""

import json
import socket

from capsa.engine import shim
from capsa.errors import CapsaError, FailedPrecondition
from capsa.shim import protocol  # the frames' format (importing it starts no shim)


class ExecFailed(CapsaError):
    """The command could not be run; exit_code is Docker's for that: 127 when
    it is not found, else 126."""

    def __init__(self, message: str):
        super().__init__(message)
        lower = message.lower()
        self.exit_code = 127 if "not found" in lower or "no such file" in lower else 126


class ExecStream:
    """A started exec: its host pid and (unless detached) the connection
    that carries its output frames and takes its stdin."""

    def __init__(self, socket_path: str, pid: int, conn: socket.socket | None):
        self.socket_path = socket_path
        self.pid = pid
        self.conn = conn

    def resize(self, rows: int, cols: int) -> None:
        shim.call(self.socket_path, "resize", rows=rows, cols=cols, exec=self.pid)

    def collect(self) -> tuple[int, list[tuple[int, bytes]]]:
        """Read the stream to its end: the exit code, and the output as
        (stream, payload) in the order it came."""
        output, rest, code = [], b"", None
        with self.conn:
            while chunk := shim.receive(self.conn):
                frames, rest = protocol.read_frames(rest + chunk)
                for stream, payload in frames:
                    if stream == protocol.EXIT:
                        code = exit_code_of(payload)
                    else:
                        output.append((stream, payload))
        return ended_with(code), output


def start(socket_path: str, process: dict, stdin: bool, detach: bool) -> ExecStream:
    """Ask the shim at SOCKET_PATH to run PROCESS (an OCI process object)."""
    request = {"op": "exec", "process": process, "stdin": stdin, "detach": detach}
    try:
        conn, answer = shim.connect(socket_path, request, wait=None)
    except FailedPrecondition as err:  # the shim's answer: the runtime could not run it
        raise ExecFailed(str(err)) from None
    except shim.ShimGone as err:
        raise CapsaError(f"failed to exec: {err}") from None
    if detach:
        conn.close()
        conn = None
    return ExecStream(socket_path, answer["pid"], conn)


def exit_code_of(payload: bytes) -> int:
    """The exit code an EXIT frame carries."""
    return json.loads(payload)["exit_code"]


def ended_with(code: int | None) -> int:
    """The exit code a stream ended with; without one the shim is gone."""
    if code is None:
        raise CapsaError("failed to exec: the container's shim hung up before the exit code")
    return code

