"""Named network namespaces: a namespace kept alive by a bind mount of its
/proc/<pid>/ns/net onto a file, as `ip netns add` does (there in /run/netns).

A namespace held this way outlives every process in it, so the engine can
give it to CNI before the container exists and to the container after.
"""

import fcntl
import os
import socket
import struct

from capsa.linux import mount as mounts
from capsa.linux import ns

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def create(path: str) -> None:
    """A new network namespace bound at PATH (which must not exist), with
    its loopback interface up, as every container expects."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    # A forked child, so the engine's own process never leaves the host's namespace.
    child = os.fork()
    if child == 0:
        try:
            ns.unshare(ns.CLONE_NEWNET)
            interface_up("lo")
            mounts.mount("/proc/self/ns/net", path, None, mounts.MS_BIND)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - a forked child reports by its exit status only
            os._exit(1)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        os.unlink(path)
        raise OSError(f"failed to create the network namespace {path}")


def interface_up(name: str) -> None:
    """`ip link set NAME up` in the calling process's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | IFF_UP))


def exists(path: str) -> bool:
    return os.path.ismount(path)


def remove(path: str) -> None:
    """Unbind and delete PATH; the namespace goes with its last user."""
    if os.path.ismount(path):
        mounts.umount(path, mounts.MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
