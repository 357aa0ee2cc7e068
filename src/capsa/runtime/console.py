"""Terminals: the pty of a container with `terminal: true`.

The init opens the pty inside the container (its own devpts instance), makes
the slave its stdio and controlling terminal, and sends the master over the
`--console-socket` with SCM_RIGHTS, as runc does; whoever listens there (a
shim, podman's conmon, containerd) owns the terminal. `capsa-runtime run` in
the foreground, given no socket, listens itself and relays the pty to its
own stdio.
"""

import _socket
import os

from capsa.linux import mount as m
from capsa.linux import tty
from capsa.linux.fdpass import recv_fds, send_fds


def connect(path: str) -> int:
    """Connect to a console socket; returns the fd (inherited by the init)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"failed to connect to console socket {path}: "
                      f"{os.strerror(err.errno)}") from None  # fmt: skip
    return sock.detach()


def send_fd(sock_fd: int, fd: int, name: str) -> None:
    sock = _socket.socket(fileno=sock_fd)
    try:
        send_fds(sock, [fd], name.encode())
    finally:
        sock.close()


def recv_fd(sock) -> int:
    """Receive one fd sent with SCM_RIGHTS on sock."""
    _, fds = recv_fds(sock, 1)
    if not fds:
        raise OSError(71, "no file descriptor received on the console socket")
    return fds[0]


def setup_in_container(console_fd: int, console_device: bool = True) -> None:
    """Inside the container (the init after pivot_root, or an exec'd process):
    a pty, /dev/console for the init, stdio, controlling tty."""
    master, slave_path = tty.open_pty("/dev/ptmx")
    try:
        send_fd(console_fd, master, slave_path)
    finally:
        os.close(master)
    if console_device:
        if not os.path.exists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        m.mount(slave_path, "/dev/console", None, m.MS_BIND)
    slave = os.open(slave_path, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    tty.set_controlling(0)


class Relay:
    """`run` in the foreground with a terminal: receive the master, copy bytes."""

    def __init__(self):
        self.listener, remote = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.remote_fd = remote.detach()
        self.master = -1

    def receive(self) -> None:
        os.close(self.remote_fd)
        self.master = recv_fd(self.listener)
        self.listener.close()
        if os.isatty(0):
            rows, cols = tty.get_size(0)
            tty.set_size(self.master, rows, cols)

    def resize(self) -> None:
        if self.master >= 0 and os.isatty(0):
            rows, cols = tty.get_size(0)
            tty.set_size(self.master, rows, cols)

    def copy(self) -> None:
        """Copy stdin -> pty and pty -> stdout until the pty hangs up."""
        import select
        import termios
        import tty as pytty

        saved = termios.tcgetattr(0) if os.isatty(0) else None
        if saved is not None:
            pytty.setraw(0)
        sources = [self.master, 0]
        try:
            while True:
                try:
                    ready, _, _ = select.select(sources, [], [])
                except InterruptedError:
                    continue
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:  # EIO: every slave fd is closed
                        data = b""
                    if not data:
                        return
                    os.write(1, data)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if data:
                        os.write(self.master, data)
                    else:
                        sources.remove(0)
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            os.close(self.master)
