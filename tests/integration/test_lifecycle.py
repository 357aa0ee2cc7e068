"""The lifecycle through runc's command line, each step checked by its effect.

Every test runs real busybox containers with a private --root. Programs in
the container report back through a host directory bind-mounted on /tmp
(`shared`), so a test can tell whether and when they ran.
"""

import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

from running import read, shared, wait_for

import pytest

OCI_STATE_KEYS = {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
LIST_JSON_KEYS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}


def raw(runtime, *args, **kwargs) -> subprocess.CompletedProcess:
    """Run the runtime with the caller's own stdio (runtime() captures it)."""
    kwargs.setdefault("timeout", 30)
    return subprocess.run(runtime.command + ["--root", runtime.root, *args], **kwargs)


def status(runtime, container_id: str) -> str:
    return runtime.state(container_id)["status"]


def wait_status(runtime, container_id: str, wanted: str, timeout: float = 5.0) -> None:
    wait_for(lambda: status(runtime, container_id) == wanted, timeout,
             f"{container_id} to be {wanted}")  # fmt: skip


def create(runtime, bundle, container_id: str, *flags) -> int:
    """Create with stdio on /dev/null (the init keeps it); return the init pid."""
    raw(runtime, "create", "--bundle", str(bundle), *flags, container_id, check=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return runtime.state(container_id)["pid"]


def ns_pids(pid: int) -> list[str]:
    """NSpid of a process: its pid in each pid namespace, outermost first."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return line.split()[1:]
    raise AssertionError("no NSpid line")


def exited(pid: int) -> bool:
    """pid is gone or a zombie (whoever it was reparented to reaps it later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def processes_in_pid_ns_of(pid: int) -> set[int]:
    try:
        target = os.readlink(f"/proc/{pid}/ns/pid")
    except FileNotFoundError:
        return set()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == target and not exited(int(entry)):
                    found.add(int(entry))
            except OSError:
                pass
    return found


def cgroup_dirs(pid: int) -> list[str]:
    """The host directories of every cgroup hierarchy pid is in (but the root)."""
    dirs = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if path == "/":
                continue
            if controllers == "":
                mount = "unified"
            elif controllers.startswith("name="):
                mount = controllers[len("name=") :]
            else:
                mount = controllers
            candidate = f"/sys/fs/cgroup/{mount}{path}"
            if os.path.isdir(candidate):
                dirs.append(candidate)
    return dirs


# --- spec ------------------------------------------------------------------------


def _runc_spec(tmp_path, *flags) -> dict:
    directory = tmp_path / ("runc-spec" + "".join(flags))
    directory.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(directory), *flags], check=True)
    return json.loads((directory / "config.json").read_text())


def test_spec_writes_config_like_runc(runtime, tmp_path):
    directory = tmp_path / "b"
    directory.mkdir()
    result = runtime("spec", "--bundle", str(directory))
    assert result.stdout == b"" and result.stderr == b""
    config = json.loads((directory / "config.json").read_text())
    theirs = _runc_spec(tmp_path)
    assert set(config) == set(theirs)
    assert config["process"]["args"] == ["sh"] and config["process"]["terminal"] is True
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["linux"]["namespaces"] == theirs["linux"]["namespaces"]
    assert [m["destination"] for m in config["mounts"]] == \
        [m["destination"] for m in theirs["mounts"]]  # fmt: skip
    assert config["process"]["capabilities"] == theirs["process"]["capabilities"]


def test_spec_writes_in_the_current_directory(runtime, tmp_path):
    runtime("spec", cwd=tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["root"]["path"] == "rootfs"


def test_spec_refuses_to_overwrite(runtime, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("mine")
    result = runtime("spec", "--bundle", str(tmp_path), check=False)
    assert result.returncode != 0
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert path.read_text() == "mine"


def test_spec_rootless_like_runc(runtime, tmp_path):
    runtime("spec", "--rootless", "--bundle", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    theirs = _runc_spec(tmp_path, "--rootless")
    linux = config["linux"]
    kinds = sorted(n["type"] for n in linux["namespaces"])
    assert kinds == sorted(n["type"] for n in theirs["linux"]["namespaces"])
    assert "user" in kinds and "network" not in kinds
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in linux
    sysfs = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert sysfs["type"] == "none" and "rbind" in sysfs["options"]


def test_a_rootless_spec_runs_in_a_user_namespace(runtime, tmp_path, busybox_rootfs):
    runtime("spec", "--rootless", "--bundle", str(tmp_path))
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["root"]["path"] = str(busybox_rootfs)
    config["process"].update(terminal=False, args=["cat", "/proc/self/uid_map"])
    path.write_text(json.dumps(config))
    result = runtime("run", "--bundle", str(tmp_path), "u1", stdin=subprocess.DEVNULL)
    assert result.stdout.split() == [b"0", str(os.geteuid()).encode(), b"1"]


# --- create and start ------------------------------------------------------------


def test_create_blocks_the_init_until_start(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "echo ran > /tmp/out")
    pid = create(runtime, bundle, "c1")
    state = runtime.state("c1")
    assert state["status"] == "created" and state["pid"] == pid > 0
    assert ns_pids(pid)[-1] == "1"
    time.sleep(0.2)  # give a wrongly released init the time to run
    assert read(host / "out") is None, "the program ran before start"
    assert runtime.state("c1")["status"] == "created"
    runtime("start", "c1")
    wait_for(lambda: read(host / "out") == "ran\n", what="the program's output")
    wait_status(runtime, "c1", "stopped")


def test_pid_file_holds_the_init_host_pid(runtime, bundle, tmp_path):
    bundle.args("sleep", "30")
    pid_file = tmp_path / "init.pid"
    pid = create(runtime, bundle, "c1", "--pid-file", str(pid_file))
    assert pid_file.read_text().strip() == str(pid)
    assert ns_pids(pid) == [str(pid), "1"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"sleep" not in f.read(), "the init has exec'd before start"


def test_pid_file_relative_to_the_working_directory(runtime, bundle, tmp_path):
    bundle.args("true")
    workdir = tmp_path / "work"
    workdir.mkdir()
    raw(runtime, "create", "--bundle", str(bundle), "--pid-file", "p", "c1", check=True,
        stdout=subprocess.DEVNULL, cwd=workdir)  # fmt: skip
    assert (workdir / "p").read_text().strip() == str(runtime.state("c1")["pid"])


def test_init_inherits_the_stdio_of_create(runtime, bundle, tmp_path):
    bundle.args("sh", "-c", "echo to-stdout; echo to-stderr >&2; read line; echo got $line")
    stdin, out, err = tmp_path / "in", tmp_path / "out", tmp_path / "err"
    stdin.write_text("hello\n")
    with open(stdin) as i, open(out, "w") as o, open(err, "w") as e:
        raw(runtime, "create", "--bundle", str(bundle), "c1", stdin=i, stdout=o, stderr=e,
            check=True)  # fmt: skip
    assert out.read_text() == "" and err.read_text() == ""
    runtime("start", "c1")
    wait_status(runtime, "c1", "stopped")
    assert out.read_text() == "to-stdout\ngot hello\n"
    assert err.read_text() == "to-stderr\n"


def test_commands_leave_no_child_holding_their_stdout(runtime, bundle, tmp_path):
    """capture_output reads to EOF: a child keeping the pipe would hang it."""
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "touch /tmp/ready; exec sleep 30")
    create(runtime, bundle, "c1")
    for args in (["state", "c1"], ["list"], ["start", "c1"], ["state", "c1"],
                 ["list", "--format", "json"], ["kill", "c1", "KILL"]):  # fmt: skip
        began = time.monotonic()
        runtime(*args, timeout=10)
        assert time.monotonic() - began < 5, f"{args} held its stdout"
        if args[0] == "start":
            wait_for(lambda: (host / "ready").exists(), what="the program to run")
    wait_status(runtime, "c1", "stopped")
    runtime("delete", "c1", timeout=10)


def test_a_failed_create_leaves_no_child_holding_its_stdout(runtime, bundle):
    """The init existed (it failed looking for the program): it must be gone."""
    bundle.args("no-such-program")
    began = time.monotonic()
    result = runtime("create", "--bundle", str(bundle), "c1", check=False, timeout=10,
                     stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode != 0 and time.monotonic() - began < 5
    assert runtime.ids() == []


def test_run_passes_its_stdin_to_the_container(runtime, bundle):
    bundle.args("sh", "-c", "read a; read b; echo \"$b $a\"")
    result = runtime("run", "--bundle", str(bundle), "r1", input=b"one\ntwo\n")
    assert result.stdout == b"two one\n"


def test_state_has_exactly_the_spec_fields(runtime, bundle, tmp_path):
    bundle.config["annotations"] = {"org.example.key": "value", "other": ""}
    bundle.args("sleep", "30")
    pid = create(runtime, bundle, "c1")
    state = runtime.state("c1")
    assert set(state) == OCI_STATE_KEYS
    assert state == {"ociVersion": bundle.config["ociVersion"], "id": "c1", "status": "created",
                     "pid": pid, "bundle": str(bundle),
                     "annotations": {"org.example.key": "value", "other": ""}}  # fmt: skip
    runtime("start", "c1")
    assert runtime.state("c1")["status"] == "running"


def test_state_without_annotations_has_an_empty_object(runtime, bundle):
    bundle.config.pop("annotations", None)
    bundle.args("true")
    create(runtime, bundle, "c1")
    assert runtime.state("c1")["annotations"] == {}


def test_start_runs_the_program(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "echo $$ > /tmp/pid; exec sleep 30")
    pid = create(runtime, bundle, "c1")
    result = runtime("start", "c1")
    assert result.stdout == b"" and result.stderr == b""
    assert status(runtime, "c1") == "running"
    wait_for(lambda: read(host / "pid") == "1\n", what="the program's pid")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read() == b"sleep\x0030\x00"


def test_start_twice_is_an_error(runtime, bundle):
    bundle.args("sleep", "30")
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    result = runtime("start", "c1", check=False)
    assert result.returncode != 0
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert status(runtime, "c1") == "running"


def test_stopped_shows_as_soon_as_the_init_exits(runtime, bundle, tmp_path):
    bundle.args("sleep", "30")
    pid = create(runtime, bundle, "c1")
    runtime("start", "c1")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: exited(pid), what="the init to die")
    assert runtime.state("c1")["status"] == "stopped"
    assert runtime.state("c1")["pid"] == 0


SUBREAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the init is ours to reap
runtime, bundle, pid_file = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
subprocess.run(runtime + ["create", "--bundle", bundle, "--pid-file", pid_file, "c1"],
               check=True, stdout=subprocess.DEVNULL)
pid = int(open(pid_file).read())
subprocess.run(runtime + ["start", "c1"], check=True)
while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
    pass
state = subprocess.run(runtime + ["state", "c1"], check=True, capture_output=True).stdout
os.waitpid(pid, 0)
sys.stdout.write(state.decode())
"""


def test_a_zombie_init_is_stopped(runtime, bundle, tmp_path):
    """The init has exited but nobody has reaped it yet: it is stopped already."""
    bundle.args("true")
    helper = [sys.executable, "-c", SUBREAPER, *runtime.command, "--root", runtime.root,
              str(bundle), str(tmp_path / "pid")]  # fmt: skip
    result = subprocess.run(helper, capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["status"] == "stopped"


def test_pid_reuse_is_not_mistaken_for_the_init(runtime, bundle):
    """state.json names a live process with another start time: stopped."""
    bundle.args("sleep", "30")
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    path = os.path.join(runtime.root, "c1", "state.json")
    with open(path) as f:
        saved = f.read()
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        forged = json.loads(saved)
        forged["pid"] = bystander.pid
        with open(path, "w") as f:
            json.dump(forged, f)
        state = runtime.state("c1")
        assert state["status"] == "stopped" and state["pid"] == 0
        for signame in ("KILL", "TERM"):
            result = runtime("kill", "c1", signame, check=False)
            assert result.returncode != 0
        assert bystander.poll() is None, "kill signalled an unrelated process"
    finally:
        with open(path, "w") as f:
            f.write(saved)
        bystander.kill()
        bystander.wait()
    assert status(runtime, "c1") == "running"


# --- kill ------------------------------------------------------------------------


@pytest.mark.parametrize("signame", ["KILL", "SIGKILL", "9", "kill", "SigKill"])
def test_kill_names_sigkill_every_way(runtime, bundle, signame):
    bundle.args("sleep", "30")
    pid = create(runtime, bundle, "c1")
    runtime("start", "c1")
    runtime("kill", "c1", signame)
    wait_status(runtime, "c1", "stopped")
    assert exited(pid)


TRAP_TERM = "trap 'echo got-term > /tmp/out; exit 0' TERM; touch /tmp/ready; " \
            "while :; do sleep 0.05; done"  # fmt: skip


def test_kill_sends_sigterm_by_default(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", TRAP_TERM)
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    wait_for(lambda: (host / "ready").exists(), what="the trap to be set")
    runtime("kill", "c1")
    wait_for(lambda: read(host / "out") == "got-term\n", what="SIGTERM to arrive")
    wait_status(runtime, "c1", "stopped")


@pytest.mark.parametrize("signame", ["USR1", "SIGUSR1", "10"])
def test_kill_sends_the_named_signal(runtime, bundle, tmp_path, signame):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "trap 'echo usr1 >> /tmp/out' USR1; touch /tmp/ready; "
                "while :; do sleep 0.05; done")  # fmt: skip
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    wait_for(lambda: (host / "ready").exists(), what="the trap to be set")
    runtime("kill", "c1", signame)
    wait_for(lambda: read(host / "out") == "usr1\n", what="SIGUSR1 to arrive")
    assert status(runtime, "c1") == "running"


def test_kill_all_signals_every_process(runtime, bundle, tmp_path):
    """The init (no TERM handler, so immune as a pid 1) survives; its children don't."""
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "sleep 30 & sleep 30 & touch /tmp/ready; wait; "
                "echo children-gone > /tmp/out; exec sleep 30")  # fmt: skip
    pid = create(runtime, bundle, "c1")
    runtime("start", "c1")
    wait_for(lambda: (host / "ready").exists(), what="the children to start")
    wait_for(lambda: len(processes_in_pid_ns_of(pid)) == 3, what="three processes")
    runtime("kill", "--all", "c1", "TERM")
    wait_for(lambda: read(host / "out") == "children-gone\n", what="the children to die")
    assert status(runtime, "c1") == "running"
    runtime("kill", "-a", "c1", "KILL")
    wait_status(runtime, "c1", "stopped")
    wait_for(lambda: not processes_in_pid_ns_of(pid), what="every process to die")


def test_kill_a_created_container(runtime, bundle):
    bundle.args("sleep", "30")
    create(runtime, bundle, "c1")
    runtime("kill", "c1", "KILL")
    wait_status(runtime, "c1", "stopped")


def test_kill_a_stopped_container_is_an_error(runtime, bundle):
    bundle.args("true")
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    wait_status(runtime, "c1", "stopped")
    result = runtime("kill", "c1", "KILL", check=False)
    assert result.returncode != 0
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert status(runtime, "c1") == "stopped"


# --- delete ----------------------------------------------------------------------


def test_delete_a_running_container_is_refused(runtime, bundle):
    bundle.args("sleep", "30")
    pid = create(runtime, bundle, "c1")
    runtime("start", "c1")
    before = sorted(os.listdir(os.path.join(runtime.root, "c1")))
    dirs = cgroup_dirs(pid)
    result = runtime("delete", "c1", check=False)
    assert result.returncode != 0
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert status(runtime, "c1") == "running"
    assert sorted(os.listdir(os.path.join(runtime.root, "c1"))) == before
    assert dirs and all(os.path.isdir(d) for d in dirs)
    assert not exited(pid)


def test_delete_a_created_container(runtime, bundle):
    bundle.args("sleep", "30")
    pid = create(runtime, bundle, "c1")
    dirs = cgroup_dirs(pid)
    assert dirs
    runtime("delete", "c1")
    assert runtime.ids() == []
    assert exited(pid)
    assert not any(os.path.isdir(d) for d in dirs)


def test_delete_a_stopped_container(runtime, bundle):
    bundle.args("true")
    pid = create(runtime, bundle, "c1")
    dirs = cgroup_dirs(pid)
    runtime("start", "c1")
    wait_status(runtime, "c1", "stopped")
    result = runtime("delete", "c1")
    assert result.stdout == b"" and result.stderr == b""
    assert runtime.ids() == []
    assert not any(os.path.isdir(d) for d in dirs)
    assert runtime("list", "-q").stdout == b""


def test_delete_force_kills_and_removes_everything(runtime, bundle, tmp_path):
    bundle.args("sh", "-c", "sleep 30 & sleep 30 & exec sleep 30")
    pid = create(runtime, bundle, "c1")
    runtime("start", "c1")
    wait_for(lambda: len(processes_in_pid_ns_of(pid)) == 3, what="three processes")
    dirs = cgroup_dirs(pid)
    assert dirs
    runtime("delete", "--force", "c1")
    assert runtime.ids() == []
    assert not processes_in_pid_ns_of(pid)
    assert not any(os.path.isdir(d) for d in dirs)
    result = runtime("state", "c1", check=False)
    assert result.returncode != 0


def test_a_killed_create_leaves_nothing_delete_cannot_remove(runtime, bundle, tmp_path):
    """create is killed while a createRuntime hook holds it (cgroup made,
    init forked): the container is `creating` while create lives, then
    stopped, and delete removes its cgroup (the leak check sees it)."""
    marker, gate = tmp_path / "hook-ran", tmp_path / "gate"
    os.mkfifo(gate)
    bundle.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}; read x < {gate}"]}]}
    bundle.args("true")
    creator = subprocess.Popen(runtime.command + ["--root", runtime.root, "create", "--bundle",
                                                  str(bundle), "c1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(marker.exists, what="the hook to run")
        state = runtime.state("c1")
        assert state["status"] == "creating" and state["bundle"] == str(bundle)
        result = runtime("delete", "c1", check=False)
        assert result.returncode != 0 and b"creating" in result.stderr
    finally:
        creator.kill()
        creator.wait()
        with open(gate, "w") as f:  # let the orphaned hook go
            f.write("\n")
    assert status(runtime, "c1") == "stopped"
    runtime("delete", "c1")
    assert runtime.ids() == []


def test_delete_f_is_force(runtime, bundle):
    bundle.args("sleep", "30")
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    runtime("delete", "-f", "c1")
    assert runtime.ids() == []


def test_delete_an_unknown_id_is_an_error(runtime):
    result = runtime("delete", "nope", check=False)
    assert result.returncode != 0
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_delete_force_an_unknown_id_succeeds_silently(runtime):
    result = runtime("delete", "--force", "nope")
    assert result.stdout == b"" and result.stderr == b""


# --- run -------------------------------------------------------------------------


def test_run_prints_the_output_and_deletes(runtime, bundle):
    bundle.args("sh", "-c", "echo hello; echo oops >&2")
    result = runtime("run", "--bundle", str(bundle), "r1", stdin=subprocess.DEVNULL)
    assert result.stdout == b"hello\n" and result.stderr == b"oops\n"
    assert runtime.ids() == []


@pytest.mark.parametrize("code", [0, 3, 255])
def test_run_returns_the_exit_code(runtime, bundle, code):
    bundle.args("sh", "-c", f"exit {code}")
    result = runtime("run", "-b", str(bundle), "r1", check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == code, result.stderr
    assert runtime.ids() == []


def test_run_killed_by_a_signal_returns_128_plus_n(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "touch /tmp/ready; exec sleep 30")
    proc = subprocess.Popen(runtime.command + ["--root", runtime.root, "run", "--bundle",
                                               str(bundle), "r1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: (host / "ready").exists(), what="the container to run")
        runtime("kill", "r1", "KILL")
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGKILL, err
    assert runtime.ids() == []


def test_run_forwards_signals_to_the_container(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", TRAP_TERM)
    proc = subprocess.Popen(runtime.command + ["--root", runtime.root, "run", "--bundle",
                                               str(bundle), "r1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: (host / "ready").exists(), what="the trap to be set")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert read(host / "out") == "got-term\n"
    assert proc.returncode == 0, err


def test_run_detach_returns_with_the_container_running(runtime, bundle, tmp_path):
    bundle.args("sh", "-c", "echo detached-output; exec sleep 30")
    out = tmp_path / "out"
    with open(out, "w") as o:
        began = time.monotonic()
        raw(runtime, "run", "--detach", "--bundle", str(bundle), "r1", check=True,
            stdin=subprocess.DEVNULL, stdout=o, timeout=10)  # fmt: skip
        assert time.monotonic() - began < 5
    assert status(runtime, "r1") == "running"
    wait_for(lambda: read(out) == "detached-output\n", what="the output")
    runtime("delete", "--force", "r1")


def test_run_with_an_existing_id_leaves_the_first_alone(runtime, bundle):
    bundle.args("sleep", "30")
    pid = create(runtime, bundle, "c1")
    result = runtime("run", "--bundle", str(bundle), "c1", check=False,
                     stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode != 0
    assert runtime.state("c1") == {**runtime.state("c1"), "status": "created", "pid": pid}


# --- list ------------------------------------------------------------------------


def test_list_shows_every_container(runtime, bundle):
    bundle.args("sleep", "30")
    created_pid = create(runtime, bundle, "a1")
    running_pid = create(runtime, bundle, "b2")
    runtime("start", "b2")

    table = runtime("list").stdout.decode().splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = [line.split() for line in table[1:]]
    assert [r[:4] for r in rows] == [["a1", str(created_pid), "created", str(bundle)],
                                     ["b2", str(running_pid), "running", str(bundle)]]
    assert all(r[5] == "root" for r in rows)

    listed = json.loads(runtime("list", "--format", "json").stdout)
    assert [set(entry) for entry in listed] == [LIST_JSON_KEYS, LIST_JSON_KEYS]
    by_id = {entry["id"]: entry for entry in listed}
    assert by_id["a1"]["status"] == "created" and by_id["a1"]["pid"] == created_pid
    assert by_id["b2"]["status"] == "running" and by_id["b2"]["pid"] == running_pid
    for entry in listed:
        assert entry["bundle"] == str(bundle)
        assert entry["rootfs"] == os.path.realpath(bundle.rootfs)
        assert entry["owner"] == "root"
        assert entry["ociVersion"] == bundle.config["ociVersion"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["created"])

    assert runtime("list", "-q").stdout == b"a1\nb2\n"
    assert runtime("list", "--quiet").stdout == b"a1\nb2\n"
    assert json.loads(runtime("list", "-f", "json").stdout) == listed


def test_list_shows_stopped_containers(runtime, bundle):
    bundle.args("true")
    create(runtime, bundle, "c1")
    runtime("start", "c1")
    wait_status(runtime, "c1", "stopped")
    (entry,) = json.loads(runtime("list", "--format", "json").stdout)
    assert entry["status"] == "stopped" and entry["pid"] == 0


def test_list_of_an_empty_root(runtime):
    assert runtime("list", "--format", "json").stdout.strip() == b"null"
    assert runtime("list", "-q").stdout == b""
    assert runtime("list").stdout.decode().split() == ["ID", "PID", "STATUS", "BUNDLE",
                                                       "CREATED", "OWNER"]  # fmt: skip


# --- terminal and inherited descriptors --------------------------------------------


def _read_to_end(fd: int, timeout: float = 5.0) -> bytes:
    """Read a pty master until every slave is closed (EIO)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the terminal stayed open; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the slave side is closed
                chunk = b""
            if not chunk:
                return data
            data += chunk


def test_console_socket_receives_the_pty_master(runtime, bundle, tmp_path):
    bundle.process["terminal"] = True
    bundle.args("sh")
    path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    master = -1
    try:
        raw(runtime, "create", "--bundle", str(bundle), "--console-socket", path, "t1",
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
        listener.settimeout(5)
        conn, _ = listener.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        assert len(fds) == 1
        master = fds[0]
        assert os.isatty(master)
        runtime("start", "t1")
        os.write(master, b"tty; test -t 0 && echo stdin-is-a-tty; echo hi; exit\n")
        output = _read_to_end(master)
    finally:
        listener.close()
        if master >= 0:
            os.close(master)
    text = output.decode(errors="replace")
    assert "/dev/pts/0" in text
    assert "stdin-is-a-tty" in text
    assert "\r\nhi\r\n" in text
    wait_status(runtime, "t1", "stopped")


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return high


def test_preserve_fds_passes_extra_descriptors(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "cat <&3 > /tmp/out; "
                "if [ -e /proc/$$/fd/4 ]; then echo open; else echo closed; fi > /tmp/fd4")
    data = tmp_path / "data"
    data.write_text("through fd 3\n")
    other = tmp_path / "other"
    other.write_text("not passed\n")
    # High numbers first, so that neither dup2 below clobbers the other.
    fd3 = _high_fd(os.open(data, os.O_RDONLY))
    fd4 = _high_fd(os.open(other, os.O_RDONLY))

    def give_fds():
        os.dup2(fd3, 3)
        os.dup2(fd4, 4)

    try:
        raw(runtime, "create", "--preserve-fds", "1", "--bundle", str(bundle), "c1",
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            preexec_fn=give_fds, close_fds=False)  # fmt: skip
    finally:
        os.close(fd3)
        os.close(fd4)
    runtime("start", "c1")
    wait_status(runtime, "c1", "stopped")
    assert read(host / "out") == "through fd 3\n"
    assert read(host / "fd4") == "closed\n"


# --- more of create's flags ----------------------------------------------------------


def test_a_relative_bundle_is_recorded_absolute(runtime, bundle, tmp_path):
    bundle.args("true")
    raw(runtime, "create", "--bundle", "bundle", "c1", check=True, cwd=tmp_path,
        stdout=subprocess.DEVNULL)  # fmt: skip
    assert runtime.state("c1")["bundle"] == str(bundle)


def test_the_bundle_defaults_to_the_working_directory(runtime, bundle):
    bundle.args("true")
    raw(runtime, "create", "c1", check=True, cwd=str(bundle), stdout=subprocess.DEVNULL)
    assert runtime.state("c1")["bundle"] == str(bundle)


def test_no_pivot_and_no_new_keyring_are_accepted(runtime, bundle):
    bundle.args("echo", "ok")
    result = runtime("run", "--no-pivot", "--no-new-keyring", "--bundle", str(bundle), "r1",
                     stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.stdout == b"ok\n"


def _session_keyrings() -> str:
    with open("/proc/keys") as f:
        return "".join(line for line in f if " _ses." in line)


@pytest.mark.parametrize("flags, joined", [((), True), (("--no-new-keyring",), False)])
def test_create_gives_the_container_its_own_session_keyring(runtime, bundle, flags, joined):
    """As runc: a keyring named _ses.<id>, unless --no-new-keyring."""
    bundle.args("true")
    container_id = f"k{os.getpid()}-{time.monotonic_ns()}"  # keyrings outlive containers
    create(runtime, bundle, container_id, *flags)
    assert (f" _ses.{container_id}:" in _session_keyrings()) is joined


def test_run_with_a_terminal_relays_it(runtime, bundle):
    """runc needs a terminal on stdin for this; capsa relays a pty anyway."""
    bundle.process["terminal"] = True
    bundle.args("sh", "-c", "tty; test -t 1 && echo stdout-is-a-tty")
    result = runtime("run", "--bundle", str(bundle), "r1", stdin=subprocess.DEVNULL)
    assert result.stdout.replace(b"\r\n", b"\n") == b"/dev/pts/0\nstdout-is-a-tty\n"


def test_run_detach_with_a_terminal_needs_a_console_socket(runtime, bundle):
    bundle.process["terminal"] = True
    bundle.args("true")
    result = runtime("run", "-d", "--bundle", str(bundle), "r1", check=False,
                     stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode != 0 and b"console" in result.stderr
    assert runtime.ids() == []


def test_sigterm_stops_a_created_container_as_with_runc(runtime, bundle):
    bundle.args("sleep", "30")
    create(runtime, bundle, "c1")
    runtime("kill", "c1", "TERM")
    wait_status(runtime, "c1", "stopped", timeout=2)


def test_a_bare_state_directory_is_creating_until_forced(runtime):
    """A directory with no state.json yet (create between mkdir and its first write)."""
    os.makedirs(os.path.join(runtime.root, "c1"))
    assert runtime.state("c1")["status"] == "creating"
    assert runtime.state("c1")["pid"] == 0
    assert runtime("delete", "c1", check=False).returncode != 0
    assert runtime.ids() == ["c1"]
    runtime("delete", "--force", "c1")
    assert runtime.ids() == []
