"""The engine's side of capsa-shim: start one for a container, and talk to
it over its socket (one JSON request line per connection, JSON replies;
`attach` turns the connection into the container's byte stream)."""

import json
import os
import shutil
import socket
import subprocess
import sys

from capsa.errors import CapsaError, FailedPrecondition

# A request that must answer at once (status, kill) waits at most this long.
TIMEOUT = 10


def program() -> list[str]:
    path = shutil.which("capsa-shim")
    return [path] if path else [sys.executable, "-m", "capsa.shim.main"]


def start(args: list[str]) -> dict:
    """Run capsa-shim ARGS; it answers once the container started (or not)
    and leaves a shim of its own running: {"pid": ..., "shim_pid": ...}."""
    result = subprocess.run([*program(), *args], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, check=False)  # fmt: skip
    line = result.stdout.strip().splitlines()[-1:] or [""]
    try:
        answer = json.loads(line[0])
    except ValueError:
        detail = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}")
        raise CapsaError(f"failed to start the container's shim: {detail.splitlines()[-1]}") from None
    if "error" in answer:
        raise CapsaError(answer["error"])
    return answer


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
        raise ShimGone(path) from None
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
                raise ShimGone("the shim closed the connection")
            break
        end = peeked.find(b"\n")
        data += conn.recv(end + 1 if end >= 0 else len(peeked))
        if end >= 0:
            break
    return json.loads(data)


class ShimGone(CapsaError):
    """No shim answers for the container (it was killed, or never ran)."""


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
