"""The bpf(2) system call: load, attach, detach and query cgroup programs.

Only what the runtime needs for cgroup v2 device control is here: loading a
BPF_PROG_TYPE_CGROUP_DEVICE program, attaching it to a cgroup directory fd,
listing the programs attached there and detaching them again. glibc has no
wrapper for bpf(2), so it goes through syscall(2) with the `union bpf_attr`
layouts from include/uapi/linux/bpf.h. Every function raises OSError.
"""

import os
import struct
import sys
from _ctypes import addressof

from capsa.linux._libc import buffer, syscall

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


# union bpf_attr members, packed without padding: every field is naturally
# aligned already. Pointers are u64 addresses of _libc buffers.
_PROG_LOAD = struct.Struct("=IIQQIIQII16sII")  # prog_type .. expected_attach_type
_ATTACH = struct.Struct("=IIIII")  # target_fd, attach_bpf_fd, attach_type, flags, replace_fd
_QUERY = struct.Struct("=IIIIQII")  # target_fd, attach_type, query_flags, attach_flags,
                                    # prog_ids, prog_cnt, padding
_GET_FD_BY_ID = struct.Struct("=III")  # prog_id, next_id, open_flags


def _bpf(cmd: int, attr, what: str) -> int:
    """bpf(cmd, attr, sizeof attr); attr is a _libc buffer the kernel may write to."""
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"{what}: bpf(2) number unknown on {os.uname().machine}")
    try:
        return syscall(number, cmd, attr, len(attr.raw))
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
    code, lic = buffer(insns), buffer(license.encode() + b"\0")

    def attr(log=None):
        log_args = (1, len(log.raw), addressof(log)) if log is not None else (0, 0, 0)
        return buffer(_PROG_LOAD.pack(prog_type, len(insns) // 8, addressof(code), addressof(lic),
                                      *log_args, 0, 0, name.encode()[:_OBJ_NAME_LEN - 1], 0,
                                      expected_attach_type))
    try:
        return _bpf(BPF_PROG_LOAD, attr(), "bpf prog load")
    except OSError as err:
        if err.errno not in (13, 22):  # only EACCES/EINVAL come with a verifier log
            raise
    # Load again with a log buffer so the error says what the verifier disliked.
    log = buffer(_LOG_SIZE)
    try:
        return _bpf(BPF_PROG_LOAD, attr(log), "bpf prog load")
    except OSError as err:
        lines = log.raw.split(b"\0", 1)[0].decode(errors="replace").splitlines()
        # The last lines are statistics ("processed N insns ..."); the reason is above them.
        reasons = [line for line in lines if line.strip() and not line.startswith(
            ("processed ", "verification time", "stack depth"))]
        detail = f" ({reasons[-1].strip()})" if reasons else ""
        raise OSError(err.errno, f"bpf prog load: {os.strerror(err.errno)}{detail}") from None


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0,
                replace_fd: int = 0) -> None:
    """Attach prog_fd to the cgroup open as target_fd."""
    attr = buffer(_ATTACH.pack(target_fd, prog_fd, attach_type, flags, replace_fd))
    _bpf(BPF_PROG_ATTACH, attr, "bpf prog attach")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    """Detach prog_fd (attached with BPF_F_ALLOW_MULTI) from the cgroup target_fd."""
    _bpf(BPF_PROG_DETACH, buffer(_ATTACH.pack(target_fd, prog_fd, attach_type, 0, 0)),
         "bpf prog detach")


def prog_query(target_fd: int, attach_type: int) -> tuple[int, list[int]]:
    """Return (attach_flags, program ids) attached directly to the cgroup target_fd."""
    attr = buffer(_QUERY.pack(target_fd, attach_type, 0, 0, 0, 0, 0))
    _bpf(BPF_PROG_QUERY, attr, "bpf prog query")  # no id buffer: just the count
    _, _, _, flags, _, count, _ = _QUERY.unpack(attr.raw)
    if count == 0:
        return flags, []
    ids = buffer(4 * count)
    attr = buffer(_QUERY.pack(target_fd, attach_type, 0, 0, addressof(ids), count, 0))
    _bpf(BPF_PROG_QUERY, attr, "bpf prog query")
    _, _, _, flags, _, count, _ = _QUERY.unpack(attr.raw)
    return flags, list(struct.unpack(f"={count}I", ids.raw[: 4 * count]))


def prog_get_fd_by_id(prog_id: int) -> int:
    """Open the loaded program with that id; the caller closes the fd."""
    return _bpf(BPF_PROG_GET_FD_BY_ID, buffer(_GET_FD_BY_ID.pack(prog_id, 0, 0)),
                "bpf prog get fd by id")
