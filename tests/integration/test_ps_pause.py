"""ps, pause and resume, and kill --all / delete --force of paused containers.

Each test runs real busybox containers; a container that reports progress
writes to a host directory bind-mounted on its /tmp.
"""

import os
import time

from running import (cgroup_dir, cgroup_pids, create, gone, one_line_error, read, saved_state,
                     shared, start, status, wait_for, wait_status)  # fmt: skip

TWO_SLEEPS = ("sh", "-c", "sleep 60 & exec sleep 61")


# --- ps ------------------------------------------------------------------------------


def test_ps_json_is_the_list_of_host_pids(runtime, bundle):
    pid = start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    out = runtime("ps", "--format", "json", "c1").stdout
    pids = [int(p) for p in out.decode().strip().strip("[]").split(",")]
    assert out == ("[" + ",".join(map(str, sorted(pids))) + "]\n").encode()  # as runc: compact
    assert sorted(pids) == cgroup_pids(runtime, "c1")
    assert pid in pids and os.getpid() not in pids


def test_ps_f_is_format(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    assert runtime("ps", "-f", "json", "c1").stdout == f"[{runtime.state('c1')['pid']}]\n".encode()


def test_ps_table_keeps_the_header_and_the_containers_lines(runtime, bundle):
    start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    lines = runtime("ps", "c1").stdout.decode().splitlines()
    header = lines[0].split()
    assert header[:3] == ["UID", "PID", "PPID"] and header[-1] == "CMD"  # ps -ef
    shown = sorted(int(line.split()[1]) for line in lines[1:])
    assert shown == cgroup_pids(runtime, "c1")
    assert all("sleep 6" in line for line in lines[1:])


def test_ps_passes_ps_options_through(runtime, bundle):
    start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    lines = runtime("ps", "c1", "-o", "pid,comm").stdout.decode().splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    assert sorted(int(line.split()[0]) for line in lines[1:]) == cgroup_pids(runtime, "c1")
    assert {line.split()[1] for line in lines[1:]} == {"sleep"}


def test_ps_of_a_stopped_container_lists_nothing(runtime, bundle):
    """runc prints `null` (a nil list) and a bare header, and succeeds."""
    start(runtime, bundle, "c1", "true")
    wait_status(runtime, "c1", "stopped")
    assert runtime("ps", "--format", "json", "c1").stdout == b"null\n"
    lines = runtime("ps", "c1").stdout.decode().splitlines()
    assert len(lines) == 1 and "PID" in lines[0].split()


def test_ps_of_a_created_container_shows_its_waiting_init(runtime, bundle):
    pid = create(runtime, bundle, "c1", "sleep", "60")
    assert runtime("ps", "--format", "json", "c1").stdout == f"[{pid}]\n".encode()


def test_ps_errors(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    assert "does not exist" in one_line_error(runtime("ps", "nope", check=False))
    assert "invalid format" in one_line_error(runtime("ps", "--format", "xml", "c1",
                                                      check=False))
    error = one_line_error(runtime("ps", "c1", "-o", "comm", check=False))
    assert "couldn't find PID field" in error
    assert "failed to run ps" in one_line_error(runtime("ps", "c1", "--no-such-option",
                                                        check=False))
    assert one_line_error(runtime("ps", check=False))  # no id


# --- pause and resume ----------------------------------------------------------------


def ticking(bundle, tmp_path):
    """A container that appends a line to /tmp/ticks every 20 ms."""
    host = shared(bundle, tmp_path)
    bundle.args("sh", "-c", "while :; do echo t >> /tmp/ticks; sleep 0.02; done")
    return host / "ticks"


def count(path) -> int:
    return len((read(path) or "").splitlines())


def test_pause_freezes_every_process_and_resume_thaws_them(runtime, bundle, tmp_path):
    ticks = ticking(bundle, tmp_path)
    start(runtime, bundle, "c1")
    wait_for(lambda: count(ticks) > 3, what="the container to tick")
    runtime("pause", "c1")
    assert status(runtime, "c1") == "paused"
    assert runtime.state("c1")["pid"] > 0
    freezer = cgroup_dir(runtime, "c1", "freezer")
    assert read(os.path.join(freezer, "freezer.state")).strip() == "FROZEN"
    frozen_at = count(ticks)
    time.sleep(0.3)
    assert count(ticks) == frozen_at
    runtime("resume", "c1")
    assert status(runtime, "c1") == "running"
    assert read(os.path.join(freezer, "freezer.state")).strip() == "THAWED"
    wait_for(lambda: count(ticks) > frozen_at + 3, what="the container to tick again")


def test_list_shows_a_paused_container(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    runtime("pause", "c1")
    rows = runtime("list").stdout.decode().splitlines()
    assert rows[1].split()[:3] == ["c1", str(runtime.state("c1")["pid"]), "paused"]


def test_pause_errors_change_nothing(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    assert "not paused" in one_line_error(runtime("resume", "c1", check=False))
    assert status(runtime, "c1") == "running"
    runtime("pause", "c1")
    assert "already paused" in one_line_error(runtime("pause", "c1", check=False))
    assert status(runtime, "c1") == "paused"
    runtime("resume", "c1")
    assert "does not exist" in one_line_error(runtime("pause", "nope", check=False))
    assert "does not exist" in one_line_error(runtime("resume", "nope", check=False))


def test_pause_and_resume_of_a_stopped_container_are_refused(runtime, bundle):
    start(runtime, bundle, "c1", "true")
    wait_status(runtime, "c1", "stopped")
    assert "not running" in one_line_error(runtime("pause", "c1", check=False))
    assert "not paused" in one_line_error(runtime("resume", "c1", check=False))
    assert status(runtime, "c1") == "stopped"


def test_a_paused_created_container_cannot_start_until_resumed(runtime, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    create(runtime, bundle, "c1", "sh", "-c", "echo ran > /tmp/out; exec sleep 60")
    runtime("pause", "c1")
    assert status(runtime, "c1") == "paused"
    began = time.monotonic()
    assert "paused" in one_line_error(runtime("start", "c1", check=False))
    assert time.monotonic() - began < 5
    runtime("resume", "c1")
    assert status(runtime, "c1") == "created"
    runtime("start", "c1")
    wait_for(lambda: read(host / "out") == "ran\n", what="the program to run")


# --- kill --all and delete --force of running and paused containers -------------------


def test_kill_all_of_a_paused_container_kills_every_process(runtime, bundle):
    start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    pids = cgroup_pids(runtime, "c1")
    runtime("pause", "c1")
    runtime("kill", "--all", "c1", "KILL")
    wait_for(lambda: all(gone(pid) for pid in pids), what="every process to die")
    wait_status(runtime, "c1", "stopped")
    runtime("delete", "c1")
    assert runtime.ids() == []


def test_kill_of_a_paused_containers_init(runtime, bundle):
    pid = start(runtime, bundle, "c1", "sleep", "60")
    runtime("pause", "c1")
    runtime("kill", "c1", "SIGKILL")
    wait_for(lambda: gone(pid), what="the init to die")
    wait_status(runtime, "c1", "stopped")


def test_kill_all_term_of_a_paused_container_waits_for_resume(runtime, bundle, tmp_path):
    """Signals other than KILL stay pending in frozen tasks until they are thawed."""
    host = shared(bundle, tmp_path)
    start(runtime, bundle, "c1", "sh", "-c",
          "trap 'echo term > /tmp/out; exit 0' TERM; touch /tmp/ready; "
          "while :; do sleep 0.02; done")  # fmt: skip
    wait_for(lambda: (host / "ready").exists(), what="the trap to be set")
    runtime("pause", "c1")
    runtime("kill", "--all", "c1", "TERM")
    time.sleep(0.2)
    assert status(runtime, "c1") == "paused" and read(host / "out") is None
    runtime("resume", "c1")
    wait_for(lambda: read(host / "out") == "term\n", what="the trap to run")
    wait_status(runtime, "c1", "stopped")


def test_kill_all_of_a_running_container_with_children(runtime, bundle):
    start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    pids = cgroup_pids(runtime, "c1")
    runtime("kill", "--all", "c1", "9")
    wait_for(lambda: all(gone(pid) for pid in pids), what="every process to die")
    wait_status(runtime, "c1", "stopped")


def test_delete_force_of_a_paused_container(runtime, bundle):
    start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    pids = cgroup_pids(runtime, "c1")
    dirs = list(saved_state(runtime, "c1")["cgroup_paths"].values())
    runtime("pause", "c1")
    assert "not stopped" in one_line_error(runtime("delete", "c1", check=False))
    assert status(runtime, "c1") == "paused"
    began = time.monotonic()
    runtime("delete", "--force", "c1")
    assert time.monotonic() - began < 5
    assert runtime.ids() == []
    assert all(gone(pid) for pid in pids)
    assert not any(os.path.isdir(d) for d in dirs)


def test_delete_force_of_a_paused_created_container(runtime, bundle):
    pid = create(runtime, bundle, "c1", "sleep", "60")
    runtime("pause", "c1")
    runtime("delete", "--force", "c1")
    assert runtime.ids() == [] and gone(pid)


def test_delete_force_of_a_running_container_with_children(runtime, bundle):
    start(runtime, bundle, "c1", *TWO_SLEEPS)
    wait_for(lambda: len(cgroup_pids(runtime, "c1")) == 2, what="two processes")
    pids = cgroup_pids(runtime, "c1")
    runtime("delete", "-f", "c1")
    assert runtime.ids() == [] and all(gone(pid) for pid in pids)
