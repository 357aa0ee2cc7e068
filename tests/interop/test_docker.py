"""dockerd (its containerd's runc v2 shim calling the runtime under test,
added with `dockerd --add-runtime interop-NAME=PATH`) running busybox
containers through the docker CLI."""

import time

from images import IMAGE
from probes import CPU_QUOTA, MEMORY_LIMIT, counter, frozen, wait_for

# An init that counts into /tmp/count and exits 42 on SIGTERM.
LOOP = 'trap "exit 42" TERM; i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done'


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
    docker.run("-d", "--name", name, IMAGE, "sh", "-c", LOOP)
    init_pid = docker.inspect(name)["State"]["Pid"]
    wait_for(lambda: counter(init_pid), what="the container's loop")

    seen = docker("exec", name, "sh", "-c", "cat /proc/1/cmdline; echo; echo $$")
    init_cmdline, exec_pid = seen.stdout.splitlines()
    assert "trap" in init_cmdline and exec_pid != "1", seen.stdout
    cgroups = docker("exec", name, "sh", "-c", "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup")
    of_init, of_exec = cgroups.stdout.split("--\n")
    assert sorted(of_exec.split()) == sorted(of_init.split()), cgroups.stdout

    who = docker("exec", "--user", "65534:65534", "--workdir", "/tmp", "--env", "GREETING=hi",
                 name, "sh", "-c", 'echo "$(id -u):$(id -g) $(pwd) $GREETING"')  # fmt: skip
    assert who.stdout.strip() == "65534:65534 /tmp hi"
    assert docker("exec", name, "sh", "-c", "exit 5", check=False).returncode == 5
    tty = docker("exec", "--tty", name, "tty")
    assert tty.stdout.strip().startswith("/dev/pts/"), tty.stdout

    started = time.monotonic()
    docker("stop", "--time", "10", name)
    assert time.monotonic() - started < 8, "SIGTERM did not end the init: stop waited for SIGKILL"
    state = docker.inspect(name)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 42)
    docker("rm", name)


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
    docker.run("-d", "--name", name, IMAGE, "sh", "-c", LOOP)
    pid = docker.inspect(name)["State"]["Pid"]
    wait_for(lambda: counter(pid), what="the container's loop")

    docker("pause", name)
    assert docker.inspect(name)["State"]["Status"] == "paused"
    assert frozen(pid)
    count = counter(pid)
    time.sleep(0.3)
    assert counter(pid) == count, "the paused container kept running"

    docker("unpause", name)
    assert docker.inspect(name)["State"]["Status"] == "running"
    assert not frozen(pid)
    wait_for(lambda: counter(pid) > count, what="the loop to go on after unpause")

    docker("pause", name)
    docker("rm", "--force", name)  # a paused container


def test_update(docker, name):
    """`docker update`: the shim pipes the resources to the runtime's
    `update --resources -`."""
    docker.run("-d", "--name", name, "--memory", "64m", IMAGE, "sleep", "1000")
    docker("update", "--memory", "32m", "--memory-swap", "64m", "--cpu-quota", "50000", name)
    limits = docker("exec", name, "sh", "-c", f"{MEMORY_LIMIT}; {CPU_QUOTA}")
    assert limits.stdout.split() == [str(32 << 20), "50000"]
    docker("rm", "--force", name)
