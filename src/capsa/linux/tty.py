"""Pseudo-terminals: open a pty pair in the current mount namespace's devpts."""

import fcntl
import posix  # not os, nor struct: the shim resizes its ptys with this (see capsa.shim)
import termios
from _struct import pack, unpack

_TIOCGPTN = 0x80045430
_TIOCSPTLCK = 0x40045431


def open_pty(ptmx: str = "/dev/ptmx") -> tuple[int, str]:
    """Open a new pty master; return (master fd, path of its slave)."""
    master = posix.open(ptmx, posix.O_RDWR | posix.O_NOCTTY | posix.O_CLOEXEC)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, pack("i", 0))  # unlockpt
        number = unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))[0]
    except BaseException:
        posix.close(master)
        raise
    return master, f"/dev/pts/{number}"


def set_controlling(fd: int) -> None:
    """Make the terminal at fd the controlling terminal of our session."""
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def get_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal at fd."""
    rows, cols, _, _ = unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, pack("HHHH", rows, cols, 0, 0))
