"""The v1 (and hybrid) cgroup driver against a fake cgroupfs in tmp_path; no root."""

import errno
import os

import pytest

from capsa.errors import InvalidArgument, Unsupported
from capsa.runtime import cgroups
from capsa.runtime.cgroups import devices_bpf, load_manager, new_manager, v1, v2

CONTROLLERS = ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids",
               "systemd"]

# What the kernel puts in a new cgroup directory, per hierarchy (abridged).
FILES = {
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0",
            "cpu.idle": "0", "cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 3000\n"},
    "cpuacct": {"cpuacct.usage": "5000", "cpuacct.usage_percpu": "3000 2000 \n",
                "cpuacct.usage_percpu_sys": "1000 500\n",
                "cpuacct.usage_percpu_user": "2000 1500\n",
                "cpuacct.stat": "user 3\nsystem 1\n"},
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.kmem.limit_in_bytes": "9223372036854771712",
               "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
               "memory.usage_in_bytes": "4096", "memory.max_usage_in_bytes": "8192",
               "memory.failcnt": "1", "memory.memsw.usage_in_bytes": "4096",
               "memory.memsw.max_usage_in_bytes": "8192", "memory.memsw.failcnt": "0",
               "memory.swappiness": "60", "memory.use_hierarchy": "1",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
               "memory.stat": "cache 100\nrss 200\n"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.weight": "500", "blkio.leaf_weight": "500", "blkio.weight_device": "",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
              "blkio.io_service_bytes_recursive": "",
              "blkio.throttle.io_service_bytes_recursive":
                  "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n",
              "blkio.throttle.io_serviced_recursive": "8:0 Read 2\n8:0 Write 1\n"},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "systemd": {},
}


def populate(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, content in {"cgroup.procs": "", **files}.items():
        with open(os.path.join(directory, name), "w") as file:
            file.write(content)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A v1 cgroupfs: one directory per hierarchy; container dirs are made by `cgroup`."""
    base = tmp_path / "cgroup"
    for name in CONTROLLERS:
        top = {"cpuset.cpus": "0-3", "cpuset.mems": "0"} if name == "cpuset" else {}
        populate(base / name, top)
    # cgroupfs lets rmdir remove a directory holding control files; a real fs does not.
    real_rmdir = os.rmdir

    def rmdir(path):
        for entry in os.scandir(path):
            if entry.is_file():
                os.unlink(entry.path)
        real_rmdir(path)
    monkeypatch.setattr(os, "rmdir", rmdir)
    return str(base)


def cgroup(root, inner="/c1"):
    """Create what the kernel would on mkdir of inner in every hierarchy."""
    for name in CONTROLLERS:
        populate(os.path.join(root, name) + inner, FILES[name])


def read(root, controller, name, inner="/c1"):
    with open(os.path.join(root, controller) + inner + "/" + name) as file:
        return file.read()


@pytest.fixture
def writes(monkeypatch):
    """Record every (file name, value) written, in order, and still write it."""
    log = []
    real = cgroups.write_file

    def record(directory, name, value):
        log.append((name, value))
        real(directory, name, value)
    for module in (v1, v2):
        monkeypatch.setattr(module, "write_file", record)
    return log


def test_host_mode_tells_the_layouts_apart(tmp_path):
    for layout in ("v1", "hybrid", "v2"):
        base = tmp_path / layout
        (base / "memory").mkdir(parents=True)
        if layout == "hybrid":
            populate(base / "unified", {"cgroup.controllers": "hugetlb"})
        if layout == "v2":
            populate(base, {"cgroup.controllers": "cpu memory"})
        assert cgroups.host_mode(str(base)) == layout


def test_paths_follow_runc_cgroups_path_rules(root, tmp_path, monkeypatch):
    # No cgroupsPath: "<id>" beside our own cgroup in each hierarchy, as runc.
    own = cgroups.own_cgroups().get("memory", "/").rstrip("/")
    assert new_manager(None, "web", root=root).paths()["memory"] == f"{root}/memory{own}/web"
    mgr = new_manager("/outer/inner", "web", root=root)
    assert set(mgr.paths()) == {"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer",
                                "memory", "pids", "name=systemd"}
    assert mgr.paths()["name=systemd"] == f"{root}/systemd/outer/inner"
    # ".." is cleaned as if rooted: it cannot climb out of the hierarchy.
    assert new_manager("/../../etc", "x", root=root).paths()["cpu"] == f"{root}/cpu/etc"
    own = tmp_path / "self-cgroup"
    own.write_text("4:memory:/session/42\n3:cpu,cpuacct:/\n1:name=systemd:/user.slice\n0::/\n")
    monkeypatch.setattr(cgroups, "SELF_CGROUP", str(own))
    relative = new_manager("pod/ctr", "ctr", root=root).paths()
    assert relative["memory"] == f"{root}/memory/session/42/pod/ctr"
    assert relative["cpuacct"] == f"{root}/cpuacct/pod/ctr"
    assert relative["name=systemd"] == f"{root}/systemd/user.slice/pod/ctr"
    for bad in ("/", "..", "/a/../.."):
        with pytest.raises(InvalidArgument):
            new_manager(bad, "x", root=root)


def test_apply_joins_every_hierarchy_and_copies_cpuset_from_parent(root):
    cgroup(root, "/a")
    cgroup(root, "/a/b")
    mgr = new_manager("/a/b", "b", root=root)
    mgr.apply(4242)
    for name in CONTROLLERS:
        assert read(root, name, "cgroup.procs", "/a/b") == "4242"
    # Both levels were empty: each got its parent's value, top-down.
    assert read(root, "cpuset", "cpuset.cpus", "/a") == "0-3"
    assert read(root, "cpuset", "cpuset.cpus", "/a/b") == "0-3"
    assert read(root, "cpuset", "cpuset.mems", "/a/b") == "0"
    assert mgr.exists()


def test_set_writes_the_v1_values(root, writes):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    mgr.apply(1)
    mgr.set({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
                   "kernelTCP": 16 << 20, "swappiness": 10, "disableOOMKiller": True},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "realtimeRuntime": 950000,
                "realtimePeriod": 1000000, "cpus": "1", "mems": "0", "idle": 0, "burst": 1000},
        "pids": {"limit": 100},
        "blockIO": {"weight": 300, "leafWeight": 200,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 400}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 136, "access": "rw"}],
    })
    expected = {
        ("memory", "memory.limit_in_bytes"): str(64 << 20),
        ("memory", "memory.memsw.limit_in_bytes"): str(128 << 20),
        ("memory", "memory.soft_limit_in_bytes"): str(32 << 20),
        ("memory", "memory.kmem.tcp.limit_in_bytes"): str(16 << 20),
        ("memory", "memory.swappiness"): "10",
        ("memory", "memory.oom_control"): "1",
        ("cpu", "cpu.shares"): "512",
        ("cpu", "cpu.cfs_quota_us"): "50000",
        ("cpu", "cpu.cfs_period_us"): "100000",
        ("cpu", "cpu.cfs_burst_us"): "1000",
        ("cpu", "cpu.rt_runtime_us"): "950000",
        ("cpu", "cpu.rt_period_us"): "1000000",
        ("cpu", "cpu.idle"): "0",
        ("cpuset", "cpuset.cpus"): "1",
        ("pids", "pids.max"): "100",
        ("blkio", "blkio.weight"): "300",
        ("blkio", "blkio.leaf_weight"): "200",
        ("blkio", "blkio.weight_device"): "8:0 400",
        ("blkio", "blkio.throttle.read_bps_device"): "8:0 1048576",
        ("blkio", "blkio.throttle.write_iops_device"): "8:16 100",
    }
    for (controller, name), value in expected.items():
        assert read(root, controller, name) == value, name
    # memory+swap (128M) is below the current limit (unlimited): the limit goes first.
    order = [name for name, _ in writes]
    assert order.index("memory.limit_in_bytes") < order.index("memory.memsw.limit_in_bytes")
    # Devices: "a" to deny first, then one allow line per write.
    assert [w for w in writes if w[0].startswith("devices.")] == [
        ("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"), ("devices.allow", "c 136:* rw")]


def test_memory_and_swap_order_keeps_memsw_above_limit(root, writes):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    mgr.apply(1)
    mgr.set({"memory": {"limit": 256 << 20, "swap": 512 << 20}})
    writes.clear()
    mgr.set({"memory": {"limit": 32 << 20, "swap": 48 << 20}})
    # New memory+swap is below the current limit: the limit must go down first.
    assert [w for w in writes if w[0].startswith("memory.")] == [
        ("memory.limit_in_bytes", str(32 << 20)), ("memory.memsw.limit_in_bytes", str(48 << 20))]
    writes.clear()
    mgr.set({"memory": {"limit": 64 << 20, "swap": 96 << 20}})
    # New memory+swap is above the current limit: memory+swap must go up first.
    assert [w for w in writes if w[0].startswith("memory.")] == [
        ("memory.memsw.limit_in_bytes", str(96 << 20)), ("memory.limit_in_bytes", str(64 << 20))]
    writes.clear()
    mgr.set({"memory": {"limit": -1}})
    assert writes == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_pids_limit_zero_or_negative_is_max(root):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    for limit in (0, -1):
        mgr.set({"pids": {"limit": 7}})
        mgr.set({"pids": {"limit": limit}})
        assert read(root, "pids", "pids.max") == "max"


def test_missing_controller_is_unsupported_before_any_write(root, writes):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    for resources in ({"memory": {"limit": 1 << 20},
                       "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]},
                      {"pids": {"limit": 5}, "network": {"classID": 1048577}},
                      {"pids": {"limit": 5}, "unified": {"memory.high": "1G"}}):
        with pytest.raises(Unsupported):
            mgr.set(resources)
    assert writes == []


def test_swap_without_swap_accounting_is_unsupported_before_any_write(root, writes):
    cgroup(root)
    os.unlink(f"{root}/memory/c1/memory.memsw.limit_in_bytes")
    mgr = new_manager("/c1", "c1", root=root)
    with pytest.raises(Unsupported):
        mgr.set({"pids": {"limit": 5}, "memory": {"limit": 1 << 20, "swap": 2 << 20}})
    assert writes == []
    mgr.set({"memory": {"limit": -1}})  # "unlimited" needs no swap file
    assert writes == [("memory.limit_in_bytes", "-1")]


@pytest.mark.parametrize("resources", [
    {"memory": {"limit": "64m"}},
    {"memory": {"limit": 64, "swap": 32}},
    {"memory": {"swappiness": 101}},
    {"memory": {"disableOOMKiller": 1}},
    {"cpu": {"shares": True}},
    {"cpu": {"cpus": "0-1; rm"}},
    {"pids": {"limit": 1.5}},
    {"blockIO": {"weight": 2000}},
    {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
    {"hugepageLimits": [{"pageSize": "2 MB", "limit": 1}]},
    {"devices": [{"allow": "yes"}]},
    {"devices": [{"allow": True, "type": "x"}]},
    {"devices": [{"allow": True, "access": "rwx"}]},
    {"devices": [{"allow": True, "type": "c", "major": 1, "access": "r"},
                 {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "r"}]},
    {"unified": {"../memory.max": "1"}},
    {"unified": {"memory.max": 1}},
    {"rdma": {"mlx5_1": {"hcaHandles": -1}}},
    {"network": {"priorities": [{"name": "eth0"}]}},
])
def test_malformed_resources_are_refused_before_anything_changes(root, writes, resources):
    cgroup(root)
    with pytest.raises(InvalidArgument):
        new_manager("/c1", "c1", root=root).set(resources)
    assert writes == []


def test_freeze_thaw_and_frozen(root):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    mgr.freeze()
    assert read(root, "freezer", "freezer.state") == "FROZEN" and mgr.frozen()
    mgr.thaw()
    assert read(root, "freezer", "freezer.state") == "THAWED" and not mgr.frozen()


def test_stats_and_oom_kills_have_the_runc_shape(root):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    stats = mgr.stats()
    hz = os.sysconf("SC_CLK_TCK")
    assert stats["cpu"]["usage"] == {
        "total": 5000, "percpu": [3000, 2000], "percpu_kernel": [1000, 500],
        "percpu_user": [2000, 1500], "user": 3 * (10**9 // hz), "kernel": 1 * (10**9 // hz)}
    assert stats["cpu"]["throttling"] == {"periods": 10, "throttledPeriods": 2,
                                          "throttledTime": 3000}
    assert stats["memory"]["usage"] == {"usage": 4096, "max": 8192,
                                        "limit": 9223372036854771712, "failcnt": 1}
    assert stats["memory"]["cache"] == 100 and stats["memory"]["raw"]["rss"] == 200
    assert stats["pids"] == {"current": 2, "limit": 0}
    assert stats["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512},
        {"major": 8, "minor": 0, "op": "Total", "value": 4608}]
    assert mgr.oom_kill_count() == 3


def test_pids_walks_sub_cgroups(root):
    cgroup(root)
    populate(f"{root}/pids/c1/inner", {})
    with open(f"{root}/pids/c1/cgroup.procs", "w") as file:
        file.write("10\n11\n")
    with open(f"{root}/pids/c1/inner/cgroup.procs", "w") as file:
        file.write("12\n")
    assert new_manager("/c1", "c1", root=root).pids() == [10, 11, 12]


def test_destroy_is_idempotent_and_retries_ebusy(root, monkeypatch):
    cgroup(root)
    populate(f"{root}/memory/c1/sub", {})
    mgr = new_manager("/c1", "c1", root=root)
    fake_rmdir, busy = os.rmdir, {"count": 2}

    def rmdir(path):
        if path.endswith("/memory/c1") and busy["count"]:
            busy["count"] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        fake_rmdir(path)
    monkeypatch.setattr(os, "rmdir", rmdir)
    mgr.destroy()
    assert busy["count"] == 0 and not mgr.exists()
    assert sorted(os.listdir(root)) == sorted(CONTROLLERS)
    mgr.destroy()


def test_load_manager_round_trips_paths_and_refuses_outside_root(root):
    cgroup(root)
    mgr = new_manager("/c1", "c1", root=root)
    again = load_manager(mgr.paths(), root=root)
    assert isinstance(again, v1.V1Manager) and again.paths() == mgr.paths()
    assert again.oom_kill_count() == 3
    # A mount point itself is refused: destroy() would sweep every empty cgroup below it.
    for bad in ({"memory": "/etc"}, {"memory": f"{root}/memory/../../x"},
                {"memory": f"{root}/memory"},
                {"cpu": f"{root}/cpu/c1", "unified": f"{root}/unified"}, {}, []):
        with pytest.raises(InvalidArgument):
            load_manager(bad, root=root)


@pytest.fixture
def hybrid(root, monkeypatch):
    populate(f"{root}/unified", {"cgroup.controllers": "hugetlb", "cgroup.subtree_control": ""})
    populate(f"{root}/unified/c1", {"cgroup.controllers": "hugetlb",
                                    "hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0",
                                    "hugetlb.2MB.events": "max 0"})
    cgroup(root)
    filters = []
    monkeypatch.setattr(devices_bpf, "apply_device_filter",
                        lambda directory, rules: filters.append((directory, rules)))
    monkeypatch.setattr(devices_bpf, "detach_device_filters", lambda directory: None)
    return filters


def test_hybrid_uses_unified_for_hugetlb_and_the_device_filter(root, hybrid):
    assert cgroups.host_mode(root) == "hybrid"
    mgr = new_manager("/c1", "c1", root=root)
    assert mgr.paths()["unified"] == f"{root}/unified/c1"
    mgr.apply(77)
    assert read(root, "unified", "cgroup.procs") == "77"
    assert open(f"{root}/unified/cgroup.subtree_control").read() == "+hugetlb"
    rules = [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1,
                                                 "minor": 3, "access": "rw"}]
    mgr.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}], "devices": rules,
             "unified": {"hugetlb.2MB.max": str(8 << 21)}})
    # The unified map is written last, so it wins over hugepageLimits.
    assert read(root, "unified", "hugetlb.2MB.max") == str(8 << 21)
    assert hybrid == [(f"{root}/unified/c1", rules)]
    assert read(root, "devices", "devices.allow") == "c 1:3 rw"
    assert mgr.stats()["hugetlb"] == {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}
    with pytest.raises(Unsupported):
        mgr.set({"unified": {"memory.high": "1G"}})
    mgr.destroy()
    assert not os.path.exists(f"{root}/unified/c1") and not mgr.exists()


def test_device_rules_emulate_v1_semantics():
    allow_all_but_null = [{"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 3}]
    assert devices_bpf.emulate(allow_all_but_null) == (True, {("c", 1, 3): 7})
    merged = [{"allow": False},
              {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"},
              {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "w"},
              {"allow": True, "type": "b", "access": "m"}]
    assert devices_bpf.emulate(merged) == (False, {("c", 1, 3): 6, ("b", -1, -1): 1})
    # A later "a" rule resets everything before it.
    assert devices_bpf.emulate(merged + [{"allow": True, "type": "a"}]) == (True, {})
    assert devices_bpf.format_rule("b", -1, -1, 1) == "b *:* m"
