#!/usr/bin/env python3
"""Run a command under a lingering child subreaper, as a container shim would.

Usage: subreaper.py CMD [ARG...]; exits with CMD's status as soon as CMD
exits. A container's init outlives `capsa-runtime create`; orphaned, it
would go to pid 1, which on these machines never reaps, and a zombie keeps
its cgroup busy so `delete` could not remove it. Here a detached subreaper
becomes its parent instead, reaps it when it exits, and leaves when it has
no descendants left, as conmon or containerd's shim would.
"""

import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main() -> int:
    status_r, status_w = os.pipe()
    if os.fork() > 0:  # the caller's process: report CMD's status
        os.close(status_w)
        data = os.read(status_r, 16)
        return int(data) if data else 125
    os.close(status_r)
    os.setsid()
    set_subreaper()
    command = os.fork()
    if command == 0:
        os.close(status_w)
        os.execvp(sys.argv[1], sys.argv[1:])
    for fd in (0, 1, 2):  # keep nobody's pipe open while lingering
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == command:
            os.write(status_w, str(os.waitstatus_to_exitcode(status) % 256).encode())
            os.close(status_w)


if __name__ == "__main__":
    sys.exit(main())
