"""linux.seccomp applied to a real container through libseccomp."""

import os
import time

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


SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)


def seccomp_agent(path, received: dict, stop) -> None:
    """Receive the listener fd with its state, then answer every mkdir with EACCES."""
    import fcntl
    import json
    import select
    import socket
    import struct

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        server.settimeout(20)
        conn, _ = server.accept()
        with conn:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
    received["state"] = json.loads(data)
    listener = fds[0]
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    try:
        while not stop.is_set():
            if not poller.poll(100):
                continue
            notif = bytearray(80)
            try:
                fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, notif, True)
            except OSError:
                break
            notif_id, _pid, _flags, nr = struct.unpack_from("=QIIi", notif)
            received.setdefault("syscalls", []).append(nr)
            resp = bytearray(struct.pack("=QqiI", notif_id, 0, -13, 0))
            fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp, True)
    finally:
        os.close(listener)


def test_notify_sends_the_listener_to_the_agent(run_container, bundle, tmp_path):
    import threading

    path = tmp_path / "agent.sock"
    received, stop = {}, threading.Event()
    agent = threading.Thread(target=seccomp_agent, args=(path, received, stop))
    agent.start()
    try:
        while not path.exists():
            time.sleep(0.01)
        bundle.linux["seccomp"] = profile(
            listenerPath=str(path), listenerMetadata="meta",
            syscalls=[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}])  # fmt: skip
        bundle.write()
        code, out, err = run_container("mkdir /dev/shm/x || echo refused-by-agent")
    finally:
        stop.set()
        agent.join()
    assert out.split() == ["refused-by-agent"]
    assert "Permission denied" in err
    state = received["state"]
    assert state["fds"] == ["seccompFd"] and state["metadata"] == "meta"
    assert state["state"]["status"] == "creating" and state["state"]["id"].startswith("t")
    assert received["syscalls"]
