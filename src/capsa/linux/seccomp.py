"""libseccomp through ctypes: build a filter context, add rules, export it;
and seccomp(2) itself, to load an exported program without libseccomp.

The constants are libseccomp's (``seccomp.h``) and the kernel's
(``linux/seccomp.h``), with the same names. The library is loaded on the
first call that needs it, never at import: importing this module costs no
ctypes and no dlopen, and ``load_program`` never needs either.

A worked example (what ``capsa.runtime.seccomp`` does, in two processes)::

    ctx = init(act_errno(errno.EPERM))
    try:
        rule_add(ctx, SCMP_ACT_ALLOW, syscall_resolve_name("personality"),
                 [ArgCmp(0, SCMP_CMP_EQ, 0xFFFFFFFF)])
        program = export_bpf(ctx)
    finally:
        release(ctx)
    load_program(program, 0)        # enforced from here on (with no_new_privs
                                    # or CAP_SYS_ADMIN)

libseccomp returns negative errno values; every function here turns them
into ``OSError(errno)``. No policy lives here.
"""

import errno
import os
import struct
from _ctypes import addressof

LIBRARY = "libseccomp.so.2"

# Actions (SCMP_ACT_*), identical to the kernel's SECCOMP_RET_* values.
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_KILL = SCMP_ACT_KILL_THREAD
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO = 0x00050000  # | errno, see act_errno()
SCMP_ACT_NOTIFY = 0x7FC00000
SCMP_ACT_TRACE = 0x7FF00000  # | message, see act_trace()
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000


def act_errno(code: int) -> int:
    """SCMP_ACT_ERRNO(code): fail the system call with this errno."""
    return SCMP_ACT_ERRNO | (code & 0xFFFF)


def act_trace(message: int) -> int:
    """SCMP_ACT_TRACE(message): hand the system call to a ptrace tracer."""
    return SCMP_ACT_TRACE | (message & 0xFFFF)


# Comparison operators (enum scmp_compare).
SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_LE = 3
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7  # (arg & value) == value_two

# Filter attributes (enum scmp_filter_attr). CTL_WAITKILL is libseccomp >= 2.6.
SCMP_FLTATR_ACT_DEFAULT = 1
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_FLTATR_API_TSKIP = 5
SCMP_FLTATR_CTL_LOG = 6
SCMP_FLTATR_CTL_SSB = 7
SCMP_FLTATR_CTL_OPTIMIZE = 8
SCMP_FLTATR_API_SYSRAWRC = 9
SCMP_FLTATR_CTL_WAITKILL = 10

# seccomp(2) filter flags (SECCOMP_FILTER_FLAG_*).
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

# Returned by seccomp_syscall_resolve_name() for a name it does not know.
NR_SCMP_ERROR = -1

# Architecture tokens: AUDIT_ARCH_* = EM_* | 64BIT (0x80000000) | LE (0x40000000),
# except x32, which libseccomp tells apart from x86_64 by dropping the 64-bit bit.
SCMP_ARCH_NATIVE = 0
ARCHES = {
    "SCMP_ARCH_X86": 0x40000003,
    "SCMP_ARCH_X86_64": 0xC000003E,
    "SCMP_ARCH_X32": 0x4000003E,
    "SCMP_ARCH_ARM": 0x40000028,
    "SCMP_ARCH_AARCH64": 0xC00000B7,
    "SCMP_ARCH_LOONGARCH64": 0xC0000102,
    "SCMP_ARCH_M68K": 0x00000004,
    "SCMP_ARCH_MIPS": 0x00000008,
    "SCMP_ARCH_MIPS64": 0x80000008,
    "SCMP_ARCH_MIPS64N32": 0xA0000008,
    "SCMP_ARCH_MIPSEL": 0x40000008,
    "SCMP_ARCH_MIPSEL64": 0xC0000008,
    "SCMP_ARCH_MIPSEL64N32": 0xE0000008,
    "SCMP_ARCH_PPC": 0x00000014,
    "SCMP_ARCH_PPC64": 0x80000015,
    "SCMP_ARCH_PPC64LE": 0xC0000015,
    "SCMP_ARCH_S390": 0x00000016,
    "SCMP_ARCH_S390X": 0x80000016,
    "SCMP_ARCH_PARISC": 0x0000000F,
    "SCMP_ARCH_PARISC64": 0x8000000F,
    "SCMP_ARCH_RISCV64": 0xC00000F3,
    "SCMP_ARCH_SHEB": 0x0000002A,
    "SCMP_ARCH_SH": 0x4000002A,
}


class ArgCmp:
    """One argument condition (struct scmp_arg_cmp): ``args[index] <op> value``.

    A plain class, not a NamedTuple: importing typing costs the runtime ~20 ms.
    """

    __slots__ = ("index", "op", "value", "value_two")

    def __init__(self, index: int, op: int, value: int, value_two: int = 0):
        self.index, self.op, self.value, self.value_two = index, op, value, value_two

    def __eq__(self, other) -> bool:
        return isinstance(other, ArgCmp) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ArgCmp(index={self.index}, op={self.op}, value={self.value:#x}, " \
               f"value_two={self.value_two:#x})"

    def _key(self) -> tuple[int, int, int, int]:
        return (self.index, self.op, self.value, self.value_two)


class _Lib:
    """The loaded library and the ctypes types that go with it."""

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        so = ctypes.CDLL(LIBRARY, use_errno=True)
        u32, c_int, ctx = ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p

        class ScmpArgCmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        class ScmpVersion(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                        ("micro", ctypes.c_uint)]

        self.ScmpArgCmp = ScmpArgCmp
        signatures = {
            "seccomp_init": (ctx, [u32]),
            "seccomp_release": (None, [ctx]),
            "seccomp_arch_native": (u32, []),
            "seccomp_arch_resolve_name": (u32, [ctypes.c_char_p]),
            "seccomp_arch_add": (c_int, [ctx, u32]),
            "seccomp_arch_remove": (c_int, [ctx, u32]),
            "seccomp_arch_exist": (c_int, [ctx, u32]),
            "seccomp_attr_set": (c_int, [ctx, c_int, u32]),
            "seccomp_attr_get": (c_int, [ctx, c_int, ctypes.POINTER(u32)]),
            "seccomp_syscall_resolve_name": (c_int, [ctypes.c_char_p]),
            "seccomp_syscall_resolve_num_arch": (ctypes.c_void_p, [u32, c_int]),
            "seccomp_rule_add_array": (c_int, [ctx, u32, c_int, ctypes.c_uint,
                                               ctypes.POINTER(ScmpArgCmp)]),
            "seccomp_export_bpf": (c_int, [ctx, c_int]),
            "seccomp_api_get": (ctypes.c_uint, []),
            "seccomp_version": (ctypes.POINTER(ScmpVersion), []),
        }
        for name, (restype, argtypes) in signatures.items():
            try:
                func = getattr(so, name)
            except AttributeError:  # seccomp_api_get: libseccomp < 2.4
                continue
            func.restype, func.argtypes = restype, argtypes
        self.so = so


_lib: _Lib | None = None


def _seccomp() -> _Lib:
    """Load libseccomp once; raises OSError when it is not installed."""
    global _lib
    if _lib is None:
        _lib = _Lib()
    return _lib


def _check(rc: int, what: str) -> int:
    """libseccomp returns -errno on failure: raise OSError(errno)."""
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


def available() -> bool:
    """Whether libseccomp can be loaded on this host."""
    try:
        _seccomp()
    except OSError:
        return False
    return True


def version() -> tuple[int, int, int]:
    """The (major, minor, micro) version of the loaded libseccomp."""
    v = _seccomp().so.seccomp_version().contents
    return (v.major, v.minor, v.micro)


def api_level() -> int:
    """libseccomp's API level for this kernel (6: notify with TSYNC, 7: wait-killable)."""
    return _seccomp().so.seccomp_api_get()


def init(default_action: int) -> int:
    """Create a filter context whose unmatched system calls get default_action.

    Fails with EINVAL when the action is malformed or not supported by this
    kernel and libseccomp (e.g. SCMP_ACT_NOTIFY before Linux 5.0).
    """
    ctx = _seccomp().so.seccomp_init(default_action)
    if not ctx:
        raise OSError(errno.EINVAL, f"seccomp_init: action {default_action:#x} "
                                    "is not supported")
    return ctx


def release(ctx: int) -> None:
    """Free a filter context; a filter already loaded stays loaded."""
    _seccomp().so.seccomp_release(ctx)


def arch_native() -> int:
    """The token of the architecture this process runs as."""
    return _seccomp().so.seccomp_arch_native()


def arch_resolve_name(name: str) -> int:
    """libseccomp's token for an architecture name ("x86_64"), 0 if unknown."""
    return _seccomp().so.seccomp_arch_resolve_name(name.encode())


def arch_known(token: int) -> bool:
    """Whether this libseccomp can build filters for the architecture token."""
    ctx = init(SCMP_ACT_ALLOW)
    try:
        rc = _seccomp().so.seccomp_arch_exist(ctx, token)
    finally:
        release(ctx)
    return rc in (0, -errno.EEXIST)


def arch_add(ctx: int, token: int) -> None:
    """Make the filter cover another architecture (EEXIST if it already does)."""
    _check(_seccomp().so.seccomp_arch_add(ctx, token), f"seccomp_arch_add {token:#x}")


def arch_remove(ctx: int, token: int) -> None:
    """Stop the filter from covering an architecture."""
    _check(_seccomp().so.seccomp_arch_remove(ctx, token), f"seccomp_arch_remove {token:#x}")


def attr_set(ctx: int, attr: int, value: int) -> None:
    """Set a filter attribute (SCMP_FLTATR_*); EINVAL/EOPNOTSUPP when unsupported."""
    _check(_seccomp().so.seccomp_attr_set(ctx, attr, value), f"seccomp_attr_set {attr}")


def attr_get(ctx: int, attr: int) -> int:
    """Read a filter attribute (SCMP_FLTATR_*)."""
    lib = _seccomp()
    value = lib.ctypes.c_uint32()
    _check(lib.so.seccomp_attr_get(ctx, attr, lib.ctypes.byref(value)),
           f"seccomp_attr_get {attr}")
    return value.value


def syscall_resolve_name(name: str) -> int:
    """The native number of a system call; NR_SCMP_ERROR (-1) for an unknown name.

    Names that exist only on other architectures resolve to negative pseudo
    numbers (__PNR_*), which rule_add() accepts.
    """
    return _seccomp().so.seccomp_syscall_resolve_name(name.encode())


def syscall_resolve_num(number: int, arch: int = SCMP_ARCH_NATIVE) -> str | None:
    """The name of a system call number on an architecture, None if unknown."""
    lib = _seccomp()
    ptr = lib.so.seccomp_syscall_resolve_num_arch(arch, number)
    if not ptr:
        return None
    from capsa.linux._libc import libc

    try:
        return lib.ctypes.string_at(ptr).decode()
    finally:
        libc.free(lib.ctypes.c_void_p(ptr))


def rule_add(ctx: int, action: int, syscall: int,
             conditions: list[ArgCmp] | tuple[ArgCmp, ...] = ()) -> None:
    """Add a rule: syscall, when every condition holds (AND), gets action.

    libseccomp refuses two conditions on the same argument in one rule and a
    rule whose action is the filter's default (EACCES on 2.5).
    """
    lib = _seccomp()
    array = (lib.ScmpArgCmp * len(conditions))(
        *(lib.ScmpArgCmp(c.index, c.op, c.value, c.value_two) for c in conditions))
    _check(lib.so.seccomp_rule_add_array(ctx, action, syscall, len(conditions), array),
           f"seccomp_rule_add syscall {syscall}")


def export_bpf(ctx: int) -> bytes:
    """The filter as a raw array of struct sock_filter (8 bytes an instruction)."""
    fd = os.memfd_create("capsa-seccomp", os.MFD_CLOEXEC)
    try:
        _check(_seccomp().so.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# seccomp(2) has a different number on most architectures (no generic table).
_SYS_SECCOMP = {
    "x86_64": 317,
    "aarch64": 277,
    "riscv64": 277,
    "loongarch64": 277,
    "ppc64le": 358,
    "ppc64": 358,
    "s390x": 348,
    "i686": 354,
    "i386": 354,
    "armv7l": 383,
}


def _nr_seccomp() -> int:
    nr = _SYS_SECCOMP.get(os.uname().machine)
    if nr is None:
        nr = syscall_resolve_name("seccomp")
    if nr < 0:
        raise OSError(errno.ENOSYS, "seccomp(2) is not available on this architecture")
    return nr


def load_program(program: bytes, flags: int) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, program): load a raw filter,
    an array of struct sock_filter as export_bpf() gives it.

    Needs neither libseccomp nor ctypes, so a container's init can load a
    filter compiled earlier by its runtime. Returns the kernel's result: the
    listener fd (close-on-exec) with NEW_LISTENER, else 0.
    """
    from capsa.linux._libc import buffer, syscall

    code = buffer(program)
    fprog = buffer(struct.pack("@HP", len(program) // 8, addressof(code)))  # struct sock_fprog
    return syscall(_nr_seccomp(), SECCOMP_SET_MODE_FILTER, flags, fprog)


def filter_flags_supported(flags: int) -> bool:
    """Whether the kernel accepts this combination of SECCOMP_FILTER_FLAG_*.

    Probes with a NULL program: the kernel checks the flags first (EINVAL)
    and only then copies the program (EFAULT), so nothing is ever loaded.
    """
    from capsa.linux._libc import syscall

    try:
        syscall(_nr_seccomp(), SECCOMP_SET_MODE_FILTER, flags, 0)
    except OSError as err:
        return err.errno == errno.EFAULT
    return False
