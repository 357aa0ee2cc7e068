"""capsa.engine.seccomp_profile: Docker's default profile per capability set,
Docker-format profiles converted, checked against capsa's runtime and loaded
into forked children (each sets no_new_privs first, so no privilege is needed)."""

import ctypes
import errno
import json
import os

import pytest

from capsa.engine import seccomp_profile as sp
from capsa.engine.spec import DEFAULT_CAPABILITIES
from capsa.errors import InvalidArgument
from capsa.linux import seccomp as scmp
from capsa.runtime import seccomp as runtime_seccomp

DEFAULT = set(DEFAULT_CAPABILITIES)
# Calls newer than Debian 12's libseccomp 2.5.4 (kernel 6.8 to 6.13): the
# runtime skips them there, as runc does.
NEWER_THAN_LIBSECCOMP_2_5_4 = {
    "statmount", "listmount", "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules", "mseal",
    "uretprobe", "setxattrat", "getxattrat", "listxattrat", "removexattrat", "riscv_hwprobe",
}  # fmt: skip


def allowed(profile: dict, name: str) -> list[dict]:
    """The rules of PROFILE that name the system call NAME."""
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def test_default_shape():
    profile = sp.default_profile(DEFAULT, arch="x86_64", kernel=(6, 18))
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    runtime_seccomp.validate(profile)
    names = [name for rule in profile["syscalls"] for name in rule["names"]]
    for name in ("read", "write", "execve", "openat", "futex", "io_uring_setup", "arch_prctl", "modify_ldt",
                 "ptrace", "process_vm_readv", "chroot", "socket", "personality", "clone", "clone3"):
        assert name in names, name
    for name in ("mount", "unshare", "setns", "reboot", "init_module", "kexec_load", "bpf", "keyctl",
                 "add_key", "open_by_handle_at", "swapon", "acct", "settimeofday", "kcmp", "userfaultfd"):
        assert name not in names, name


@pytest.mark.parametrize("arch,expected", [
    ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ("s390x", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]),
    ("riscv64", ["SCMP_ARCH_RISCV64"]),
    ("ppc64le", None),  # no archMap entry: libseccomp's native only
])  # fmt: skip
def test_architectures(arch, expected):
    assert sp.default_profile(DEFAULT, arch=arch).get("architectures") == expected


def test_arch_specific_rules():
    amd64 = sp.default_profile(DEFAULT, arch="x86_64")
    arm64 = sp.default_profile(DEFAULT, arch="aarch64")
    s390x = sp.default_profile(DEFAULT, arch="s390x")
    assert allowed(amd64, "arch_prctl") and allowed(amd64, "modify_ldt") and not allowed(amd64, "set_tls")
    assert allowed(arm64, "set_tls") and allowed(arm64, "cacheflush") and not allowed(arm64, "arch_prctl")
    assert allowed(s390x, "s390_runtime_instr")
    # clone's flags are its second argument on s390.
    assert [rule["args"][0]["index"] for rule in allowed(amd64, "clone")] == [0]
    assert [rule["args"][0]["index"] for rule in allowed(s390x, "clone")] == [1]


def test_clone_without_sys_admin():
    profile = sp.default_profile(DEFAULT, arch="x86_64")
    (clone,) = allowed(profile, "clone")
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = allowed(profile, "clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == errno.ENOSYS


def test_sys_admin_lifts_clone_and_mount():
    profile = sp.default_profile(DEFAULT | {"CAP_SYS_ADMIN"}, arch="x86_64")
    for name in ("mount", "umount2", "unshare", "setns", "sethostname", "bpf", "fsopen", "lsm_set_self_attr"):
        assert [r["action"] for r in allowed(profile, name)] == ["SCMP_ACT_ALLOW"], name
    assert [r.get("args") for r in allowed(profile, "clone")] == [None]
    assert [(r["action"], r.get("args")) for r in allowed(profile, "clone3")] == [("SCMP_ACT_ALLOW", None)]


@pytest.mark.parametrize("capability,calls", [
    ("CAP_SYS_PTRACE", ("kcmp", "pidfd_getfd", "process_madvise")),
    ("CAP_SYS_MODULE", ("init_module", "finit_module", "delete_module")),
    ("CAP_SYS_BOOT", ("reboot",)),
    ("CAP_SYS_PACCT", ("acct",)),
    ("CAP_SYS_RAWIO", ("iopl", "ioperm")),
    ("CAP_SYS_TIME", ("settimeofday", "clock_settime", "stime")),
    ("CAP_SYS_TTY_CONFIG", ("vhangup",)),
    ("CAP_SYS_NICE", ("mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node")),
    ("CAP_SYSLOG", ("syslog",)),
    ("CAP_DAC_READ_SEARCH", ("open_by_handle_at",)),
    ("CAP_BPF", ("bpf",)),
    ("CAP_PERFMON", ("perf_event_open",)),
])  # fmt: skip
def test_capability_gated_calls(capability, calls):
    without = sp.default_profile(DEFAULT, arch="x86_64")
    with_cap = sp.default_profile(DEFAULT | {capability}, arch="x86_64")
    for name in calls:
        assert not allowed(without, name), name
        assert allowed(with_cap, name), name


def test_chroot_follows_its_capability():
    assert allowed(sp.default_profile(DEFAULT, arch="x86_64"), "chroot")
    assert not allowed(sp.default_profile(DEFAULT - {"CAP_SYS_CHROOT"}, arch="x86_64"), "chroot")


def test_personality_values_and_vsock():
    profile = sp.default_profile(DEFAULT, arch="x86_64")
    assert sorted(r["args"][0]["value"] for r in allowed(profile, "personality")) == [0, 8, 0x20000, 0x20008,
                                                                                      0xFFFFFFFF]  # fmt: skip
    assert allowed(profile, "socket") == [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                                           "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}]  # fmt: skip


def test_ptrace_needs_kernel_4_8():
    assert len(allowed(sp.default_profile(DEFAULT, arch="x86_64", kernel=(4, 8)), "ptrace")) == 1
    assert not allowed(sp.default_profile(DEFAULT, arch="x86_64", kernel=(4, 4)), "ptrace")
    assert allowed(sp.default_profile(DEFAULT | {"CAP_SYS_PTRACE"}, arch="x86_64", kernel=(4, 4)), "ptrace")


def test_docker_profile_is_docker_json():
    profile = sp.docker_profile()
    json.dumps(profile)
    assert profile["archMap"][0] == {"architecture": "SCMP_ARCH_X86_64",
                                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}  # fmt: skip
    clone3 = [e for e in profile["syscalls"] if e["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                       "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]  # fmt: skip


@pytest.mark.skipif(not scmp.available(), reason="libseccomp.so.2 is not installed")
def test_every_name_is_known_to_libseccomp_or_newer():
    """A typo would silently allow nothing; only calls newer than this
    libseccomp may be unknown (the runtime skips those)."""
    names = {name for rule in sp.DEFAULT_RULES for name in rule.names}
    unknown = {name for name in names if scmp.syscall_resolve_name(name) == scmp.NR_SCMP_ERROR}
    assert unknown <= NEWER_THAN_LIBSECCOMP_2_5_4


# -- Docker-format profiles


def test_load_profile_filters_by_capability_and_arch():
    text = json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
                    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": None}],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
            {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "excludes": {"caps": ["CAP_KILL"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
            {"names": ["new"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["old"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "3.10"}},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        ],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    })  # fmt: skip
    profile = sp.load_profile(text, {"CAP_KILL"}, arch="x86_64", kernel=(6, 1))
    assert profile == {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        ],
    }  # fmt: skip
    runtime_seccomp.validate(profile)
    other = sp.load_profile(text, {"CAP_SYS_ADMIN"}, arch="aarch64", kernel=(3, 2))
    assert [r["names"] for r in other["syscalls"]] == [["read", "write"], ["getpid"], ["mount"], ["kill"],
                                                       ["set_tls"], ["old"], ["mmap"]]  # fmt: skip
    assert other["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_load_profile_architectures_as_given():
    text = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"]})
    assert sp.load_profile(text, set()) == {"defaultAction": "SCMP_ACT_ALLOW",
                                            "architectures": ["SCMP_ARCH_X86"], "syscalls": []}  # fmt: skip


def test_an_empty_profile_disables_seccomp():
    assert sp.load_profile("{}", set()) is None


@pytest.mark.parametrize("profile,message", [
    ("{nope", "decoding seccomp profile failed: "),
    ("[]", "decoding seccomp profile failed: not a JSON object"),
    (('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"], "archMap": '
     '[{"architecture": "SCMP_ARCH_X86", "subArchitectures": []}]}'),
     "'architectures' and 'archMap' were specified in the seccomp profile, use either 'architectures' or 'archMap'"),
    (('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"], '
     '"action": "SCMP_ACT_ALLOW"}]}'),
     "'name' and 'names' were specified in the seccomp profile, use either 'name' or 'names'"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {"names": ["read"]}}',
     "decoding seccomp profile failed: syscalls must be a list"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}',
     "decoding seccomp profile failed: syscall names must be a list of strings"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}',
     "decoding seccomp profile failed: a syscall entry has no names"),
    (('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", '
     '"includes": {"minKernel": "four"}}]}'),
     'invalid kernel version: four, expected "<kernel>.<major>"'),
])  # fmt: skip
def test_load_profile_refuses(profile, message):
    with pytest.raises(InvalidArgument) as caught:
        sp.load_profile(profile, set(), arch="x86_64")
    assert str(caught.value).startswith(message)


# -- the filter, for real


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.personality.argtypes = [ctypes.c_ulong]
_libc.personality.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
CLONE_NEWUTS = 0x04000000
NR_CLONE3 = 435  # x86_64 and aarch64 alike


def errno_of(call, *args) -> int:
    return ctypes.get_errno() if call(*args) == -1 else 0


def in_filtered_child(profile: dict) -> dict:
    """Load PROFILE into a forked child and report what some calls return."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                raise OSError(ctypes.get_errno(), "prctl")
            runtime_seccomp.load(profile)
            report = {
                "getpid": os.getpid() > 0,
                "unshare": errno_of(_libc.unshare, CLONE_NEWUTS),
                "clone3": errno_of(_libc.syscall, ctypes.c_long(NR_CLONE3), ctypes.c_long(0), ctypes.c_long(0)),
                "personality_query": errno_of(_libc.personality, 0xFFFFFFFF),
                "personality_exec": errno_of(_libc.personality, 0x0400000),  # READ_IMPLIES_EXEC
                "keyctl": errno_of(_libc.syscall, ctypes.c_long(scmp.syscall_resolve_name("keyctl")),
                                   ctypes.c_long(0), ctypes.c_long(0)),
            }
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        except BaseException as err:  # noqa: BLE001 - report anything to the parent
            os.write(write, json.dumps({"error": repr(err)}).encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(not scmp.available(), reason="libseccomp.so.2 is not installed")
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="clone3's number")
def test_default_profile_in_a_child():
    report = in_filtered_child(sp.default_profile(DEFAULT))
    assert report == {"getpid": True, "unshare": errno.EPERM, "clone3": errno.ENOSYS, "personality_query": 0,
                      "personality_exec": errno.EPERM, "keyctl": errno.EPERM}  # fmt: skip


@pytest.mark.skipif(not scmp.available(), reason="libseccomp.so.2 is not installed")
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="clone3's number")
def test_sys_admin_profile_in_a_child():
    """With CAP_SYS_ADMIN in the profile, unshare and clone3 pass the filter
    (and then fail on capabilities this child lacks, or succeed as root)."""
    report = in_filtered_child(sp.default_profile(DEFAULT | {"CAP_SYS_ADMIN"}))
    assert report["unshare"] != errno.EPERM or os.geteuid() != 0
    assert report["clone3"] != errno.ENOSYS  # clone3 with a NULL struct: EFAULT/EINVAL from the kernel
    assert report["keyctl"] == errno.EPERM
