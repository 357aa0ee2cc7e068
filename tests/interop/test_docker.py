"""dockerd (its containerd's runc v2 shim calling the runtime under test,
added with `dockerd --add-runtime interop-NAME=PATH`) running busybox
containers through the docker CLI."""


from images import IMAGE
from probes import CPU_QUOTA, MEMORY_LIMIT, exec_then_stop, pause_unpause, wait_for

# An init that counts into /tmp/count and exits 42 on SIGTERM.


def test_run_rm(docker):
    result = docker.run("--rm", "--hostname", "interop-box", IMAGE, "sh", "-c",
                        'echo "hello from pid $$"; hostname; exit 3', check=False)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["hello from pid 1", "interop-box"], result.stderr


def test_run_as_user_read_only(docker):
    result = docker.run("--rm", "--user", "65534:65534", "--workdir", "/tmp",
                        "--env", "GREETING=hi", "--read-only", "--tmpfs", "/scratch",
                        "--cap-drop", "all", IMAGE,
                        "sh", "-c", 'echo "$(id -u):$(id -g) $(pwd) $GREETING"; '
                        "awk '$2 == \"/\" {split($4, o, \",\"); print o[1]}' /proc/mounts; "
                        "touch /scratch/x && echo scratch-writable; "
                        "grep CapEff /proc/self/status")  # fmt: skip
    assert result.stdout.splitlines() == ["65534:65534 /tmp hi", "ro", "scratch-writable",
                                          "CapEff:\t0000000000000000"], result.stderr  # fmt: skip


def test_detached_exec_stop(docker, name):
    exec_then_stop(docker, name, IMAGE)


def test_memory_limit_oom_kills(docker, name):
    result = docker.run("--name", name, "--memory", "16m", IMAGE, "sh", "-c",
                        f"{MEMORY_LIMIT}; exec tail /dev/zero",
                        check=False)  # fmt: skip
    assert result.stdout.split() == ["16777216"], result.stderr
    assert result.returncode == 137, result.stderr
    state = docker.inspect(name)["State"]
    assert (state["ExitCode"], state["OOMKilled"]) == (137, True), state
    docker("rm", name)


def test_missing_or_unrunnable_program(docker, name):
    """dockerd maps the runtime's error (read by the shim from its --log json)
    to 127 for "no such file or directory", 126 for "permission denied"."""
    missing = docker.run("--rm", IMAGE, "/does-not-exist", check=False)
    assert missing.returncode == 127, missing.stderr
    assert "/does-not-exist" in missing.stderr
    denied = docker.run("--rm", IMAGE, "/etc/passwd", check=False)
    assert denied.returncode == 126, denied.stderr

    docker.run("-d", "--name", name, IMAGE, "sleep", "1000")
    failed = docker("exec", name, "/does-not-exist", check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode == 126, said  # docker exec: 126 for any failed start
    assert "OCI runtime exec failed" in said and "/does-not-exist" in said, said
    docker("rm", "--force", name)


def test_top(docker, name):
    """`docker top` gets the pids from the shim, which asks the runtime's `ps`."""
    docker.run("-d", "--name", name, IMAGE, "sh", "-c", "sleep 1000 & exec sleep 999")
    host_pid = docker.inspect(name)["State"]["Pid"]
    top = wait_for(lambda: (lambda out: out if "sleep 1000" in out else None)(
        docker("top", name, "-o", "pid,args").stdout), what="both sleeps in docker top")
    rows = [line.strip().split(None, 1) for line in top.splitlines()[1:]]
    assert [str(host_pid), "sleep 999"] in rows, top
    docker("rm", "--force", name)


def test_pause_unpause(docker, name):
    pause_unpause(docker, name, IMAGE)


def test_update(docker, name):
    """`docker update`: the shim pipes the resources to the runtime's
    `update --resources -`."""
    docker.run("-d", "--name", name, "--memory", "64m", IMAGE, "sleep", "1000")
    docker("update", "--memory", "32m", "--memory-swap", "64m", "--cpu-quota", "50000", name)
    limits = docker("exec", name, "sh", "-c", f"{MEMORY_LIMIT}; {CPU_QUOTA}")
    assert limits.stdout.split() == [str(32 << 20), "50000"]
    docker("rm", "--force", name)
