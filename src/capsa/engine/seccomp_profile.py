"""Docker's default seccomp profile, and Docker's profile format turned into
an OCI `linux.seccomp` for one container.

The default denies every system call with EPERM except an allow-list (moby's
profiles/seccomp/default.json as of Docker 28: kernel 6.13 / libseccomp 2.6
names included). Some entries hold only for some architectures, kernels or
capabilities: the profile follows the container's final capability set, so
`--cap-add SYS_ADMIN` also allows mount(2), unshare(2) and clone(2) with
namespace flags, and `--cap-add SYS_PTRACE` allows kcmp(2) and friends.

Names this host's libseccomp does not know (a newer kernel's calls, another
architecture's) stay in the profile; the runtime skips them, as runc does.

    >>> profile = default_profile({"CAP_CHOWN", "CAP_KILL"})
    >>> profile["defaultAction"], profile["defaultErrnoRet"]
    ('SCMP_ACT_ERRNO', 1)
"""

import os
import re

from capsa.errors import InvalidArgument
from capsa.record import record

ALLOW, ERRNO = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"
EPERM, ENOSYS = 1, 38
AF_VSOCK = 40
# Every CLONE_NEW* flag: clone(2) is allowed only without them (CLONE_NEWNS,
# NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x7E020000).
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000


@record(frozen=True)
class Rule:
    """One entry of a Docker-format profile. caps/arches/min_kernel are the
    entry's "includes" (all must hold), not_caps/not_arches its "excludes"
    (any one drops it); args are (index, value, op) conditions."""

    names: tuple[str, ...]
    action: str = ALLOW
    args: tuple[tuple[int, int, str], ...] = ()
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: str = ""
    not_caps: tuple[str, ...] = ()
    not_arches: tuple[str, ...] = ()
    errno_ret: int | None = None

    def to_docker(self) -> dict:
        entry = {"names": list(self.names), "action": self.action}
        if self.errno_ret is not None:
            entry["errnoRet"] = self.errno_ret
        if self.args:
            entry["args"] = [{"index": i, "value": v, "op": op} for i, v, op in self.args]
        includes = {"caps": list(self.caps), "arches": list(self.arches), "minKernel": self.min_kernel}
        excludes = {"caps": list(self.not_caps), "arches": list(self.not_arches)}
        for key, value in (("includes", includes), ("excludes", excludes)):
            if any(value.values()):
                entry[key] = {k: v for k, v in value.items() if v}
        return entry


# Allowed to every container, whatever its capabilities.
ALLOWED = (
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set",
    "io_setup", "io_submit", "io_uring_enter", "io_uring_register", "io_uring_setup", "ipc",
    "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat",
    "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
    "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
    "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget",
    "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at",
    "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
)  # fmt: skip

# Allowed only with CAP_SYS_ADMIN (the mount API, namespaces, BPF, ...).
SYS_ADMIN_CALLS = (
    "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
    "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
    "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
    "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
)  # fmt: skip

# personality(2) values a container may ask for: PER_LINUX, UNAME26,
# PER_LINUX32, UNAME26|PER_LINUX32, and 0xffffffff (query the current one).
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

DEFAULT_RULES = (
    Rule(ALLOWED),
    Rule(("process_vm_readv", "process_vm_writev", "ptrace"), min_kernel="4.8"),  # CVE-2019-2054 before 4.8
    Rule(("socket",), args=((0, AF_VSOCK, "SCMP_CMP_NE"),)),  # every family but vsock
    *(Rule(("personality",), args=((0, value, "SCMP_CMP_EQ"),)) for value in PERSONALITIES),
    Rule(("sync_file_range2", "swapcontext"), arches=("ppc64le",)),
    Rule(("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
          "set_tls"), arches=("arm", "arm64")),
    Rule(("arch_prctl",), arches=("amd64", "x32")),
    Rule(("modify_ldt",), arches=("amd64", "x32", "x86")),
    Rule(("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"), arches=("s390", "s390x")),
    Rule(("riscv_flush_icache", "riscv_hwprobe"), arches=("riscv64",)),
    Rule(("open_by_handle_at",), caps=("CAP_DAC_READ_SEARCH",)),
    Rule(SYS_ADMIN_CALLS, caps=("CAP_SYS_ADMIN",)),
    # Without CAP_SYS_ADMIN: clone(2) without namespace flags (s390 swaps the first two arguments) ...
    Rule(("clone",), args=((0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
         not_caps=("CAP_SYS_ADMIN",), not_arches=("s390", "s390x")),
    Rule(("clone",), args=((1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),), arches=("s390", "s390x"),
         not_caps=("CAP_SYS_ADMIN",)),
    # ... and clone3(2), whose flags live in memory seccomp cannot read, fails with
    # ENOSYS so that libc falls back to clone(2).
    Rule(("clone3",), action=ERRNO, errno_ret=ENOSYS, not_caps=("CAP_SYS_ADMIN",)),
    Rule(("reboot",), caps=("CAP_SYS_BOOT",)),
    Rule(("chroot",), caps=("CAP_SYS_CHROOT",)),
    Rule(("delete_module", "init_module", "finit_module"), caps=("CAP_SYS_MODULE",)),
    Rule(("acct",), caps=("CAP_SYS_PACCT",)),
    Rule(("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"),
         caps=("CAP_SYS_PTRACE",)),
    Rule(("iopl", "ioperm"), caps=("CAP_SYS_RAWIO",)),
    Rule(("settimeofday", "stime", "clock_settime", "clock_settime64"), caps=("CAP_SYS_TIME",)),
    Rule(("vhangup",), caps=("CAP_SYS_TTY_CONFIG",)),
    Rule(("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"), caps=("CAP_SYS_NICE",)),
    Rule(("syslog",), caps=("CAP_SYSLOG",)),
    Rule(("bpf",), caps=("CAP_BPF",)),
    Rule(("perf_event_open",), caps=("CAP_PERFMON",)),
)

# The architectures a filter covers on each native one: the compat ABIs too,
# or a 32-bit binary would bypass the filter.
ARCH_MAP = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_ARM",),
    "SCMP_ARCH_MIPS64": ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "SCMP_ARCH_MIPS64N32": ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "SCMP_ARCH_MIPSEL64": ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "SCMP_ARCH_MIPSEL64N32": ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390",),
    "SCMP_ARCH_RISCV64": (),
}

# Kernel machine names -> the names profiles use in "arches" (libseccomp's).
_NATIVE = {"x86_64": "amd64", "i386": "x86", "i686": "x86", "aarch64": "arm64", "armv6l": "arm",
           "armv7l": "arm", "armv8l": "arm", "ppc64le": "ppc64le", "ppc64": "ppc64", "ppc": "ppc",
           "s390x": "s390x", "s390": "s390", "riscv64": "riscv64", "mips64": "mips64",
           "mips": "mips", "loongarch64": "loong64"}  # fmt: skip
_SCMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
              "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
              "ppc64": "SCMP_ARCH_PPC64", "ppc": "SCMP_ARCH_PPC", "s390x": "SCMP_ARCH_S390X",
              "s390": "SCMP_ARCH_S390", "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64",
              "mips": "SCMP_ARCH_MIPS", "loong64": "SCMP_ARCH_LOONGARCH64"}  # fmt: skip


def docker_profile() -> dict:
    """The default profile in Docker's own JSON format (what default.json holds)."""
    return {"defaultAction": ERRNO, "defaultErrnoRet": EPERM,
            "archMap": [{"architecture": arch, "subArchitectures": list(subs)} for arch, subs in ARCH_MAP.items()],
            "syscalls": [rule.to_docker() for rule in DEFAULT_RULES]}  # fmt: skip


def default_profile(capabilities, arch: str | None = None, kernel: tuple[int, int] | None = None) -> dict:
    """Docker's default as `linux.seccomp` for a container whose bounding set
    is CAPABILITIES, on ARCH (a kernel machine name; this host's by default)."""
    return convert(docker_profile(), capabilities, arch, kernel)


def load_profile(text, capabilities, arch: str | None = None, kernel: tuple[int, int] | None = None) -> dict | None:
    """A Docker-format profile (`--security-opt seccomp=FILE`) as `linux.seccomp`;
    None when it has neither a default action nor rules (seccomp off, as Docker)."""
    from capsa import fastjson as json

    try:
        profile = json.loads(text)
    except ValueError as err:
        raise InvalidArgument(f"decoding seccomp profile failed: {err}") from None
    return convert(profile, capabilities, arch, kernel)


def convert(profile: dict, capabilities, arch: str | None = None, kernel: tuple[int, int] | None = None) -> dict | None:
    """moby's setupSeccomp: pick the architectures, keep the rules whose
    includes hold and whose excludes do not, for this container."""
    _check_profile(profile)
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument("'architectures' and 'archMap' were specified in the seccomp profile, "
                              "use either 'architectures' or 'archMap'")  # fmt: skip
    native = _native(arch)
    kernel = kernel or host_kernel()
    out = {"defaultAction": profile.get("defaultAction") or ""}
    architectures = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == _SCMP_ARCH.get(native):
            architectures += [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    if architectures:
        out["architectures"] = architectures
    for key in ("defaultErrnoRet", "flags", "listenerPath", "listenerMetadata"):
        if profile.get(key) is not None:
            out[key] = profile[key]
    out["syscalls"] = [_oci_rule(entry) for entry in profile.get("syscalls") or []
                       if _applies(entry, set(capabilities), native, kernel)]  # fmt: skip
    return out


def _applies(entry: dict, capabilities: set, native: str, kernel: tuple[int, int]) -> bool:
    includes, excludes = entry.get("includes") or {}, entry.get("excludes") or {}
    if native in (excludes.get("arches") or []):
        return False
    if any(cap in capabilities for cap in excludes.get("caps") or []):
        return False
    if excludes.get("minKernel") and kernel >= _kernel_version(excludes["minKernel"]):
        return False
    if includes.get("arches") and native not in includes["arches"]:
        return False
    if not all(cap in capabilities for cap in includes.get("caps") or []):
        return False
    return not includes.get("minKernel") or kernel >= _kernel_version(includes["minKernel"])


def _oci_rule(entry: dict) -> dict:
    if entry.get("name") and entry.get("names"):
        raise InvalidArgument("'name' and 'names' were specified in the seccomp profile, use either 'name' or 'names'")
    rule = {"names": list(entry.get("names") or [entry.get("name")]), "action": entry.get("action")}
    if entry.get("errnoRet") is not None:
        rule["errnoRet"] = entry["errnoRet"]
    if entry.get("args"):
        rule["args"] = [{k: arg[k] for k in ("index", "value", "valueTwo", "op") if k in arg}
                        for arg in entry["args"]]  # fmt: skip
    return rule


def _check_profile(profile) -> None:
    """The shapes convert() relies on; the values are the runtime's to check."""
    def fail(why: str):
        raise InvalidArgument(f"decoding seccomp profile failed: {why}")

    if not isinstance(profile, dict):
        fail("not a JSON object")
    for key in ("architectures", "archMap", "syscalls", "flags"):
        if not isinstance(profile.get(key) or [], list):
            fail(f"{key} must be a list")
    for entry in profile.get("archMap") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("subArchitectures") or [], list):
            fail("archMap entries must be objects with a subArchitectures list")
    for entry in profile.get("syscalls") or []:
        if not isinstance(entry, dict):
            fail("syscalls entries must be objects")
        names = entry.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            fail("syscall names must be a list of strings")
        if not names and not isinstance(entry.get("name"), str):
            fail("a syscall entry has no names")
        for key in ("includes", "excludes"):
            condition = entry.get(key) or {}
            if not isinstance(condition, dict) or not all(
                    isinstance(condition.get(k) or [], list) for k in ("arches", "caps")):
                fail(f"{key} must be an object with arches and caps lists")
        if not all(isinstance(arg, dict) for arg in entry.get("args") or []):
            fail("syscall args must be objects")


def _native(arch: str | None) -> str:
    machine = arch or os.uname().machine  # platform.machine(), without importing platform
    return _NATIVE.get(machine, machine)


def host_kernel() -> tuple[int, int]:
    return _kernel_version(os.uname().release)


def _kernel_version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", str(text))
    if not match:
        raise InvalidArgument(f'invalid kernel version: {text}, expected "<kernel>.<major>"')
    return int(match.group(1)), int(match.group(2))
