"""`capsa run` and the container lifecycle, end to end as a Docker user
types them: real containers from busybox:latest, each under a capsa-shim."""

import json
import os
import subprocess
import time

import pytest
from waiting import wait_for

from capsa.engine import shim

pytestmark = pytest.mark.root


def test_run_rm_prints_output_and_returns_the_exit_code(capsa):
    result = capsa("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert capsa("ps", "-aq").stdout == ""


def test_only_a_container_run_with_rm_has_a_volatile_rootfs(capsa):
    show_root = ["sh", "-c", "grep '^overlay / ' /proc/mounts"]
    assert "volatile" in capsa("run", "--rm", "busybox", *show_root).stdout  # (newer kernels say fsync=volatile)
    assert "volatile" not in capsa("run", "--name", "kept", "busybox", *show_root).stdout
    capsa("rm", "kept")


def test_detached_run_ps_logs_stop_rm(capsa):
    cid = capsa("run", "-d", "--name", "web", "busybox", "sh", "-c",
                "trap 'echo bye; exit 0' TERM; echo hello; while true; do sleep 0.1; done").stdout.strip()
    assert len(cid) == 64
    assert capsa("ps", "-q").stdout.split() == [cid[:12]]
    deadline = time.monotonic() + 5
    while "hello" not in capsa("logs", "web").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert capsa("logs", "web").stdout == "hello\n"
    assert "You cannot remove a running container" in capsa.fails("rm", "web")
    assert capsa("stop", "web").stdout == "web\n"
    info = json.loads(capsa("inspect", "web").stdout)[0]
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 0
    assert capsa("logs", "web").stdout == "hello\nbye\n"
    assert "Exited (0)" in capsa("ps", "-a").stdout
    assert capsa("rm", "web").stdout == "web\n"


def test_unknown_command_and_image_exit_codes(capsa):
    assert "not found" in capsa.fails("run", "--rm", "busybox", "no-such-program", code=127)
    assert "connection refused" in capsa.fails("run", "--rm", "127.0.0.1:1/nosuch", code=125)
    assert capsa("ps", "-aq").stdout == ""
    # The shims `run` started ahead are gone: let go unused, or (the shim of
    # the program not found) ended once it had answered.
    left = lambda: shim.pids_under(capsa.state)  # noqa: E731
    wait_for(lambda: not left(), 5, f"the failed runs' shims to end: {[_cmdline(pid) for pid in left()]}")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"


def test_a_state_dir_too_long_for_a_socket_is_refused(capsa):
    long_state = "/run/" + "x" * 60
    result = subprocess.run(capsa.argv("run", "--rm", "busybox", "true"), capture_output=True, text=True,
                            env=dict(capsa.env, CAPSA_STATE=long_state))  # fmt: skip
    assert result.returncode == 125 and "too long" in result.stderr, result.stderr
    assert capsa("ps", "-aq").stdout == "" and not os.path.exists(long_state)


def test_wait_prints_each_exit_code(capsa):
    capsa("run", "-d", "--name", "three", "busybox", "sh", "-c", "exit 3")
    capsa("run", "-d", "--name", "zero", "busybox", "true")
    result = capsa("wait", "three", "zero", "absent", check=False)
    assert (result.returncode, result.stdout) == (1, "3\n0\n")
    assert "No such container: absent" in result.stderr


def test_inspect_finds_containers_images_and_volumes(capsa):
    capsa("create", "--name", "looked-at", "-v", "seen:/data", "busybox", "true")
    found = json.loads(capsa("inspect", "looked-at", "busybox").stdout)
    assert found[0]["Name"] == "/looked-at" and found[1]["RepoTags"] == ["busybox:latest"]
    missing = capsa("inspect", "looked-at", "nothere", check=False)
    assert missing.returncode == 1 and len(json.loads(missing.stdout)) == 1
    assert missing.stderr == "capsa: no such object: nothere\n"
    assert json.loads(capsa("volume", "inspect", "seen").stdout)[0]["Name"] == "seen"
    assert capsa.fails("volume", "inspect", "unseen") == "capsa: no such volume: unseen"
    capsa("rm", "looked-at")
    capsa("volume", "rm", "seen")
