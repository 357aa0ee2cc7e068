"""Mounts: mount(2), umount2(2), pivot_root(2) and the MS_* flags."""

import os

from capsa.linux._libc import buffer, check, libc, syscall

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_POSIXACL = 0x10000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}


def _path(p) -> bytes | None:
    return None if p is None else os.fsencode(p)


def mount(source, target, fstype=None, flags: int = 0, data: str | None = None) -> None:
    """mount(2); source, fstype and data may be None."""
    check(
        libc.mount(_path(source), _path(target), _path(fstype), flags, _path(data)),
        f"mount {target}",
    )


def umount(target, flags: int = 0) -> None:
    """umount2(2)."""
    check(libc.umount2(_path(target), flags), f"umount {target}")


def pivot_root(new_root, put_old) -> None:
    """pivot_root(2): make new_root the root, moving the old root to put_old."""
    number = _SYS_PIVOT_ROOT[os.uname().machine]
    try:
        syscall(number, _path(new_root), _path(put_old))
    except OSError as err:
        raise OSError(err.errno, f"pivot_root {new_root}: {os.strerror(err.errno)}") from None

# mount_setattr(2): recursive attribute changes ("rro", "rnosuid", ... options).
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new syscall table)


def mount_setattr(path, attr_set: int, attr_clr: int, recursive: bool = True) -> None:
    """Set and clear mount attributes on path (and every mount below it)."""
    import struct

    attr = struct.pack("QQQQ", attr_set, attr_clr, 0, 0)  # struct mount_attr
    flags = AT_RECURSIVE if recursive else 0
    try:
        syscall(_SYS_MOUNT_SETATTR, AT_FDCWD, _path(path), flags, buffer(attr), len(attr))
    except OSError as err:
        raise OSError(err.errno, f"mount_setattr {path}: {os.strerror(err.errno)}") from None
