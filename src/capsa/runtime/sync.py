"""The parent/child protocol of `create`: one table of named messages.

The runtime (parent) and its children talk over two pipes, one JSON object
per line. Every exchange is a named pair, handled at one wait point:

 child (intermediate, then init)        parent (capsa-runtime create)
 <-- START {cgroup_paths}               cgroup set, and applied to the intermediate
                                        (with a user or cgroup namespace, see proc_inter)
 USERNS_MAP_REQUEST {pid} -->           write uid_map/gid_map  <-- USERNS_MAPPED
 INIT_PID {pid} -->                     record the init's host pid (and, without a
                                        user or cgroup namespace, move it into the cgroup)
 HOOKS -->                              prestart + createRuntime hooks  <-- HOOKS_DONE
 SECCOMP_FD {fd} -->                    copy the init's seccomp listener fd (pidfd_getfd),
                                        send it to linux.seccomp.listenerPath  <-- SECCOMP_FD_DONE
 READY -->                              save state "created", write --pid-file
 EXEC_PID {pid} -->  (exec)             the final process's host pid; the pipe then
                                        closes on its execve, or ERROR comes
 ERROR {msg, errno} -->                 raise the child's error at the wait point

After READY the init closes its ends and blocks on the exec fifo until
`start`. A child that fails sends ERROR once and exits; it never returns
into the parent's Python stack.
"""

import os

from capsa import fastjson as json
from capsa.errors import CapsaError

START = "START"
USERNS_MAP_REQUEST = "USERNS_MAP_REQUEST"
USERNS_MAPPED = "USERNS_MAPPED"
INIT_PID = "INIT_PID"
HOOKS = "HOOKS"
HOOKS_DONE = "HOOKS_DONE"
SECCOMP_FD = "SECCOMP_FD"
SECCOMP_FD_DONE = "SECCOMP_FD_DONE"
READY = "READY"
EXEC_PID = "EXEC_PID"
ERROR = "ERROR"


class ChildError(CapsaError):
    """An error raised in a child process, carried to the parent."""

    def __init__(self, msg: str, errno: int = 0):
        super().__init__(msg)
        self.errno = errno


class Channel:
    """One end of the protocol: reads JSON lines from rfd, writes to wfd."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd = rfd
        self.wfd = wfd
        self._buffer = b""

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        """(parent end, child end), all descriptors close-on-exec."""
        down_r, down_w = os.pipe2(os.O_CLOEXEC)
        up_r, up_w = os.pipe2(os.O_CLOEXEC)
        return cls(up_r, down_w), cls(down_r, up_w)

    def send(self, kind: str, **fields) -> None:
        fields["type"] = kind
        os.write(self.wfd, json.dumps(fields).encode() + b"\n")

    def send_error(self, err: BaseException, step: str = "") -> None:
        """Report err (raised in step) to the other end; never raises."""
        errno = getattr(err, "errno", 0) or 0
        msg = str(err) or type(err).__name__
        if isinstance(err, OSError) and err.strerror:
            msg = err.strerror + (f": {err.filename}" if err.filename else "")
        if step:
            msg = f"failed to {step.replace('_', ' ')}: {msg}"
        try:
            self.send(ERROR, msg=msg, errno=errno)
        except OSError:
            pass

    def recv(self) -> dict | None:
        """The next message, or None when the other end closed."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def expect(self, kind: str) -> dict:
        """Wait for a message of kind; an ERROR or EOF raises ChildError."""
        msg = self.recv()
        if msg is None:
            raise ChildError(f"child exited before sending {kind}")
        if msg["type"] == ERROR:
            raise ChildError(msg["msg"], msg.get("errno", 0))
        if msg["type"] != kind:
            raise ChildError(f"protocol error: expected {kind}, got {msg['type']}")
        return msg

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
