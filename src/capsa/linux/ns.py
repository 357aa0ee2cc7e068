"""Namespaces: unshare(2), setns(2) and the CLONE_* flags naming them."""

import os

from capsa.linux._libc import check, libc

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The runtime-spec's namespace type -> (clone flag, name under /proc/<pid>/ns).
NAMESPACES = {
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "mount": (CLONE_NEWNS, "mnt"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "user": (CLONE_NEWUSER, "user"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces of the given kinds."""
    check(libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace open at fd (nstype 0 accepts any kind)."""
    check(libc.setns(fd, nstype), "setns")


def join(path: str, nstype: int = 0) -> None:
    """Join the namespace at path, e.g. /proc/1234/ns/net."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, nstype)
    finally:
        os.close(fd)


def supported(kind: str) -> bool:
    """Whether this kernel has the namespace kind (as /proc/self/ns shows)."""
    return os.path.exists("/proc/self/ns/" + NAMESPACES[kind][1])
