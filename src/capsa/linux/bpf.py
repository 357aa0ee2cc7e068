"""The bpf(2) system call: load, attach, detach and query cgroup programs.

Only what the runtime needs for cgroup v2 device control is here: loading a
BPF_PROG_TYPE_CGROUP_DEVICE program, attaching it to a cgroup directory fd,
listing the programs attached there and detaching them again. glibc has no
wrapper for bpf(2), so it goes through syscall(2) with the `union bpf_attr`
layouts from include/uapi/linux/bpf.h. Every function raises OSError.
"""

import ctypes
import os
import struct
import sys

from capsa.linux._libc import syscall

# bpf(2) has a different number on every architecture (no generic table).
_SYS_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
    "i686": 357,
    "i386": 357,
    "armv7l": 386,
}

# enum bpf_cmd
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

# enum bpf_prog_type / bpf_attach_type
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6

# attach flags
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2
BPF_F_REPLACE = 4

# struct bpf_cgroup_dev_ctx.access_type: the device type in the low 16 bits,
# the requested access in the high 16 bits.
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4

# Instruction classes, operations and sources used by the device filter.
BPF_LDX, BPF_ALU, BPF_JMP = 0x01, 0x04, 0x05
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JEQ, BPF_JNE, BPF_EXIT = 0x10, 0x50, 0x90

_OBJ_NAME_LEN = 16
_LOG_SIZE = 1 << 16


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * _OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class _AttachAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
    ]


class _QueryAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _GetIdAttr(ctypes.Structure):
    _fields_ = [
        ("prog_id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"{what}: bpf(2) number unknown on {os.uname().machine}")
    try:
        return syscall(number, ctypes.c_long(cmd), ctypes.byref(attr),
                       ctypes.c_long(ctypes.sizeof(attr)))
    except OSError as err:
        raise OSError(err.errno, f"{what}: {os.strerror(err.errno)}") from None


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """Encode one struct bpf_insn (8 bytes, host byte order)."""
    # The register nibbles are a C bitfield: their order follows endianness.
    regs = (src << 4) | dst if sys.byteorder == "little" else (dst << 4) | src
    return struct.pack("=BBhi", code, regs, off, imm)


def prog_load(prog_type: int, insns: bytes, license: str = "Apache",
              name: str = "", expected_attach_type: int = 0) -> int:
    """Load a program and return its fd; the verifier log is in the error."""
    if len(insns) % 8:
        raise ValueError("bpf instructions must be a multiple of 8 bytes")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(lic),
        prog_name=name.encode()[: _OBJ_NAME_LEN - 1],
        expected_attach_type=expected_attach_type,
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf prog load")
    except OSError as err:
        if err.errno not in (13, 22):  # only EACCES/EINVAL come with a verifier log
            raise
    # Load again with a log buffer so the error says what the verifier disliked.
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr.log_level, attr.log_size, attr.log_buf = 1, _LOG_SIZE, ctypes.addressof(log)
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf prog load")
    except OSError as err:
        text = log.value.decode(errors="replace").strip().splitlines()
        detail = f" ({text[-1]})" if text else ""
        raise OSError(err.errno, f"bpf prog load: {os.strerror(err.errno)}{detail}") from None


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0,
                replace_fd: int = 0) -> None:
    """Attach prog_fd to the cgroup open as target_fd."""
    attr = _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type,
                       attach_flags=flags, replace_bpf_fd=replace_fd)
    _bpf(BPF_PROG_ATTACH, attr, "bpf prog attach")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    """Detach prog_fd (attached with BPF_F_ALLOW_MULTI) from the cgroup target_fd."""
    attr = _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    _bpf(BPF_PROG_DETACH, attr, "bpf prog detach")


def prog_query(target_fd: int, attach_type: int) -> tuple[int, list[int]]:
    """Return (attach_flags, program ids) attached directly to the cgroup target_fd."""
    attr = _QueryAttr(target_fd=target_fd, attach_type=attach_type)
    _bpf(BPF_PROG_QUERY, attr, "bpf prog query")  # first call: just the count
    count = attr.prog_cnt
    if count == 0:
        return attr.attach_flags, []
    ids = (ctypes.c_uint32 * count)()
    attr.prog_ids, attr.prog_cnt = ctypes.addressof(ids), count
    _bpf(BPF_PROG_QUERY, attr, "bpf prog query")
    return attr.attach_flags, list(ids[: attr.prog_cnt])


def prog_get_fd_by_id(prog_id: int) -> int:
    """Open the loaded program with that id; the caller closes the fd."""
    return _bpf(BPF_PROG_GET_FD_BY_ID, _GetIdAttr(prog_id=prog_id), "bpf prog get fd by id")
