"""linux.seccomp: validation, and real filters loaded into forked children.

Each filter goes into a forked child that first sets no_new_privs (so no
privilege is needed) and reports back over a pipe; the test process itself
never loads a filter.
"""

import copy
import ctypes
import errno
import fcntl
import json
import os
import platform
import resource
import select
import signal
import socket
import struct
import subprocess
import sys

import pytest

import capsa
from capsa.errors import InvalidArgument, Unsupported
from capsa.linux import seccomp as scmp
from capsa.runtime import seccomp

pytestmark = pytest.mark.skipif(not scmp.available(), reason="libseccomp.so.2 is not installed")

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif), 80 bytes
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp), 24 bytes

_libc = ctypes.CDLL(None, use_errno=True)
_libc.personality.argtypes = [ctypes.c_ulong]
_libc.personality.restype = ctypes.c_int


def _prctl_no_new_privs() -> None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def personality(persona: int) -> int:
    """personality(2); returns 0 on success or the errno."""
    return 0 if _libc.personality(persona) != -1 else ctypes.get_errno()


def errno_of(func, *args) -> int:
    try:
        func(*args)
    except OSError as err:
        return err.errno
    return 0


def run_in_child(profile: dict, body, *, nnp: bool = True, parent=None, prepare=None,
                 load=seccomp.load):  # fmt: skip
    """Fork; the child sets no_new_privs, loads profile (with LOAD), runs body(fd) and reports.

    Returns (wait status, the JSON-decoded report or None if the child died).
    parent(sock) runs in the test process meanwhile, with the other end of a
    socketpair the child's body gets as a second argument.
    """
    r, w = os.pipe()
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            mine.close()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if nnp:
                _prctl_no_new_privs()
            if prepare is not None:
                prepare()
            fd = load(profile)
            report = {"ok": body(fd, theirs)}
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            report = {"error": f"{type(err).__name__}: {err}"}
        try:
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(w)
    theirs.close()
    try:
        if parent is not None:
            parent(mine)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
        mine.close()
        _, status = os.waitpid(pid, 0)
    return status, (json.loads(data) if data else None)


def ok(status, report):
    assert os.WIFEXITED(status) and report is not None, (status, report)
    assert "error" not in report, report["error"]
    return report["ok"]


def allow(*rules, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **extra}


# ---- validation ----------------------------------------------------------------------

VALID = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "listenerPath": "/run/agent.sock",
    "listenerMetadata": "meta",
    "syscalls": [
        {"names": ["read", "write", "no_such_syscall_in_any_kernel"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
        {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
    ],
}


def test_validate_accepts_a_full_profile_with_unknown_syscall_names():
    seccomp.validate(copy.deepcopy(VALID))


def _set(path, value):
    def mutate(profile):
        *parents, last = path
        target = profile
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return mutate


_DELETE = object()
_SEVEN_ARGS = [{"index": i % 6, "value": 0, "op": "SCMP_CMP_EQ"} for i in range(7)]


@pytest.mark.parametrize("mutate, message", [
    (_set(["defaultAction"], "SCMP_ACT_FOO"), "unknown action 'SCMP_ACT_FOO' in defaultAction"),
    (_set(["defaultAction"], _DELETE), "missing defaultAction"),
    (_set(["syscalls", 0, "action"], "SCMP_ACT_BAR"),
     "unknown action 'SCMP_ACT_BAR' in syscalls[0]"),
    (_set(["architectures", 1], "SCMP_ARCH_VAX"), "unknown architecture 'SCMP_ARCH_VAX'"),
    (_set(["flags", 0], "SECCOMP_FILTER_FLAG_FOO"), "unknown flag 'SECCOMP_FILTER_FLAG_FOO'"),
    (_set(["syscalls", 1, "args", 0, "op"], "SCMP_CMP_ABOUT"), "unknown operator 'SCMP_CMP_ABOUT'"),
    (_set(["syscalls", 1, "args"], _SEVEN_ARGS), "has 7 args, at most 6"),
    (_set(["syscalls", 1, "args", 0, "index"], 6), "bad index 6 in syscalls[1].args[0]"),
    (_set(["syscalls", 1, "args", 0, "index"], -1), "bad index -1"),
    (_set(["syscalls", 1, "args", 0, "index"], "0"), "bad index '0'"),
    (_set(["syscalls", 1, "args", 0, "value"], 1 << 64), "is not a uint64"),
    (_set(["syscalls", 1, "args", 0, "value"], _DELETE), "value None"),
    (_set(["syscalls", 0, "names"], _DELETE), "missing names in syscalls[0]"),
    (_set(["syscalls", 0, "names"], []), "missing names in syscalls[0]"),
    (_set(["syscalls", 0, "names", 0], ""), "is not a non-empty string"),
    (_set(["syscalls", 0, "errnoRet"], 1), "errnoRet is not allowed with SCMP_ACT_ALLOW"),
    (_set(["defaultErrnoRet"], 5000), "defaultErrnoRet 5000 in defaultAction is not in 0..4094"),
    (_set(["defaultAction"], "SCMP_ACT_NOTIFY"), "cannot be used as default action"),
    (_set(["syscalls", 2, "names"], ["write"]), "cannot be used for the write syscall"),
    (_set(["listenerPath"], _DELETE), "SCMP_ACT_NOTIFY needs a listenerPath"),
    (_set(["architectures"], "SCMP_ARCH_X86"), "architectures must be a list"),
    (_set(["syscalls", 0], "read"), "syscalls[0] must be an object"),
])
def test_validate_refuses(mutate, message):
    profile = copy.deepcopy(VALID)
    mutate(profile)
    with pytest.raises(InvalidArgument) as info:
        seccomp.validate(profile)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and text.startswith("invalid linux.seccomp: ")


def test_validate_refuses_a_non_object():
    with pytest.raises(InvalidArgument, match="must be an object"):
        seccomp.validate(["SCMP_ACT_ALLOW"])


def test_importing_loads_neither_ctypes_nor_libseccomp():
    src = os.path.dirname(os.path.dirname(capsa.__file__))
    code = ("import sys, capsa.runtime.seccomp as s;"
            " s.validate({'defaultAction': 'SCMP_ACT_ALLOW'});"
            " print('ctypes' in sys.modules, s.scmp._lib is not None)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---- libseccomp constants ------------------------------------------------------------

_LIBSECCOMP_ARCH_NAMES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}


def test_arch_tokens_match_libseccomp():
    assert set(_LIBSECCOMP_ARCH_NAMES) == set(scmp.ARCHES)
    for name, token in scmp.ARCHES.items():
        resolved = scmp.arch_resolve_name(_LIBSECCOMP_ARCH_NAMES[name])
        assert resolved in (0, token), name  # 0: unknown to this libseccomp version
        assert scmp.arch_known(token) == (resolved != 0), name


def test_syscall_resolution():
    assert scmp.syscall_resolve_name("no_such_syscall") == scmp.NR_SCMP_ERROR
    mkdir = scmp.syscall_resolve_name("mkdir")
    assert mkdir >= 0 and scmp.syscall_resolve_num(mkdir) == "mkdir"
    assert scmp.syscall_resolve_num(-12345) is None


def test_features_are_probed():
    features = seccomp.features()
    assert features["enabled"] is True
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"} <= set(features["actions"])
    assert set(features["actions"]) <= set(seccomp.ACTIONS)
    assert features["operators"] == list(seccomp.OPERATORS)
    assert set(features["supportedFlags"]) <= set(features["knownFlags"]) == set(seccomp.FLAGS)
    native = [name for name, token in scmp.ARCHES.items() if token == scmp.arch_native()]
    assert native and native[0] in features["archs"]


# ---- real filters ----------------------------------------------------------------------


def test_errno_action_defaults_to_eperm_and_honours_errno_ret(tmp_path):
    profile = allow({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                    {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES})
    (tmp_path / "there").mkdir()

    def body(fd, _):
        return [fd, errno_of(os.mkdir, tmp_path / "new"), errno_of(os.rmdir, tmp_path / "there"),
                errno_of(os.stat, tmp_path)]

    assert ok(*run_in_child(profile, body)) == [None, errno.EPERM, errno.EACCES, 0]


def test_default_errno_action_uses_default_errno_ret(tmp_path):
    names = [scmp.syscall_resolve_num(nr) for nr in range(1024)]
    names = [n for n in names if n and n not in ("mkdir", "mkdirat")]
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOTSUP,
               "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}

    def body(fd, _):
        return [errno_of(os.mkdir, tmp_path / "new"), os.getpid() > 0]

    assert ok(*run_in_child(profile, body)) == [errno.ENOTSUP, True]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"])
def test_killing_actions_end_the_child_with_sigsys(action):
    status, report = run_in_child(allow({"names": ["getppid"], "action": action}),
                                  lambda fd, _: os.getppid())
    assert report is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_argument_equal():
    profile = allow({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]})
    assert ok(*run_in_child(profile, lambda fd, _: [personality(0xFFFFFFFF), personality(0)])) \
        == [errno.EPERM, 0]


def test_argument_masked_equal_takes_the_mask_from_value():
    # (arg0 & 0xf) == 0x8
    profile = allow({"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
                     "args": [{"index": 0, "value": 0xF, "valueTwo": 0x8,
                               "op": "SCMP_CMP_MASKED_EQ"}]})

    def body(fd, _):
        return [personality(0x8), personality(0x18), personality(0xFFFFFFFF), personality(0)]

    assert ok(*run_in_child(profile, body)) == [errno.EACCES, errno.EACCES, 0, 0]


def test_conditions_on_distinct_arguments_all_must_hold():
    # getpriority(PRIO_PROCESS, 4242) is denied; each condition alone is not enough
    profile = allow({"names": ["getpriority"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": os.PRIO_PROCESS, "op": "SCMP_CMP_EQ"},
                              {"index": 1, "value": 4242, "op": "SCMP_CMP_EQ"}]})

    def body(fd, _):
        return [errno_of(os.getpriority, os.PRIO_PROCESS, 4242),
                errno_of(os.getpriority, os.PRIO_PGRP, 4242),
                errno_of(os.getpriority, os.PRIO_PROCESS, 0)]

    assert ok(*run_in_child(profile, body)) == [errno.EPERM, errno.ESRCH, 0]


def test_conditions_on_the_same_argument_become_separate_rules():
    profile = allow({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": 0x1, "op": "SCMP_CMP_EQ"},
                              {"index": 0, "value": 0x2, "op": "SCMP_CMP_EQ"}]})

    def body(fd, _):
        return [personality(0x1), personality(0x2), personality(0xFFFFFFFF)]

    assert ok(*run_in_child(profile, body)) == [errno.EPERM, errno.EPERM, 0]


@pytest.mark.parametrize("op, matching, other", [
    ("SCMP_CMP_EQ", 4_100_000, 4_100_001), ("SCMP_CMP_NE", 4_100_001, 4_100_000),
    ("SCMP_CMP_LT", 4_099_999, 4_100_000), ("SCMP_CMP_LE", 4_100_000, 4_100_001),
    ("SCMP_CMP_GE", 4_100_000, 4_099_999), ("SCMP_CMP_GT", 4_100_001, 4_100_000),
])
def test_comparison_operators(op, matching, other):
    # getpriority(PRIO_PGRP, who) is denied with EADDRNOTAVAIL when `who <op> 4100000`
    profile = allow({"names": ["getpriority"], "action": "SCMP_ACT_ERRNO",
                     "errnoRet": errno.EADDRNOTAVAIL,
                     "args": [{"index": 1, "value": 4_100_000, "op": op}]})

    def body(fd, _):
        return [errno_of(os.getpriority, os.PRIO_PGRP, who) == errno.EADDRNOTAVAIL
                for who in (matching, other)]

    assert ok(*run_in_child(profile, body)) == [True, False]


def test_unknown_syscall_names_are_skipped(tmp_path):
    profile = allow({"names": ["no_such_syscall", "mkdir", "also_not_a_syscall"],
                     "action": "SCMP_ACT_ERRNO"},
                    {"names": ["socketcall"], "action": "SCMP_ACT_ERRNO"})  # x86-32 only
    assert ok(*run_in_child(profile, lambda fd, _: errno_of(os.mkdir, tmp_path / "x"))) \
        == errno.EPERM


def test_rules_with_the_default_action_are_skipped(tmp_path):
    # libseccomp refuses such a rule (EACCES); building must not fail
    profile = {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    ctx, default = seccomp._new_filter(profile)
    try:
        seccomp._add_rules(ctx, profile["syscalls"], default)
    finally:
        scmp.release(ctx)
    profile = allow({"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"})
    assert ok(*run_in_child(profile, lambda fd, _: [errno_of(os.mkdir, tmp_path / "x"),
                                                     errno_of(os.rmdir, tmp_path / "x")])) \
        == [0, errno.EPERM]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 architecture names")
def test_architectures_and_flags(tmp_path):
    supported = seccomp.features()["supportedFlags"]
    flags = [f for f in ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                         "SECCOMP_FILTER_FLAG_SPEC_ALLOW") if f in supported]
    profile = allow({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                    architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    flags=flags + ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])  # no notify: ignored
    seccomp.validate(profile)
    assert ok(*run_in_child(profile, lambda fd, _: errno_of(os.mkdir, tmp_path / "x"))) \
        == errno.EPERM


def test_an_architecture_libseccomp_lacks_is_unsupported():
    missing = [name for name, token in scmp.ARCHES.items() if not scmp.arch_known(token)]
    if not missing:
        pytest.skip("this libseccomp knows every architecture")
    with pytest.raises(Unsupported, match=f"architecture {missing[0]} is not supported"):
        seccomp.load(allow(architectures=[missing[0]]))  # fails before loading anything


def test_a_compiled_filter_is_kept_in_the_root_and_loaded_without_libseccomp(tmp_path, monkeypatch):
    profile = allow({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"})
    program = seccomp.cached_program(profile, str(tmp_path))
    [kept] = os.listdir(tmp_path)
    assert kept.startswith("seccomp:") and kept.endswith(".bpf") and os.path.isfile(tmp_path / kept)
    assert program == seccomp.compile(profile) and len(program) % 8 == 0

    def no_libseccomp(_):
        raise AssertionError("compiled again")

    with monkeypatch.context() as m:
        m.setattr(seccomp, "compile", no_libseccomp)
        assert seccomp.cached_program(profile, str(tmp_path)) == program
    assert ok(*run_in_child(profile, lambda fd, _: errno_of(os.mkdir, tmp_path / "x"),
                            load=lambda p: seccomp.install(program, p))) == errno.EPERM  # fmt: skip

    (tmp_path / kept).write_bytes(program[:5])  # cut short: compiled again
    assert seccomp.cached_program(profile, str(tmp_path)) == program
    other = allow({"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"})
    seccomp.cached_program(other, str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2


def test_load_leaves_no_new_privs_alone():
    if os.geteuid() != 0:
        pytest.skip("loading without no_new_privs needs CAP_SYS_ADMIN")

    def body(fd, _):
        with open("/proc/self/status") as status:
            return [line.split()[1] for line in status if line.startswith("NoNewPrivs:")][0]

    assert ok(*run_in_child(allow({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}), body,
                            nnp=False)) == "0"


def test_load_without_no_new_privs_or_cap_sys_admin_is_refused():
    def drop_privileges():
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)  # clears every capability

    status, report = run_in_child(allow({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}),
                                  lambda fd, _: "loaded", nnp=False, prepare=drop_privileges)
    assert report == {"error": "PermissionError: [Errno 13] failed to load seccomp filter: "
                               "Permission denied (needs no_new_privs or CAP_SYS_ADMIN)"}


# ---- SCMP_ACT_NOTIFY -----------------------------------------------------------------


def _answer_one_notification(sock, answer: int) -> int:
    """Take the listener fd from the child, answer its first notification; the syscall nr."""
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    assert len(fds) == 1
    listener = fds[0]
    try:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        assert poller.poll(10_000), "no notification within 10s"
        notif = bytearray(80)  # struct seccomp_notif
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, notif, True)
        notif_id, _pid, _flags, nr = struct.unpack_from("=QIIi", notif)
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND,
                    bytearray(struct.pack("=QqiI", notif_id, answer, 0, 0)), True)
        return nr
    finally:
        os.close(listener)


@pytest.mark.parametrize("flags", [[], ["SECCOMP_FILTER_FLAG_TSYNC"],
                                   ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]])
def test_notify_returns_the_listener_fd(flags):
    features = seccomp.features()
    if "SCMP_ACT_NOTIFY" not in features["actions"]:
        pytest.skip("no seccomp user notification on this kernel")
    if not set(flags) <= set(features["supportedFlags"]):
        pytest.skip(f"{flags} not supported here")
    profile = allow({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
                    listenerPath="/run/agent.sock", flags=flags)
    seccomp.validate(profile)
    assert seccomp.uses_notify(profile) and seccomp.listener_path(profile) == "/run/agent.sock"

    def body(fd, sock):
        assert isinstance(fd, int) and fd >= 0
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        socket.send_fds(sock, [b"fd"], [fd])
        return os.getppid()  # blocks until the test answers 4242

    seen = []

    def agent(sock):
        seen.append(_answer_one_notification(sock, 4242))

    status, report = run_in_child(profile, body, parent=agent)
    assert ok(status, report) == 4242
    assert seen == [scmp.syscall_resolve_name("getppid")]
