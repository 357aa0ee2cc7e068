"""containerd (its runc v2 shim calling the runtime under test, given as
`ctr run --runc-binary PATH`) running busybox containers through ctr."""

import json
import subprocess
import time

from probes import counter, drive_terminal, frozen, wait_for

# An init that counts into /tmp/count (read from the host through
# /proc/PID/root), says when it started, and exits 42 on SIGTERM.
LOOP = ('trap "exit 42" TERM; echo ready; i=0; '
        'while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done')  # fmt: skip


def start_detached(ctr, name: str, *options: str) -> int:
    """`ctr run -d` the LOOP; return its init's host pid once it counts."""
    ctr.run(name, "sh", "-c", LOOP, options=("-d", *options))
    pid = int(ctr.task(name)["PID"])
    wait_for(lambda: counter(pid), what="the container's loop")
    return pid


def task_pids(ctr, name: str) -> list[int]:
    """The host pids `ctr task ps` lists (the shim asks the runtime's `ps`)."""
    lines = ctr("task", "ps", name).stdout.splitlines()[1:]
    return [int(line.split()[0]) for line in lines if line.strip()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def remove(ctr, name: str) -> None:
    """Kill the task, delete it and the container."""
    ctr("task", "kill", "--signal", "SIGKILL", name)
    wait_for(lambda: ctr.task(name)["STATUS"] == "STOPPED", what="the task to stop")
    ctr("task", "delete", name)
    ctr("containers", "rm", name)


def test_run_rm(ctr, name):
    result = ctr.run(name, "sh", "-c", 'echo "hello from pid $$"; exit 3', options=("--rm",),
                     check=False)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["hello from pid 1"], result.stderr


def test_task_exec(ctr, name):
    start_detached(ctr, name)
    seen = ctr.exec(name, "see", "sh", "-c", "cat /proc/1/cmdline; echo; echo $$")
    init_cmdline, exec_pid = seen.stdout.splitlines()
    assert "trap" in init_cmdline and exec_pid != "1", seen.stdout
    cgroups = ctr.exec(name, "cgroups", "sh", "-c",
                       "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup")  # fmt: skip
    of_init, of_exec = cgroups.stdout.split("--\n")
    assert sorted(of_exec.split()) == sorted(of_init.split()), cgroups.stdout

    who = ctr.exec(name, "who", "sh", "-c", 'echo "$(id -u) $(pwd)"',
                   options=("--user", "65534", "--cwd", "/tmp"))  # fmt: skip
    assert who.stdout.strip() == "65534 /tmp"
    status = ctr.exec(name, "status", "sh", "-c", "exit 5", check=False)
    assert status.returncode == 5, status.stderr

    # a terminal: ctr takes it from its own stdin, the shim gets the pty master
    output, code = drive_terminal(ctr.exec_argv(name, "tty", "tty", options=("--tty",)))
    assert code == 0, output
    assert output.strip().startswith(b"/dev/pts/"), output

    # `ctr task ps`: the shim asks the runtime (`ps --format json`)
    assert int(ctr.task(name)["PID"]) in task_pids(ctr, name)
    remove(ctr, name)


def test_task_kill(ctr, name, tmp_path):
    # an attached `ctr run` ends with its task: kill with SIGTERM (the default)
    runner = subprocess.Popen(ctr.run_argv(name, "sh", "-c", LOOP, options=("--rm",)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert runner.stdout.readline() == "ready\n"
        ctr("task", "kill", name)
        assert runner.wait(30) == 42, runner.stderr.read()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    # --all signals every process of the container: SIGUSR1, which its init
    # (pid 1, no handler) ignores, ends an exec'd process; and only those: a
    # process of ours outside the container must not get it
    start_detached(ctr, f"{name}-all")
    ctr.exec(f"{name}-all", "sleeper", "sleep", "1000", options=("--detach",))
    (sleeper,) = wait_for(lambda: [p for p in task_pids(ctr, f"{name}-all")
                                   if cmdline(p) == "sleep 1000"], what="the exec'd sleep")
    outside = tmp_path / "outside-got-usr1"
    bystander = subprocess.Popen(["sh", "-c", f"trap 'touch {outside}; exit' USR1; "
                                  "while :; do sleep 0.1; done"])  # fmt: skip
    try:
        ctr("task", "kill", "--all", "--signal", "SIGUSR1", f"{name}-all")
        wait_for(lambda: not alive(sleeper), what="the exec'd process to die")
        assert ctr.task(f"{name}-all")["STATUS"] == "RUNNING"
        time.sleep(0.2)
        assert not outside.exists(), "kill --all signalled a process outside the container"
    finally:
        bystander.kill()
        bystander.wait()
    remove(ctr, f"{name}-all")


def test_task_pause_resume(ctr, name):
    pid = start_detached(ctr, name)
    ctr("task", "pause", name)
    assert ctr.task(name)["STATUS"] == "PAUSED"
    assert frozen(pid)
    count = counter(pid)
    time.sleep(0.3)
    assert counter(pid) == count, "the paused container kept running"

    ctr("task", "resume", name)
    assert ctr.task(name)["STATUS"] == "RUNNING"
    assert not frozen(pid)
    wait_for(lambda: counter(pid) > count, what="the loop to go on after resume")
    remove(ctr, name)


def test_task_metrics(ctr, name):
    ctr.run(name, "sleep", "999", options=("-d", "--memory-limit", str(64 << 20)))
    ctr.exec(name, "sleeper", "sleep", "1000", options=("--detach",))
    metrics = json.loads(ctr("task", "metrics", "--format", "json", name).stdout)
    memory, pids = metrics["memory"], metrics["pids"]
    if "usage_limit" in memory:  # cgroup v2 metrics
        limit, usage, cpu = memory["usage_limit"], memory["usage"], metrics["cpu"]["usage_usec"]
    else:
        limit, usage = memory["usage"]["limit"], memory["usage"]["usage"]
        cpu = metrics["cpu"]["usage"]["total"]
    assert limit == 64 << 20, metrics
    assert usage > 0 and cpu > 0, metrics
    assert pids["current"] == 2, metrics
    remove(ctr, name)


def test_missing_program(ctr, name):
    """The shim reports the runtime's error from its --log json file."""
    result = ctr.run(name, "/does-not-exist", options=("--rm",), check=False)
    assert result.returncode != 0
    assert "OCI runtime create failed" in result.stderr, result.stderr
    assert "/does-not-exist" in result.stderr, result.stderr
    if name in ctr.container_ids():  # ctr run --rm keeps a container whose task failed
        ctr("containers", "rm", name)

    start_detached(ctr, name)
    failed = ctr.exec(name, "missing", "/does-not-exist", check=False)
    assert failed.returncode != 0
    assert "OCI runtime exec failed" in failed.stderr, failed.stderr
    assert "/does-not-exist" in failed.stderr, failed.stderr
    remove(ctr, name)


def test_task_delete_force(ctr, name):
    """`ctr task delete --force` of a running and of a paused task: the shim
    kills every process (`kill --all ... 9`), then deletes."""
    for state, suffix in (("RUNNING", "running"), ("PAUSED", "paused")):
        container = f"{name}-{suffix}"
        start_detached(ctr, container)
        ctr.exec(container, "sleeper", "sleep", "1000", options=("--detach",))
        pids = wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(
            task_pids(ctr, container)), what="the init and the exec'd sleep")
        if state == "PAUSED":
            ctr("task", "pause", container)
        assert ctr.task(container)["STATUS"] == state
        ctr("task", "delete", "--force", container, timeout=30)
        assert container not in ctr("task", "ls", "-q").stdout.split()
        assert not [pid for pid in pids if alive(pid)]
        ctr("containers", "rm", container)
