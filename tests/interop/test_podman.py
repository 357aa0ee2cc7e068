"""podman (daemonless, conmon as the monitor) running busybox containers
with the runtime under test as `podman --runtime PATH`."""

import json
import os
import stat

from images import IMAGE
from probes import (CPU_QUOTA, CPUSET, MEMORY_LIMIT, PIDS_LIMIT, drive_terminal,
                    exec_then_stop, pause_unpause, wait_for)

# An init that counts into /tmp/count (read from the host through
# /proc/PID/root) and exits 42 on SIGTERM.


def test_run_rm(podman):
    result = podman.run("--rm", "--hostname", "interop-box", IMAGE, "sh", "-c",
                        'echo "hello from pid $$"; hostname; exit 3', check=False)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["hello from pid 1", "interop-box"], result.stderr


def test_run_as_user_read_only(podman):
    """The init's user, directory and environment; a read-only rootfs with a
    fresh tmpfs (tmpcopyup) that user can write to; no capabilities."""
    result = podman.run("--rm", "--user", "65534:65534", "--workdir", "/tmp",
                        "--env", "GREETING=hi", "--read-only", "--tmpfs", "/scratch",
                        "--cap-drop", "all", IMAGE,
                        "sh", "-c", 'echo "$(id -u):$(id -g) $(pwd) $GREETING"; '
                        "awk '$2 == \"/\" {split($4, o, \",\"); print o[1]}' /proc/mounts; "
                        "touch /scratch/x && echo scratch-writable; "
                        "grep CapEff /proc/self/status")  # fmt: skip
    assert result.stdout.splitlines() == ["65534:65534 /tmp hi", "ro", "scratch-writable",
                                          "CapEff:\t0000000000000000"], result.stderr  # fmt: skip


def test_resources_and_init(podman):
    result = podman.run("--rm", "--cpus", "0.5", "--cpuset-cpus", "0", "--oom-score-adj", "100",
                        "--init", IMAGE, "sh", "-c",
                        f"{CPU_QUOTA}; {CPUSET}; cat /proc/self/oom_score_adj; "
                        "cat /proc/1/cmdline | tr '\\0' ' '")  # fmt: skip
    quota, cpus, oom_score_adj, init = result.stdout.split("\n", 3)
    assert (quota, cpus, oom_score_adj) == ("50000", "0", "100"), result.stdout
    assert init.startswith("/run/podman-init -- sh -c"), result.stdout


def test_privileged(podman):
    """Every capability, every host device, no seccomp, /sys writable."""
    with open("/proc/self/status") as f:
        bounding = next(line for line in f if line.startswith("CapBnd:")).split()[1]
    # a host device podman only passes to privileged containers
    device = next((f"/dev/{d}" for d in ("loop-control", "kmsg", "cpu_dma_latency", "autofs")
                   if os.path.exists(f"/dev/{d}")
                   and stat.S_ISCHR(os.stat(f"/dev/{d}", follow_symlinks=False).st_mode)),
                  "/dev/null")  # fmt: skip
    result = podman.run("--rm", "--privileged", IMAGE, "sh", "-c",
                        "grep -E '^(CapEff|Seccomp):' /proc/self/status; "
                        f"test -c {device} && echo host-device; "
                        "grep ' /sys sysfs rw' /proc/mounts >/dev/null && echo sys-rw")  # fmt: skip
    assert result.stdout.split() == ["CapEff:", bounding, "Seccomp:", "0", "host-device",
                                     "sys-rw"], result.stderr  # fmt: skip


def test_volume_and_sysctl(podman, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "from-host").write_text("host\n")
    result = podman.run("--rm", "--volume", f"{volume}:/data", "--sysctl",
                        "net.ipv4.ping_group_range=0 0", IMAGE, "sh", "-c",
                        "cat /data/from-host; echo container > /data/from-container; "
                        "cat /proc/sys/net/ipv4/ping_group_range")  # fmt: skip
    assert result.stdout.split() == ["host", "0", "0"], result.stderr
    assert (volume / "from-container").read_text() == "container\n"


def test_user_namespace(podman, name):
    podman.run("-d", "--name", name, "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536",
               IMAGE, "sleep", "1000")  # fmt: skip
    pid = podman.inspect(name)["State"]["Pid"]
    with open(f"/proc/{pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == ["100000"] * 4
    inside = podman("exec", name, "sh", "-c",
                    "cat /proc/self/uid_map; id -u; touch /bin/x && echo ok")  # fmt: skip
    assert inside.stdout.split() == ["0", "100000", "65536", "0", "ok"], inside.stderr
    # stop, then rm: podman 4.3's `rm --force` races the cleanup conmon starts
    # at exit and can fail with "unlinkat .../userdata/shm: device or resource
    # busy" whatever the runtime (seen with runc; podman#11594, fixed in 4.4).
    podman("stop", "--time", "0", name)
    podman("rm", name)


def test_detached_exec_stop_rm(podman, name):
    exec_then_stop(podman, name, IMAGE)


def test_run_interactive_terminal(podman):
    argv = podman.run_argv("-it", "--rm", IMAGE, "sh")
    output, status = drive_terminal(argv, env=podman.env, after=b"# ", size=(33, 101),
                                    send=b"echo hi$((1+1)); tty; stty size; exit 7\n")  # fmt: skip
    assert status == 7, output
    lines = output.replace(b"\r", b"").splitlines()
    assert b"hi2" in lines and b"/dev/pts/0" in lines, output
    assert b"33 101" in lines, output  # process.consoleSize, or conmon's resize


def test_exec_interactive_terminal(podman, name):
    podman.run("-d", "--name", name, IMAGE, "sleep", "1000")
    output, status = drive_terminal(podman.argv("exec", "-it", name, "sh"), env=podman.env,
                                    after=b"# ", size=(29, 97),
                                    send=b"echo hi$((1+1)); tty; stty size; exit 6\n")  # fmt: skip
    assert status == 6, output
    lines = output.replace(b"\r", b"").splitlines()
    assert b"hi2" in lines and b"29 97" in lines, output
    assert any(line.startswith(b"/dev/pts/") for line in lines), output
    podman("rm", "--force", "--time", "0", name)


def test_pause_unpause(podman, name):
    pause_unpause(podman, name, IMAGE, "--time", "0")


def test_memory_limit_oom_kills(podman, name):
    result = podman.run("--name", name, "--memory", "16m", IMAGE, "sh", "-c",
                        f"{MEMORY_LIMIT}; exec tail /dev/zero",
                        check=False)  # fmt: skip
    assert result.stdout.split() == ["16777216"], result.stderr
    assert result.returncode == 137, result.stderr
    state = podman.inspect(name)["State"]
    assert state["ExitCode"] == 137
    podman("rm", name)


def test_update(podman, name):
    """`podman update` hands the runtime `update --resources=FILE`."""
    podman.run("-d", "--name", name, "--memory", "64m", IMAGE, "sleep", "1000")
    podman("update", "--memory", "32m", "--cpu-quota", "50000", name)
    limits = podman("exec", name, "sh", "-c", f"{MEMORY_LIMIT}; {CPU_QUOTA}")
    assert limits.stdout.split() == [str(32 << 20), "50000"]
    podman("rm", "--force", "--time", "0", name)


# more sleeps than the low limit allows, fewer than the high one
SPAWN = f"{PIDS_LIMIT}; for i in $(seq 24); do sleep 2 & done; echo spawned"


def test_pids_limit(podman):
    # The low limit leaves room for runc's init: its Go threads count against
    # pids.max until it execs, and at 5 it sometimes failed in pthread_create.
    # busybox sh gives up at the first fork refused.
    limited = podman.run("--rm", "--pids-limit", "16", IMAGE, "sh", "-c", SPAWN, check=False)
    assert limited.stdout.split() == ["16"], (limited.stdout, limited.stderr)
    assert "can't fork" in limited.stderr, limited.stderr
    roomy = podman.run("--rm", "--pids-limit", "40", IMAGE, "sh", "-c", SPAWN)
    assert roomy.stdout.split() == ["40", "spawned"]
    assert "can't fork" not in roomy.stderr, roomy.stderr


def test_top(podman, name):
    podman.run("-d", "--name", name, IMAGE, "sh", "-c", "sleep 1000 & exec sleep 999")
    host_pid = podman.inspect(name)["State"]["Pid"]
    lines = podman("top", name, "pid", "hpid", "args").stdout.splitlines()
    rows = [line.strip().split(None, 2) for line in lines[1:]]
    assert ["1", str(host_pid), "sleep 999"] in rows, lines
    assert any(row[2] == "sleep 1000" for row in rows), lines
    podman("rm", "--force", "--time", "0", name)


def test_stats_no_stream(podman, name):
    podman.run("-d", "--name", name, "--memory", "64m", IMAGE, "sh", "-c",
               "sleep 1000 & exec sleep 999")  # fmt: skip

    def stats() -> dict:
        (found,) = json.loads(podman("stats", "--no-stream", "--format", "json", name).stdout)
        return found

    found = wait_for(lambda: (lambda s: s if s["pids"] == "2" else None)(stats()),
                     what="2 processes in the stats")  # fmt: skip
    usage, limit = found["mem_usage"].split(" / ")
    assert limit == "67.11MB", found
    assert not usage.startswith("0B"), found
    podman("rm", "--force", "--time", "0", name)


def test_missing_or_unrunnable_program(podman, name):
    """podman reads the runtime's --log-format=json error and maps "no such
    file or directory" to 127 and "permission denied" to 126, as for runc."""
    missing = podman.run("--rm", IMAGE, "/does-not-exist", check=False)
    assert missing.returncode == 127, missing.stderr
    not_in_path = podman.run("--rm", IMAGE, "does-not-exist", check=False)
    assert not_in_path.returncode == 127, not_in_path.stderr
    denied = podman.run("--rm", IMAGE, "/etc/passwd", check=False)
    assert denied.returncode == 126, denied.stderr

    podman.run("-d", "--name", name, IMAGE, "sleep", "1000")
    missing = podman("exec", name, "/does-not-exist", check=False)
    assert missing.returncode == 127, missing.stderr
    denied = podman("exec", name, "/etc/passwd", check=False)
    assert denied.returncode == 126, denied.stderr
    podman("rm", "--force", "--time", "0", name)
