"""Descriptors passed over unix sockets (SCM_RIGHTS), as socket.send_fds
and socket.recv_fds do, on the _socket and _struct built-ins: the shim
receives a container's pty master with it (and keeps to built-ins, see
capsa.shim)."""

import _socket
import _struct


def send_fds(sock, fds: list[int], data: bytes) -> None:
    """Send DATA (not empty) with the descriptors FDS attached."""
    packed = _struct.pack(f"{len(fds)}i", *fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])


def recv_fds(sock, count: int, flags: int = 0, size: int = 4096) -> tuple[bytes, list[int]]:
    """One message and the descriptors attached to it (at most COUNT)."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(count * 4), flags)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(_struct.unpack(f"{usable // 4}i", payload[:usable]))
    return data, fds
