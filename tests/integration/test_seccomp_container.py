"""linux.seccomp applied to a real container through libseccomp."""

import pytest


def profile(default="SCMP_ACT_ALLOW", **extra) -> dict:
    return {"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64"], **extra}


@pytest.mark.parametrize("nnp", [True, False])
def test_denied_syscall_gets_its_errno(run_container, bundle, nnp):
    bundle.process["noNewPrivileges"] = nnp
    bundle.linux["seccomp"] = profile(syscalls=[
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
    ])  # fmt: skip
    bundle.write()
    code, out, err = run_container("mkdir /dev/shm/x || echo denied; echo still-running")
    assert "Permission denied" in err
    assert out.split() == ["denied", "still-running"]


def test_default_errno_with_an_allow_list(run_container, bundle):
    allowed = ["read", "write", "exit", "exit_group", "execve", "brk", "mmap", "munmap",
               "arch_prctl", "set_tid_address", "rt_sigaction", "rt_sigprocmask", "getpid",
               "ioctl", "fcntl", "getuid", "geteuid", "open", "openat", "close", "fstat",
               "newfstatat", "stat", "lstat", "prctl", "mprotect", "getppid", "uname",
               "rt_sigreturn", "sigaltstack", "getcwd", "readlink", "wait4", "clone",
               "fork", "vfork", "dup2", "dup3", "pipe", "pipe2", "poll", "chdir",
               "set_robust_list", "rseq", "prlimit64", "futex", "getrandom"]  # fmt: skip
    bundle.linux["seccomp"] = profile(
        default="SCMP_ACT_ERRNO", defaultErrnoRet=1,
        syscalls=[{"names": allowed, "action": "SCMP_ACT_ALLOW"}])  # fmt: skip
    bundle.write()
    code, out, err = run_container("echo $$; hostname x || echo no-sethostname", check=False)
    assert out.split() == ["1", "no-sethostname"]


def test_argument_conditions(run_container, bundle):
    # personality(0xffffffff) only queries; deny it, allow every other persona.
    bundle.linux["seccomp"] = profile(syscalls=[
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
    ])  # fmt: skip
    bundle.write()
    code, out, err = run_container("linux32 true || echo linux32-denied; "
                                   "linux64 true && echo linux64-allowed", check=False)  # fmt: skip
    assert out.split() == ["linux32-denied", "linux64-allowed"]
    assert "Operation not permitted" in err


def test_kill_process_action(runtime, bundle):
    bundle.linux["seccomp"] = profile(syscalls=[
        {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"},
    ])  # fmt: skip
    bundle.args("uname")
    result = runtime("run", "--bundle", str(bundle), "sigsys", check=False)
    assert result.returncode == 128 + 31  # SIGSYS


def test_unknown_action_is_refused_before_anything_changes(runtime, bundle):
    bundle.linux["seccomp"] = profile(syscalls=[{"names": ["uname"], "action": "SCMP_ACT_NOPE"}])
    bundle.write()
    result = runtime("create", "--bundle", str(bundle), "badseccomp", check=False)
    assert result.returncode != 0 and b"SCMP_ACT_NOPE" in result.stderr
    assert runtime.ids() == []


def test_flags_are_accepted(run_container, bundle):
    bundle.linux["seccomp"] = profile(flags=["SECCOMP_FILTER_FLAG_LOG",
                                             "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                                      syscalls=[{"names": ["mkdirat"],
                                                 "action": "SCMP_ACT_ERRNO"}])  # fmt: skip
    bundle.write()
    _, out, _ = run_container("grep Seccomp: /proc/self/status")
    assert out.split() == ["Seccomp:", "2"]
