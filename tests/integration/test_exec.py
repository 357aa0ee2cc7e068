"""exec: a process in a running container, and what it must not give away."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

INTERPRETER = "/usr/local/lib/capsa/python3"


@pytest.fixture
def running(runtime, bundle):
    """A running `sleep` container named c1."""
    bundle.args("sleep", "60")
    runtime("run", "--detach", "--bundle", str(bundle), "c1")
    assert runtime.state("c1")["status"] == "running"
    return runtime


def test_exec_runs_in_every_namespace_of_the_container(running):
    pid = running.state("c1")["pid"]
    out = running("exec", "c1", "sh", "-c",
                  "for n in pid net ipc uts mnt; do readlink /proc/self/ns/$n; done").stdout  # fmt: skip
    for kind, name in zip(["pid", "net", "ipc", "uts", "mnt"], out.decode().split()):
        assert name == os.readlink(f"/proc/{pid}/ns/{kind}")


def test_exec_sees_the_containers_processes_and_cgroup(running):
    out = running("exec", "c1", "sh", "-c", "echo $$; cat /proc/1/cmdline; echo; "
                                           "grep pids /proc/self/cgroup").stdout.decode()  # fmt: skip
    own_pid, init_cmdline, cgroup = out.split("\n")[:3]
    assert int(own_pid) > 1
    assert init_cmdline.replace("\0", " ").strip() == "sleep 60"
    pid = running.state("c1")["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        init_cgroup = next(line for line in f.read().splitlines() if ":pids:" in line)
    assert cgroup == init_cgroup


def test_exec_exit_code_and_output(running):
    result = running("exec", "c1", "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (4, b"out\n", b"err\n")


def test_exec_flags_user_cwd_env_caps_nnp(running):
    out = running("exec", "--user", "1000:1001", "-g", "5", "--cwd", "/tmp", "-e", "A=b",
                  "--cap", "CAP_SYS_TIME", "--no-new-privs", "c1", "sh", "-c",
                  "id -u; id -g; id -G; pwd; echo $A; grep -E 'CapBnd|NoNewPrivs' /proc/self/status",
                  ).stdout.decode().split("\n")  # fmt: skip
    assert out[:5] == ["1000", "1001", "1001 5", "/tmp", "b"]
    bounding = int(out[5].split()[1], 16)
    assert bounding & (1 << 25)  # CAP_SYS_TIME added to the container's set
    assert out[6].split() == ["NoNewPrivs:", "1"]


def test_exec_process_json(running, tmp_path):
    import json

    process = {"args": ["sh", "-c", "echo $WHO; pwd"], "cwd": "/dev", "env": ["WHO=json"],
               "user": {"uid": 0, "gid": 0}, "terminal": False}  # fmt: skip
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    assert running("exec", "--process", str(path), "c1").stdout == b"json\n/dev\n"


def test_exec_detach_and_pid_file(running, tmp_path):
    pid_file = tmp_path / "exec.pid"
    running("exec", "--detach", "--pid-file", str(pid_file), "c1", "sleep", "30")
    pid = int(pid_file.read_text())
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
    assert len(nspid) == 2 and nspid[1] != "1"  # inside the container's pid namespace


def test_exec_with_console_socket(running, tmp_path):
    path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        proc = subprocess.Popen(running.argv("exec", "--tty", "--console-socket", path, "c1",
                                             "sh", "-c", "tty; test -t 0 && echo is-a-tty"))  # fmt: skip
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
    master = fds[0]
    output = b""
    deadline = time.monotonic() + 10
    # Read until the shell has exited (EIO once no slave is open): closing the
    # master earlier would hang up the shell (SIGHUP, exit 129).
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait(timeout=10) == 0
    assert b"/dev/pts/" in output and b"is-a-tty" in output


def test_exec_errors(runtime, bundle):
    assert b"does not exist" in runtime("exec", "nope", "true", check=False).stderr
    bundle.args("true")
    runtime("run", "--detach", "--bundle", str(bundle), "done")
    deadline = time.monotonic() + 10
    while runtime.state("done")["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    result = runtime("exec", "done", "true", check=False)
    assert result.returncode != 0 and b"stopped" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_exec_missing_program_or_bad_process_json(running, tmp_path):
    result = running("exec", "c1", "/no/such/program", check=False)
    assert result.returncode != 0 and b"/no/such/program" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = running("exec", "--process", str(bad), "c1", check=False)
    assert result.returncode != 0 and len(result.stderr.splitlines()) == 1
    result = running("exec", "-u", "root", "c1", "true", check=False)
    assert result.returncode != 0 and b"--user" in result.stderr


def test_exec_in_a_paused_container_is_refused(running):
    cgroup = f"/sys/fs/cgroup/freezer{_freezer_path(running)}"
    with open(f"{cgroup}/freezer.state", "w") as f:
        f.write("FROZEN")
    try:
        result = running("exec", "c1", "true", check=False)
        assert result.returncode != 0 and b"paused" in result.stderr
    finally:
        with open(f"{cgroup}/freezer.state", "w") as f:
            f.write("THAWED")


def _freezer_path(runtime) -> str:
    pid = runtime.state("c1")["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line for line in f.read().splitlines() if ":freezer:" in line).split(":")[2]


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_runtimes_interpreter_cannot_be_written():
    """runc CVE-2019-5736: whatever handle a container gets on the binary the
    runtime runs on (through /proc/<pid>/exe), it must not be able to write
    it. The private interpreter is immutable: not even root may open it for
    writing without CAP_LINUX_IMMUTABLE, which containers do not get."""
    if not os.path.exists(INTERPRETER):
        pytest.skip("capsa-runtime is not installed with its private interpreter")
    with open(shutil.which("capsa-runtime")) as f:
        assert f.readline().startswith(f"#!{INTERPRETER} ")
    for mode in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(PermissionError):
            os.open(INTERPRETER, mode)
    with pytest.raises(PermissionError):
        os.rename(INTERPRETER, INTERPRETER + ".moved")


@pytest.mark.parametrize("kind", ["script", "symlink"])
def test_a_container_cannot_run_the_runtimes_binary(runtime, bundle, tmp_path, kind):
    """The classic way in: a container program that is `#!/proc/self/exe` (or a
    symlink to it) makes the kernel exec the runtime's own binary inside the
    container. Here that would be host Python, running the image's
    sitecustomize. It must not run, or must not get a writable binary."""
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(bundle.rootfs), str(rootfs)], check=True)
    lib = rootfs / f"usr/lib/python3.{sys.version_info.minor}"
    shutil.copytree(os.path.join(os.path.dirname(os.__file__), "encodings"), lib / "encodings")
    (lib / "sitecustomize.py").write_text(
        "import os\n"
        "open('/log/ran', 'w').write(os.readlink('/proc/self/exe'))\n"
        "try:\n"
        "    os.open('/proc/self/exe', os.O_WRONLY | os.O_APPEND)\n"
        "    open('/log/wrote', 'w').write('pwned')\n"
        "except OSError as err:\n"
        "    open('/log/refused', 'w').write(str(err))\n")  # fmt: skip
    if kind == "script":
        (rootfs / "evil").write_text("#!/proc/self/exe\n")
        (rootfs / "evil").chmod(0o755)
    else:
        os.symlink("/proc/self/exe", rootfs / "evil")
    log = tmp_path / "log"
    log.mkdir()
    bundle.config["root"] = {"path": str(rootfs), "readonly": False}
    bundle.config["mounts"].append({"destination": "/log", "type": "bind", "source": str(log),
                                    "options": ["rbind"]})  # fmt: skip
    bundle.args("sleep", "60")
    binaries = [os.path.realpath(sys.executable)]
    binaries += [INTERPRETER] if os.path.exists(INTERPRETER) else []
    before = {path: sha256(path) for path in binaries}
    runtime("run", "--detach", "--bundle", str(bundle), "cve")
    runtime("exec", "cve", "/evil", check=False, stdin=subprocess.DEVNULL)
    # Either the kernel refuses to exec a magic link from inside the
    # container (Linux 6.x does), or the binary it ran is not writable.
    assert not (log / "wrote").exists()
    if (log / "ran").exists():
        assert (log / "refused").exists()
    assert {path: sha256(path) for path in before} == before


def test_the_entering_process_is_not_reachable_from_the_container(running):
    """CVE-2016-9962: while exec's process is inside the container but still
    the host's Python, container processes must not open its /proc files."""
    script = ("for i in $(seq 200); do for p in /proc/[0-9]*; do "
              "[ -r $p/exe ] || continue; n=${p#/proc/}; [ $n = 1 ] || [ $n = $$ ] && continue; "
              "readlink $p/root; done; done > /dev/shm/seen 2>/dev/null")  # fmt: skip
    running("exec", "--detach", "c1", "sh", "-c", script)
    for _ in range(5):
        running("exec", "c1", "true")
    time.sleep(0.5)
    seen = running("exec", "c1", "cat", "/dev/shm/seen").stdout.decode()
    assert "tmp" not in seen and "work" not in seen  # never the host's root
