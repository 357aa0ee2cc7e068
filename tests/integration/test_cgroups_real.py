"""The cgroup drivers on this host's real cgroups (root): limits, freezer, OOM, BPF devices.

Every test runs its own short-lived child processes in a cgroup with a
relative cgroupsPath, so in a hierarchy where this session lives in a
sub-cgroup (memory here) the children stay below it. Teardown kills the
children it started, removes the cgroups and checks nothing is left.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from capsa.errors import InvalidArgument
from capsa.runtime import cgroups
from capsa.runtime.cgroups import devices_bpf, load_manager, new_manager

MODE = cgroups.host_mode()

# Waits for a line on stdin (sent once it is in the cgroup), then reports
# which of /dev/null and /dev/zero it may open, burns cpu, or allocates memory.
CHILD = r"""
import os, sys
command = sys.stdin.readline().strip()
if command == "devices":
    for path in ("/dev/null", "/dev/zero"):
        try:
            os.close(os.open(path, os.O_RDONLY))
            print(path, "ok", flush=True)
        except OSError as err:
            print(path, err.strerror, flush=True)
elif command == "spin":
    import time
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass
    print("spun", flush=True)
elif command == "eat":
    hog = b"x" * (256 << 20)
    print("survived", flush=True)
else:
    sys.stdin.read()
"""


@pytest.fixture
def container(request):
    """make() -> (manager, child Popen); every child and cgroup is gone afterwards."""
    made = []

    def make(name=None):
        name = name or f"capsa-test-{os.getpid()}-{len(made)}"
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        mgr = new_manager(f"{name}", name)  # relative: below this session's cgroups
        made.append((mgr, child))
        mgr.apply(child.pid)
        return mgr, child

    yield make
    for mgr, child in made:
        if mgr.exists() and mgr.frozen():
            mgr.thaw()
        if child.poll() is None:
            child.kill()
        child.wait()
        mgr.destroy()
        assert not mgr.exists()
        assert not any(os.path.exists(path) for path in mgr.paths().values())


def test_mode_is_detected():
    assert MODE in ("v1", "hybrid", "v2")
    if os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        assert MODE == "hybrid"


def read(mgr, controller, name):
    with open(os.path.join(mgr.paths()[controller], name)) as file:
        return file.read().strip()


def test_apply_moves_the_child_into_every_hierarchy(container):
    mgr, child = container()
    paths = mgr.paths()
    for controller, directory in paths.items():
        assert os.path.isdir(directory), controller
        assert str(child.pid) in read(mgr, controller, "cgroup.procs").split(), controller
    if MODE == "hybrid":
        assert "unified" in paths and "memory" in paths
    assert mgr.pids() == [child.pid]
    assert load_manager(json.loads(json.dumps(paths))).pids() == [child.pid]
    if MODE != "v2":
        assert read(mgr, "cpuset", "cpuset.cpus")  # copied from the parent, not empty


def test_limits_are_written(container):
    mgr, _ = container()
    mgr.set({"memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20},
             "pids": {"limit": 32},
             "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}})
    if MODE == "v2":
        assert read(mgr, "unified", "memory.max") == str(64 << 20)
        assert read(mgr, "unified", "pids.max") == "32"
        assert read(mgr, "unified", "cpu.weight") == "20"
        assert read(mgr, "unified", "cpu.max") == "50000 100000"
        return
    assert read(mgr, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read(mgr, "memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    if os.path.exists(os.path.join(mgr.paths()["memory"], "memory.memsw.limit_in_bytes")):
        assert read(mgr, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
        # The kernel refuses memsw < limit at any moment: both directions must work.
        mgr.set({"memory": {"limit": 16 << 20, "swap": 24 << 20}})
        assert read(mgr, "memory", "memory.memsw.limit_in_bytes") == str(24 << 20)
        mgr.set({"memory": {"limit": 256 << 20, "swap": 512 << 20}})
        assert read(mgr, "memory", "memory.limit_in_bytes") == str(256 << 20)
        assert read(mgr, "memory", "memory.memsw.limit_in_bytes") == str(512 << 20)
    assert read(mgr, "pids", "pids.max") == "32"
    assert read(mgr, "cpu", "cpu.shares") == "512"
    assert read(mgr, "cpu", "cpu.cfs_quota_us") == "50000"
    assert read(mgr, "cpuset", "cpuset.cpus") == "0"
    mgr.set({"pids": {"limit": -1}})
    assert read(mgr, "pids", "pids.max") == "max"


def test_block_io_weight_and_throttle(container):
    disks = sorted(name for name in os.listdir("/sys/block") if not name.startswith("loop"))
    if not disks:
        pytest.skip("no block device")
    with open(f"/sys/block/{disks[0]}/dev") as file:
        major, minor = (int(part) for part in file.read().split(":"))
    mgr, _ = container()
    mgr.set({"blockIO": {"weight": 300, "throttleReadBpsDevice": [
        {"major": major, "minor": minor, "rate": 1 << 20}]}})
    if MODE == "v2":
        assert f"{major}:{minor} rbps={1 << 20}" in read(mgr, "unified", "io.max")
        return
    weight = "blkio.bfq.weight" if os.path.exists(
        os.path.join(mgr.paths()["blkio"], "blkio.bfq.weight")) else "blkio.weight"
    assert read(mgr, "blkio", weight).split()[-1] == "300"
    assert read(mgr, "blkio", "blkio.throttle.read_bps_device") == f"{major}:{minor} {1 << 20}"


def test_hugetlb_limit_lands_where_the_host_has_hugetlb(container):
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages")
    mgr, _ = container()
    mgr.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    if MODE == "v1":
        assert read(mgr, "hugetlb", "hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    else:  # hybrid: only the unified hierarchy has hugetlb on such hosts
        key = "hugetlb" if "hugetlb" in mgr.paths() else "unified"
        name = "hugetlb.2MB.limit_in_bytes" if key == "hugetlb" else "hugetlb.2MB.max"
        assert read(mgr, key, name) == str(4 << 20)
    assert "2MB" in mgr.stats()["hugetlb"]


def test_invalid_resources_change_nothing(container):
    mgr, _ = container()
    before = read(mgr, "pids" if MODE != "v2" else "unified", "pids.max")
    with pytest.raises(InvalidArgument):
        mgr.set({"pids": {"limit": 5}, "memory": {"limit": "lots"}})
    assert read(mgr, "pids" if MODE != "v2" else "unified", "pids.max") == before


def test_freeze_and_thaw(container):
    mgr, child = container()
    mgr.freeze()
    assert mgr.frozen()
    mgr.thaw()
    assert not mgr.frozen()
    child.stdin.write("quit\n")
    child.stdin.close()
    assert child.wait(timeout=10) == 0  # it ran again after the thaw


def test_stats_are_json_and_count_the_child(container):
    mgr, child = container()
    child.stdin.write("spin\n")
    child.stdin.flush()
    assert child.stdout.readline() == "spun\n"
    stats = json.loads(json.dumps(mgr.stats()))
    assert set(stats) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
    assert stats["pids"]["current"] >= 1
    assert stats["memory"]["usage"]["usage"] > 0
    assert stats["cpu"]["usage"]["total"] > 0


def test_oom_kill_is_counted(container):
    mgr, child = container()
    mgr.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert mgr.oom_kill_count() == 0
    child.stdin.write("eat\n")
    child.stdin.flush()
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert mgr.oom_kill_count() == 1


@pytest.mark.skipif(MODE == "v1", reason="no cgroup2 hierarchy for a BPF device filter")
def test_bpf_device_filter_denies_dev_null(container):
    mgr, child = container()
    unified = mgr.paths()["unified"]
    # Only the BPF program: the v1 devices list (hybrid) still allows everything.
    devices_bpf.apply_device_filter(unified, [
        {"allow": True, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])
    assert len(devices_bpf.attached_filters(unified)) == 1
    out, _ = child.communicate("devices\n", timeout=30)
    assert out.splitlines() == ["/dev/null Operation not permitted", "/dev/zero ok"]
    mgr.destroy()
    assert not os.path.exists(unified)


def test_set_devices_allow_list(container):
    mgr, child = container()
    mgr.set({"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"}]})
    if MODE != "v2":
        assert read(mgr, "devices", "devices.list") == "c 1:5 rwm"
    if MODE != "v1":
        assert len(devices_bpf.attached_filters(mgr.paths()["unified"])) == 1
    out, _ = child.communicate("devices\n", timeout=30)
    assert out.splitlines() == ["/dev/null Operation not permitted", "/dev/zero ok"]
    # A second set replaces the program rather than stacking another one.
    if MODE != "v1":
        mgr.set({"devices": [{"allow": True, "access": "rwm"}]})
        assert len(devices_bpf.attached_filters(mgr.paths()["unified"])) == 1


def test_destroy_is_idempotent(container):
    mgr, child = container()
    child.kill()
    child.wait()
    mgr.destroy()
    mgr.destroy()
    assert not mgr.exists() and mgr.pids() == []
