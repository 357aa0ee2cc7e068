"""Process attributes: prctl(2), hostname, domainname, personality."""

import posix  # not os: the shim imports this module too (see capsa.shim)

from capsa.linux._libc import check, libc

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments."""
    return check(libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def set_child_subreaper() -> None:
    """Orphaned descendants are reparented to us instead of to pid 1."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(signum: int) -> None:
    """Receive signum when the parent thread dies."""
    prctl(PR_SET_PDEATHSIG, signum)


def set_no_new_privs() -> None:
    """execve can never again grant privileges (setuid bits, file caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_keepcaps(on: bool) -> None:
    """Keep the permitted capabilities across a change from uid 0."""
    prctl(PR_SET_KEEPCAPS, int(on))


def set_dumpable(on: bool) -> None:
    """Whether /proc/self is owned by our uid and ptrace-able (see CVE-2016-9962)."""
    prctl(PR_SET_DUMPABLE, int(on))


def sethostname(name: str) -> None:
    data = name.encode()
    check(libc.sethostname(data, len(data)), "sethostname")


def setdomainname(name: str) -> None:
    data = name.encode()
    check(libc.setdomainname(data, len(data)), "setdomainname")


KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 280, "s390x": 280, "riscv64": 219}


def join_session_keyring(name: str) -> int:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new session keyring called name."""
    from capsa.linux._libc import syscall

    number = _SYS_KEYCTL[posix.uname().machine]
    return syscall(number, KEYCTL_JOIN_SESSION_KEYRING, name.encode(errors="surrogateescape"))


_SYS_PIDFD_GETFD = 438  # the same on every architecture (new syscall table)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A copy of another process's descriptor (it needs ptrace rights over it)."""
    from capsa.linux._libc import syscall

    return syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0)


def personality(persona: int) -> int:
    """personality(2): set the execution domain, e.g. PER_LINUX32."""
    return check(libc.personality(persona), "personality")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if gone.

    A pid plus its start time names a process uniquely: pids are reused,
    start times of live processes with the same pid are not.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # a zombie has exited; only its exit status remains
    return int(fields[19])


def is_alive(pid: int, started: int) -> bool:
    """Whether pid still names the process that started at `started`."""
    return pid > 0 and start_time(pid) == started


def close_fds_from(lowfd: int, keep=()) -> None:
    """Close every descriptor >= lowfd except those in keep."""
    fd = lowfd
    for k in sorted(k for k in keep if k >= lowfd):
        if k > fd:
            posix.closerange(fd, k)
        fd = k + 1
    posix.closerange(fd, 1 << 20)
