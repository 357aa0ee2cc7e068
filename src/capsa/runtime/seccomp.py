"""The OCI `linux.seccomp` section: validate it, compile it with libseccomp, load it.

`validate()` runs in `capsa-runtime create` before anything changes and is
pure Python. `cached_program()` compiles the filter in the runtime, before
the container's processes are forked (and keeps it: the next container with
the same profile skips libseccomp, as crun does). `install()` loads that
program with seccomp(2) in the container's init as one of its last steps,
after the runtime has set no_new_privs (when the config asks for it) or while
it still holds CAP_SYS_ADMIN; no_new_privs is the config's decision, never
set here.

What `compile()` does, the way runc does it:

- the default action (and `defaultErrnoRet`, EPERM when absent) makes the
  context; `architectures` are added beside the native one;
- a syscall name libseccomp does not know is skipped, not an error: profiles
  list the syscalls of every kernel and architecture;
- a rule whose action equals the default action is skipped (libseccomp
  refuses it and it changes nothing);
- conditions on distinct arguments form one rule (AND); when two conditions
  share an argument index, every condition becomes its own rule (OR), since
  libseccomp refuses two conditions on one argument in a rule.

`flags` go to seccomp(2) as they are; with SCMP_ACT_NOTIFY the kernel hands
back a listener fd, returned to the caller, which sends it to `listenerPath`
with the container process state. The notify fd is created after the filter
is enforced, so the init still has to hand it over with the filter active:
the `write` syscall and the default action may not notify (runc refuses
both), or the init would wait on an agent that never gets the fd.

Importing this module loads neither ctypes nor libseccomp.
"""

import errno
import os

from capsa import fastjson
from capsa.errors import InvalidArgument, Unsupported
from capsa.linux import seccomp as scmp

try:
    from _sha256 import sha256  # hashlib's own, without hashlib's 5 ms of imports
except ImportError:  # Python 3.12 and later
    from _sha2 import sha256

ACTIONS = {
    "SCMP_ACT_KILL": scmp.SCMP_ACT_KILL,
    "SCMP_ACT_KILL_THREAD": scmp.SCMP_ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": scmp.SCMP_ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": scmp.SCMP_ACT_TRAP,
    "SCMP_ACT_ERRNO": scmp.SCMP_ACT_ERRNO,
    "SCMP_ACT_TRACE": scmp.SCMP_ACT_TRACE,
    "SCMP_ACT_ALLOW": scmp.SCMP_ACT_ALLOW,
    "SCMP_ACT_LOG": scmp.SCMP_ACT_LOG,
    "SCMP_ACT_NOTIFY": scmp.SCMP_ACT_NOTIFY,
}
# The upper bound of errnoRet per action that carries one; libseccomp refuses
# SCMP_ACT_ERRNO values from MAX_ERRNO (4095) up; a trace message is 16 bits.
_RET_LIMITS = {"SCMP_ACT_ERRNO": 4094, "SCMP_ACT_TRACE": 0xFFFF}

OPERATORS = {
    "SCMP_CMP_NE": scmp.SCMP_CMP_NE,
    "SCMP_CMP_LT": scmp.SCMP_CMP_LT,
    "SCMP_CMP_LE": scmp.SCMP_CMP_LE,
    "SCMP_CMP_EQ": scmp.SCMP_CMP_EQ,
    "SCMP_CMP_GE": scmp.SCMP_CMP_GE,
    "SCMP_CMP_GT": scmp.SCMP_CMP_GT,
    "SCMP_CMP_MASKED_EQ": scmp.SCMP_CMP_MASKED_EQ,
}

ARCHITECTURES = scmp.ARCHES

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": scmp.SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": scmp.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": scmp.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": scmp.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}
MAX_ARGS = 6  # a Linux system call has at most six arguments
_UINT64_MAX = (1 << 64) - 1
_NOT_NOTIFIABLE = ("write",)  # the init hands the fd over the sync pipe with write(2)
_OPTIMIZE_ABOVE = 32  # rules; libseccomp <= 2.5.4 mis-optimizes an empty filter

SECCOMP_FD_NAME = "seccompFd"  # the name of the fd in the ContainerProcessState


# ---- validation (pure Python, no libseccomp) ---------------------------------------


def _fail(msg: str) -> None:
    raise InvalidArgument(f"invalid linux.seccomp: {msg}")


def _is_uint(value, limit: int = _UINT64_MAX) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _validate_action(name, errno_ret, where: str, ret_key: str) -> None:
    if name not in ACTIONS:
        _fail(f"unknown action {name!r} in {where}")
    if errno_ret is None:
        return
    if name not in _RET_LIMITS:
        _fail(f"{ret_key} is not allowed with {name} in {where}")
    if not _is_uint(errno_ret, _RET_LIMITS[name]):
        _fail(f"{ret_key} {errno_ret!r} in {where} is not in 0..{_RET_LIMITS[name]}")


def _validate_arg(arg, where: str) -> None:
    if not isinstance(arg, dict):
        _fail(f"{where} must be an object")
    index = arg.get("index")
    if not _is_uint(index, MAX_ARGS - 1):
        _fail(f"bad index {index!r} in {where}: must be 0..{MAX_ARGS - 1}")
    if arg.get("op") not in OPERATORS:
        _fail(f"unknown operator {arg.get('op')!r} in {where}")
    if not _is_uint(arg.get("value")):
        _fail(f"value {arg.get('value')!r} in {where} is not a uint64")
    if not _is_uint(arg.get("valueTwo", 0)):
        _fail(f"valueTwo {arg.get('valueTwo')!r} in {where} is not a uint64")


def _validate_syscall(rule, where: str) -> None:
    if not isinstance(rule, dict):
        _fail(f"{where} must be an object")
    names = rule.get("names")
    if not isinstance(names, list) or not names:
        _fail(f"missing names in {where}")
    for name in names:
        if not isinstance(name, str) or not name:
            _fail(f"syscall name {name!r} in {where} is not a non-empty string")
    action = rule.get("action")
    _validate_action(action, rule.get("errnoRet"), where, "errnoRet")
    if action == "SCMP_ACT_NOTIFY":
        for name in _NOT_NOTIFIABLE:
            if name in names:
                _fail(f"SCMP_ACT_NOTIFY cannot be used for the {name} syscall ({where})")
    args = rule.get("args") or []
    if not isinstance(args, list):
        _fail(f"args of {where} must be a list")
    if len(args) > MAX_ARGS:
        _fail(f"{where} has {len(args)} args, at most {MAX_ARGS} are allowed")
    for i, arg in enumerate(args):
        _validate_arg(arg, f"{where}.args[{i}]")


def validate(seccomp: dict) -> None:
    """Refuse a malformed `linux.seccomp` with InvalidArgument, changing nothing.

    Unknown syscall names are accepted (load() skips them); unknown actions,
    operators, architectures and flags, argument lists longer than six, bad
    indices, missing names and SCMP_ACT_NOTIFY without a listenerPath are not.
    """
    if not isinstance(seccomp, dict):
        _fail("must be an object")
    default = seccomp.get("defaultAction")
    if default is None:
        _fail("missing defaultAction")
    if default == "SCMP_ACT_NOTIFY":
        _fail("SCMP_ACT_NOTIFY cannot be used as default action")
    _validate_action(default, seccomp.get("defaultErrnoRet"), "defaultAction",
                     "defaultErrnoRet")  # fmt: skip
    for key, known in (("architectures", ARCHITECTURES), ("flags", FLAGS)):
        values = seccomp.get(key) or []
        if not isinstance(values, list):
            _fail(f"{key} must be a list")
        for value in values:
            if value not in known:
                _fail(f"unknown {key[:-1]} {value!r}")
    for key in ("listenerPath", "listenerMetadata"):
        if not isinstance(seccomp.get(key, ""), str):
            _fail(f"{key} must be a string")
    syscalls = seccomp.get("syscalls") or []
    if not isinstance(syscalls, list):
        _fail("syscalls must be a list")
    for i, rule in enumerate(syscalls):
        _validate_syscall(rule, f"syscalls[{i}]")
    if uses_notify(seccomp) and not seccomp.get("listenerPath"):
        _fail("SCMP_ACT_NOTIFY needs a listenerPath")


def uses_notify(seccomp: dict) -> bool:
    """Whether load() will return a listener fd (some rule is SCMP_ACT_NOTIFY)."""
    return seccomp.get("defaultAction") == "SCMP_ACT_NOTIFY" or any(
        rule.get("action") == "SCMP_ACT_NOTIFY" for rule in seccomp.get("syscalls") or [])


def listener_path(seccomp: dict) -> str | None:
    """The unix socket the notify fd is sent to, with the container process state."""
    return seccomp.get("listenerPath") or None


def listener_metadata(seccomp: dict) -> str:
    """The opaque string passed to the agent as the state's `metadata`."""
    return seccomp.get("listenerMetadata") or ""


# ---- building and loading (libseccomp, loaded here on first use) -------------------


def _action_value(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return scmp.act_errno(errno.EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return scmp.act_trace(errno.EPERM if errno_ret is None else errno_ret)
    return ACTIONS[name]


def _condition_sets(args: list[dict]) -> list[list[scmp.ArgCmp]]:
    """The rules one syscall entry becomes: one AND-ed rule, or one per condition."""
    conditions = [scmp.ArgCmp(a["index"], OPERATORS[a["op"]], a["value"], a.get("valueTwo", 0))
                  for a in args]  # fmt: skip
    indices = [c.index for c in conditions]
    if len(set(indices)) != len(indices):
        return [[c] for c in conditions]
    return [conditions]


def _new_filter(seccomp: dict) -> tuple[int, int]:
    """Create the context with its default action; (ctx, default action value)."""
    name = seccomp["defaultAction"]
    default = _action_value(name, seccomp.get("defaultErrnoRet"))
    try:
        return scmp.init(default), default
    except OSError as err:
        if err.errno != errno.EINVAL:  # dlopen failed: no libseccomp.so.2
            raise Unsupported(f"failed to load seccomp filter: {err}") from err
        raise Unsupported(f"failed to load seccomp filter: action {name} is not "
                          "supported by this kernel or libseccomp") from err


def _add_architectures(ctx: int, names: list[str]) -> None:
    for name in names:
        try:
            scmp.arch_add(ctx, ARCHITECTURES[name])
        except FileExistsError:
            pass  # the native architecture is in every new context
        except OSError as err:
            version = ".".join(map(str, scmp.version()))
            raise Unsupported(f"failed to load seccomp filter: architecture {name} is "
                              f"not supported by libseccomp {version}") from err


def _add_rules(ctx: int, syscalls: list[dict], default: int) -> None:
    for rule in syscalls:
        action = _action_value(rule["action"], rule.get("errnoRet"))
        if action == default:
            continue
        condition_sets = _condition_sets(rule.get("args") or [])
        for name in rule["names"]:
            number = scmp.syscall_resolve_name(name)
            if number == scmp.NR_SCMP_ERROR:
                continue  # a syscall of another kernel or architecture: skip, as runc
            for conditions in condition_sets:
                try:
                    scmp.rule_add(ctx, action, number, conditions)
                except OSError as err:
                    raise OSError(err.errno, f"failed to add seccomp rule for syscall "
                                             f"{name}: {os.strerror(err.errno)}") from err


def kernel_flags(seccomp: dict) -> int:
    """The seccomp(2) flags for this filter: those it lists, and a listener
    when a rule notifies (which TSYNC then needs TSYNC_ESRCH beside)."""
    notify = uses_notify(seccomp)
    flags = scmp.SECCOMP_FILTER_FLAG_NEW_LISTENER if notify else 0
    for name in seccomp.get("flags") or []:
        if name == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" and not notify:
            continue  # the kernel only takes it with a listener, as libseccomp 2.6
        flags |= FLAGS[name]
    if notify and flags & scmp.SECCOMP_FILTER_FLAG_TSYNC:
        flags |= scmp.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
    return flags


def compile(seccomp: dict) -> bytes:  # noqa: A001 - what it does, as re.compile
    """The BPF program of a validated `linux.seccomp`, built by libseccomp.

    Raises Unsupported when this host's libseccomp lacks an action or an
    architecture.
    """
    syscalls = seccomp.get("syscalls") or []
    ctx, default = _new_filter(seccomp)
    try:
        _add_architectures(ctx, seccomp.get("architectures") or [])
        if len(syscalls) > _OPTIMIZE_ABOVE:
            try:  # binary tree instead of a linear list of syscall checks
                scmp.attr_set(ctx, scmp.SCMP_FLTATR_CTL_OPTIMIZE, 2)
            except OSError:
                pass
        _add_rules(ctx, syscalls, default)
        return scmp.export_bpf(ctx)
    finally:
        scmp.release(ctx)


def cached_program(seccomp: dict, root: str) -> bytes:
    """compile(SECCOMP), kept in the runtime's ROOT under the digest of the
    section: a container with the same profile as an earlier one skips
    libseccomp (about 20 ms for Docker's default profile), as crun does.

    The name has a ':', which no container id has, and it is a file, where
    containers are directories. A file that is not a whole program is
    compiled again. ROOT is the runtime's private directory: whoever can
    write there can already change any container.
    """
    text = fastjson.dumps([os.uname().machine, seccomp]).encode()
    path = os.path.join(root, f"seccomp:{sha256(text).hexdigest()}.bpf")
    try:
        with open(path, "rb") as f:
            program = f.read()
        if program and len(program) % 8 == 0:
            return program
    except FileNotFoundError:
        pass
    program = compile(seccomp)
    from capsa.atomicfile import write_atomic

    write_atomic(path, program, sync=False)
    return program


def install(program: bytes, seccomp: dict) -> int | None:
    """Load PROGRAM (compile's) into this process with the flags SECCOMP asks for.

    No libseccomp here: the init and exec'd processes call this after
    pivot_root. Returns the user-notification listener fd (close-on-exec)
    when a rule uses SCMP_ACT_NOTIFY, else None. The caller must have set
    no_new_privs or hold CAP_SYS_ADMIN. Raises Unsupported when the kernel
    lacks a flag, OSError when it refuses.
    """
    flags = kernel_flags(seccomp)
    try:
        listener = scmp.load_program(program, flags)
    except OSError as err:
        if err.errno == errno.EINVAL:
            _raise_unsupported_flag(seccomp)
        why = os.strerror(err.errno)
        if err.errno == errno.EACCES:  # the kernel's rule for unprivileged filters
            why += " (needs no_new_privs or CAP_SYS_ADMIN)"
        raise OSError(err.errno, f"failed to load seccomp filter: {why}") from None
    return listener if uses_notify(seccomp) else None


def _raise_unsupported_flag(seccomp: dict) -> None:
    for name in seccomp.get("flags") or []:
        if not scmp.filter_flags_supported(FLAGS[name]):
            raise Unsupported(f"failed to load seccomp filter: {name} is not supported "
                              "by this kernel")  # fmt: skip


def load(seccomp: dict) -> int | None:
    """Build the filter of a validated `linux.seccomp` and load it into this
    process: install(compile(seccomp), seccomp)."""
    return install(compile(seccomp), seccomp)


# ---- the features document ---------------------------------------------------------


def _supported_actions() -> list[str]:
    supported = []
    for name in ACTIONS:
        try:
            scmp.release(scmp.init(_action_value(name, None)))
        except OSError:
            continue
        supported.append(name)
    return supported


def _supported_flags(actions: list[str]) -> list[str]:
    """The flags this kernel takes: install() hands them to seccomp(2) itself."""
    supported = []
    for name, flag in FLAGS.items():
        if name == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV":
            if "SCMP_ACT_NOTIFY" not in actions:
                continue  # only ever set with a listener
            flag |= scmp.SECCOMP_FILTER_FLAG_NEW_LISTENER
        if scmp.filter_flags_supported(flag):
            supported.append(name)
    return supported


def features() -> dict:
    """The "seccomp" section of `capsa-runtime features`, probed on this host."""
    if not scmp.available():
        return {"enabled": False}
    actions = _supported_actions()
    return {
        "enabled": True,
        "actions": actions,
        "operators": list(OPERATORS),
        "archs": [name for name, token in ARCHITECTURES.items() if scmp.arch_known(token)],
        "knownFlags": list(FLAGS),
        "supportedFlags": _supported_flags(actions),
    }
