"""`run`: create + start, then wait for the init, forward signals, and delete.

The runtime makes itself a child subreaper before creating, so the init
(forked by the intermediate, which exits) is reparented to it and can be
waited for. Signals sent to capsa-runtime go on to the container's init.
"""

import _signal
import os

from capsa.linux import proc
from capsa.runtime import container

FORWARDED = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGCONT",
             "SIGWINCH"]  # fmt: skip


def run(root: str, container_id: str, opts: container.Options, detach: bool, warn) -> int:
    relay = None
    if not detach:
        proc.set_child_subreaper()
    from capsa.runtime import spec

    opts.config = spec.load(opts.bundle, opts.systemd_cgroup)
    if opts.config["process"].get("terminal") and opts.console_socket is None:
        if detach:
            from capsa.errors import FailedPrecondition

            raise FailedPrecondition("cannot allocate a tty if the container is detached "
                                     "without --console-socket")  # fmt: skip
        from capsa.runtime.console import Relay

        relay = Relay()
        opts.console_fd = relay.remote_fd
    st = container.create(root, container_id, opts)
    if relay is not None:
        relay.receive()
    try:
        container.start(root, container_id, warn)
    except BaseException:
        container.delete(root, container_id, True, warn)
        raise
    if detach:
        return 0
    status = wait_and_forward(st.pid, relay)
    container.delete(root, container_id, True, warn)
    return status


def wait_and_forward(pid: int, relay) -> int:
    """Reap children until the init exits; return its exit code as a shell would."""

    def forward(signum, _frame):
        if signum == _signal.SIGWINCH and relay is not None:
            relay.resize()
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        _signal.signal(getattr(_signal, name), forward)
    if relay is not None:
        relay.copy()
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if reaped == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
                128 + os.WTERMSIG(status)
