"""OCI device rules: normalised like the v1 kernel, compiled to a cgroup v2 BPF filter.

cgroup v2 has no devices.allow/deny files; access to device nodes is decided
by a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup (runc's
libcontainer/cgroups/devices/devicefilter.go, crun's ebpf.c). Two steps:

1. `emulate(rules)` replays the OCI list the way the v1 devices controller
   would (a type "a" rule resets everything to allow-all or deny-all, other
   rules add or remove exceptions, permissions of identical rules merge). The
   result, a default and a set of exceptions, is what both drivers apply, so
   v1 and v2 containers see the same devices. Removing part of a wildcard
   exception is refused: v1 would silently ignore it (runc does the same).
2. `compile_filter(default_allow, exceptions)` emits one block per exception:

       r2 = ctx->access_type & 0xffff   # device type
       r3 = ctx->access_type >> 16      # requested access
       r4 = ctx->major; r5 = ctx->minor
       block i: if r2 != type goto i+1; if (r3 & access) != r3 goto i+1;
                if r4 != major goto i+1; if r5 != minor goto i+1;
                return !default
       last:    return default

Nothing is allowed that the rules do not allow: the runtime adds the allow
rules for the default container devices itself.
"""

import os

from capsa.errors import CapsaError, InvalidArgument, NotFound
from capsa.runtime.cgroups import cause
from capsa.linux import bpf

WILDCARD = -1
_ACCESS_BITS = {"r": bpf.BPF_DEVCG_ACC_READ, "w": bpf.BPF_DEVCG_ACC_WRITE,
                "m": bpf.BPF_DEVCG_ACC_MKNOD}
_ALL_ACCESS = bpf.BPF_DEVCG_ACC_READ | bpf.BPF_DEVCG_ACC_WRITE | bpf.BPF_DEVCG_ACC_MKNOD
_TYPES = {"c": bpf.BPF_DEVCG_DEV_CHAR, "b": bpf.BPF_DEVCG_DEV_BLOCK}
_PROG_NAME = "capsa_devices"

# (type, major, minor) -> access bits, e.g. ("c", 1, 3) -> 0b110
Exceptions = dict[tuple[str, int, int], int]


def validate_device_rule(rule, where: str) -> None:
    """Raise InvalidArgument unless rule is an OCI linux.resources.devices entry."""
    if not isinstance(rule, dict):
        raise InvalidArgument(f"failed to parse {where}: not an object")
    if not isinstance(rule.get("allow"), bool):
        raise InvalidArgument(f"failed to parse {where}: allow must be true or false")
    kind = rule.get("type", "a")
    if kind not in ("a", "b", "c"):
        raise InvalidArgument(f"failed to parse {where}: unknown device type {kind!r}")
    for key in ("major", "minor"):
        value = rule.get(key)
        if value is not None and (type(value) is not int or not -1 <= value < 2**31):
            raise InvalidArgument(f"failed to parse {where}: {key} {value!r} out of range")
    access = rule.get("access", "rwm")
    if not isinstance(access, str) or (access and set(access) - set("rwm")):
        raise InvalidArgument(f"failed to parse {where}: unknown device access {access!r}")


def _number(value) -> int:
    return WILDCARD if value is None or value < 0 else value


def _access_bits(access: str) -> int:
    bits = 0
    for char in access:
        bits |= _ACCESS_BITS[char]
    return bits


def emulate(rules: list) -> tuple[bool, Exceptions]:
    """Replay OCI device rules; return (default_allow, exceptions to the default)."""
    default_allow, exceptions = False, {}
    for rule in rules:
        kind = rule.get("type", "a")
        if kind == "a":
            # v1: "a" in devices.allow/deny resets the whole list, whatever follows it.
            default_allow, exceptions = rule["allow"], {}
            continue
        key = (kind, _number(rule.get("major")), _number(rule.get("minor")))
        bits = _access_bits(rule.get("access", "rwm") or "rwm")
        if rule["allow"] != default_allow:
            exceptions[key] = exceptions.get(key, 0) | bits
        else:
            _remove_exception(exceptions, key, bits)
    return default_allow, exceptions


def _remove_exception(exceptions: Exceptions, key: tuple[str, int, int], bits: int) -> None:
    kind, major, minor = key
    for wider in ((kind, WILDCARD, minor), (kind, major, WILDCARD), (kind, WILDCARD, WILDCARD)):
        if wider != key and exceptions.get(wider, 0) & bits:
            raise InvalidArgument(
                f"failed to apply device rule {format_rule(kind, major, minor, bits)}: "
                f"cannot punch a hole in wildcard rule {format_rule(*wider, exceptions[wider])}")
    left = exceptions.get(key, 0) & ~bits
    if left:
        exceptions[key] = left
    else:
        exceptions.pop(key, None)


def format_rule(kind: str, major: int, minor: int, bits: int) -> str:
    """The v1 devices.allow/deny line for one rule, e.g. "c 1:3 rwm"."""
    access = "".join(char for char, bit in _ACCESS_BITS.items() if bits & bit)
    number = lambda value: "*" if value == WILDCARD else str(value)  # noqa: E731
    return f"{kind} {number(major)}:{number(minor)} {access}"


def compile_filter(default_allow: bool, exceptions: Exceptions) -> bytes:
    """Return the BPF instructions deciding device access for those rules."""
    ldx_w = bpf.BPF_LDX | bpf.BPF_MEM | bpf.BPF_W
    alu_k = lambda op: bpf.BPF_ALU | op | bpf.BPF_K  # noqa: E731
    code = [
        bpf.insn(ldx_w, dst=2, src=1, off=0),
        bpf.insn(alu_k(bpf.BPF_AND), dst=2, imm=0xFFFF),
        bpf.insn(ldx_w, dst=3, src=1, off=0),
        bpf.insn(alu_k(bpf.BPF_RSH), dst=3, imm=16),
        bpf.insn(ldx_w, dst=4, src=1, off=4),
        bpf.insn(ldx_w, dst=5, src=1, off=8),
    ]
    for key in sorted(exceptions):
        code.extend(_compile_block(key, exceptions[key], not default_allow))
    code.extend(_return(default_allow))
    return b"".join(code)


def _compile_block(key: tuple[str, int, int], bits: int, verdict: bool) -> list[bytes]:
    kind, major, minor = key
    # Tests as (jump opcode or "access", register, immediate); each one
    # skips to the next block when it does not match.
    tests = [(bpf.BPF_JNE, 2, _TYPES[kind])]
    if bits != _ALL_ACCESS:
        tests.append(("access", 3, bits))
    if major != WILDCARD:
        tests.append((bpf.BPF_JNE, 4, major))
    if minor != WILDCARD:
        tests.append((bpf.BPF_JNE, 5, minor))
    length = sum(3 if test[0] == "access" else 1 for test in tests) + 2
    block, jmp_k = [], bpf.BPF_JMP | bpf.BPF_K
    for op, reg, value in tests:
        if op == "access":
            # r1 = r3 & bits; if r1 != r3: the request asks for more than allowed.
            block.append(bpf.insn(bpf.BPF_ALU | bpf.BPF_MOV | bpf.BPF_X, dst=1, src=3))
            block.append(bpf.insn(bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K, dst=1, imm=value))
            block.append(bpf.insn(bpf.BPF_JMP | bpf.BPF_JNE | bpf.BPF_X, dst=1, src=3,
                                  off=length - len(block) - 1))
        else:
            block.append(bpf.insn(jmp_k | op, dst=reg, off=length - len(block) - 1, imm=value))
    return block + _return(verdict)


def _return(verdict: bool) -> list[bytes]:
    return [bpf.insn(bpf.BPF_ALU | bpf.BPF_MOV | bpf.BPF_K, dst=0, imm=int(verdict)),
            bpf.insn(bpf.BPF_JMP | bpf.BPF_EXIT)]


def apply_device_filter(directory: str, rules: list) -> None:
    """Replace the device programs on a cgroup v2 directory by one built from rules.

    The new program is attached (BPF_F_ALLOW_MULTI) before the old ones are
    detached, so the cgroup is never without a filter while it is updated.
    """
    default_allow, exceptions = emulate(rules)
    code = compile_filter(default_allow, exceptions)
    try:
        prog_fd = bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, code, name=_PROG_NAME)
    except OSError as err:
        raise CapsaError(f"failed to load device filter for {directory}: {cause(err)}") from err
    try:
        with _open_dir(directory) as dir_fd:
            try:
                _, old = bpf.prog_query(dir_fd, bpf.BPF_CGROUP_DEVICE)
                bpf.prog_attach(dir_fd, prog_fd, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
            except OSError as err:
                raise CapsaError(
                    f"failed to attach device filter to {directory}: {cause(err)}") from err
            _detach_ids(dir_fd, old, directory)
    finally:
        os.close(prog_fd)


def detach_device_filters(directory: str) -> None:
    """Detach every device program attached directly to directory; absent is fine."""
    try:
        opened = _open_dir(directory)
    except NotFound:
        return
    with opened as dir_fd:
        try:
            _, ids = bpf.prog_query(dir_fd, bpf.BPF_CGROUP_DEVICE)
        except OSError as err:
            raise CapsaError(
                f"failed to query device filters of {directory}: {cause(err)}") from err
        _detach_ids(dir_fd, ids, directory)


def attached_filters(directory: str) -> list[int]:
    """The ids of the device programs attached directly to directory."""
    with _open_dir(directory) as dir_fd:
        try:
            return bpf.prog_query(dir_fd, bpf.BPF_CGROUP_DEVICE)[1]
        except OSError as err:
            raise CapsaError(
                f"failed to query device filters of {directory}: {cause(err)}") from err


def _detach_ids(dir_fd: int, ids: list[int], directory: str) -> None:
    for prog_id in ids:
        try:
            fd = bpf.prog_get_fd_by_id(prog_id)
        except FileNotFoundError:
            continue  # released meanwhile
        except OSError as err:
            raise CapsaError(f"failed to open device filter {prog_id}: {cause(err)}") from err
        try:
            bpf.prog_detach(dir_fd, fd, bpf.BPF_CGROUP_DEVICE)
        except OSError as err:
            if err.errno != 2:  # ENOENT: no longer attached here
                raise CapsaError(f"failed to detach device filter {prog_id} from "
                                 f"{directory}: {cause(err)}") from err
        finally:
            os.close(fd)


class _open_dir:
    """An O_DIRECTORY fd as a context manager (bpf attaches to cgroup fds)."""

    def __init__(self, directory: str):
        try:
            self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise NotFound(f"failed to open cgroup {directory}: {cause(err)}") from err
        except OSError as err:
            raise CapsaError(f"failed to open cgroup {directory}: {cause(err)}") from err

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc) -> None:
        os.close(self.fd)
