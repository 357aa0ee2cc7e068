"""Capabilities: capget/capset (v3), the bounding and ambient sets."""

import struct

from capsa.linux._libc import buffer, check, libc
from capsa.linux.proc import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    prctl,
)

# Numbers from linux/capability.h; the spec names them with the CAP_ prefix.
NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip
NUMBERS = {name: number for number, name in enumerate(NAMES)}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def to_mask(names) -> int:
    """A bit mask of capability names; KeyError names an unknown one."""
    mask = 0
    for name in names:
        mask |= 1 << NUMBERS[name]
    return mask


def get(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of pid (0: ourselves)."""
    data = buffer(24)  # two struct __user_cap_data_struct: 32-bit halves
    check(libc.capget(buffer(struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, pid)), data),
          "capget")  # fmt: skip
    e0, p0, i0, e1, p1, i1 = struct.unpack("6I", data.raw)
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def set(effective: int, permitted: int, inheritable: int) -> None:  # noqa: A001
    """Set our effective, permitted and inheritable sets."""
    low, high = 0xFFFFFFFF, 32
    data = struct.pack("6I", effective & low, permitted & low, inheritable & low,
                       effective >> high, permitted >> high, inheritable >> high)  # fmt: skip
    check(libc.capset(buffer(struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)), buffer(data)),
          "capset")  # fmt: skip


def drop_bounding(keep: int) -> None:
    """Drop from the bounding set every capability not in keep."""
    for number in range(last_cap() + 1):
        if not keep & (1 << number) and prctl(PR_CAPBSET_READ, number) == 1:
            prctl(PR_CAPBSET_DROP, number)


def set_ambient(mask: int) -> None:
    """Make the ambient set exactly mask (each must be permitted and inheritable)."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for number in range(last_cap() + 1):
        if mask & (1 << number):
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
