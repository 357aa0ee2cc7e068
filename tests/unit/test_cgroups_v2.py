"""The v2 cgroup driver and the BPF device filter against a fake cgroupfs; no root."""

import os
import struct

import pytest

from capsa.errors import InvalidArgument, Unsupported
from capsa.linux import bpf
from capsa.runtime import cgroups
from capsa.runtime.cgroups import devices_bpf, load_manager, new_manager, v2

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma"

# What the kernel puts in a new cgroup directory (abridged).
LEAF = {
    "cgroup.controllers": CONTROLLERS, "cgroup.subtree_control": "", "cgroup.procs": "",
    "cgroup.freeze": "0", "cgroup.events": "populated 1\nfrozen 0\n",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
    "cpu.stat": "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\n"
                "throttled_usec 3\n",
    "cpuset.cpus": "", "cpuset.mems": "",
    "memory.max": "max", "memory.high": "max", "memory.low": "0", "memory.swap.max": "max",
    "memory.current": "4096",
    "memory.peak": "8192", "memory.swap.current": "100",
    "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
    "memory.stat": "anon 10\nfile 20\n",
    "pids.max": "max", "pids.current": "3",
    "io.weight": "default 100", "io.max": "",
    "io.stat": "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
    "hugetlb.2MB.max": "max", "hugetlb.2MB.rsvd.max": "max", "hugetlb.2MB.current": "0",
    "hugetlb.2MB.events": "max 0\n", "rdma.max": "",
}


def populate(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(directory, name), "w") as file:
            file.write(content)


@pytest.fixture
def root(tmp_path, monkeypatch):
    base = str(tmp_path / "cgroup")
    populate(base, {"cgroup.controllers": CONTROLLERS, "cgroup.subtree_control": "",
                    "cgroup.procs": ""})
    real_rmdir = os.rmdir

    def rmdir(path):  # cgroupfs removes a directory holding control files
        for entry in os.scandir(path):
            if entry.is_file():
                os.unlink(entry.path)
        real_rmdir(path)
    monkeypatch.setattr(os, "rmdir", rmdir)
    return base


@pytest.fixture
def filters(monkeypatch):
    calls = []
    monkeypatch.setattr(devices_bpf, "apply_device_filter",
                        lambda directory, rules: calls.append((directory, rules)))
    monkeypatch.setattr(devices_bpf, "detach_device_filters",
                        lambda directory: calls.append(("detach", directory)))
    return calls


@pytest.fixture
def writes(monkeypatch):
    log, real = [], cgroups.write_file

    def record(directory, name, value):
        log.append((name, value))
        real(directory, name, value)
    monkeypatch.setattr(v2, "write_file", record)
    return log


def read(directory, name):
    with open(os.path.join(directory, name)) as file:
        return file.read()


def make(root, inner="/c1"):
    populate(root + inner, LEAF)
    return new_manager(inner, "ignored", root=root)


def test_apply_enables_controllers_in_ancestors_only(root):
    populate(root + "/pod", {**LEAF, "cgroup.controllers": "cpu memory pids"})
    mgr = make(root, "/pod/c1")
    assert cgroups.host_mode(root) == "v2" and isinstance(mgr, v2.V2Manager)
    assert mgr.paths() == {"unified": root + "/pod/c1"}
    mgr.apply(99)
    assert read(root, "cgroup.subtree_control") == "+cpu +cpuset +hugetlb +io +memory +pids +rdma"
    assert read(root + "/pod", "cgroup.subtree_control") == "+cpu +memory +pids"
    # Never in the leaf: its init would break the no-internal-processes rule.
    assert read(root + "/pod/c1", "cgroup.subtree_control") == ""
    assert read(root + "/pod/c1", "cgroup.procs") == "99"


def test_set_writes_the_v2_values(root, writes, filters):
    mgr = make(root)
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    mgr.set({
        "memory": {"limit": 1 << 30, "swap": 3 << 29, "reservation": 1 << 29,
                   "swappiness": 0, "kernel": 1 << 20},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0",
                "idle": 0, "burst": 1000},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 20}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
        "devices": rules,
        "unified": {"memory.high": "900M", "pids.max": "70"},
    })
    leaf = root + "/c1"
    expected = {
        "memory.max": str(1 << 30), "memory.swap.max": str(1 << 29), "memory.low": str(1 << 29),
        "cpu.weight": "39", "cpu.max": "50000 100000", "cpu.max.burst": "1000", "cpu.idle": "0",
        "cpuset.cpus": "0-1", "cpuset.mems": "0",
        "io.weight": "4950", "hugetlb.2MB.max": "4194304", "hugetlb.2MB.rsvd.max": "4194304",
        "rdma.max": "mlx5_1 hca_handle=3 hca_object=10000",
        "memory.high": "900M", "pids.max": "70",  # unified goes last and wins
    }
    for name, value in expected.items():
        assert read(leaf, name) == value, name
    assert [w for w in writes if w[0] == "io.max"] == [("io.max", "8:0 rbps=10"),
                                                       ("io.max", "8:0 wiops=20")]
    assert filters == [(leaf, rules)]
    assert not any(name.startswith("memory.swappiness") for name, _ in writes)


def test_cpu_max_keeps_quota_when_only_period_changes(root):
    mgr = make(root)
    mgr.set({"cpu": {"quota": 20000}})
    assert read(root + "/c1", "cpu.max") == "20000"
    with open(root + "/c1/cpu.max", "w") as file:
        file.write("20000 100000")  # what the kernel would show
    mgr.set({"cpu": {"period": 50000}})
    assert read(root + "/c1", "cpu.max") == "20000 50000"
    mgr.set({"cpu": {"quota": -1}})
    assert read(root + "/c1", "cpu.max") == "max"


@pytest.mark.parametrize("shares,weight", [(0, 0), (1, 1), (2, 1), (1024, 39), (262144, 10000),
                                           (10**9, 10000)])
def test_shares_convert_to_weight_like_runc(shares, weight):
    assert v2.shares_to_weight(shares) == weight


def test_blkio_weight_and_swap_conversions():
    assert [v2.blkio_to_io_weight(w) for w in (0, 10, 500, 1000)] == [0, 1, 4950, 10000]
    assert v2.swap_to_v2(0, -1) == -1
    assert v2.swap_to_v2(-1, 100) == -1
    assert v2.swap_to_v2(300, 100) == 200
    assert v2.swap_to_v2(100, 100) == 0
    for swap, limit in ((300, 0), (300, -1), (50, 100)):
        with pytest.raises(InvalidArgument):
            v2.swap_to_v2(swap, limit)


def test_swap_equal_to_limit_disables_swap(root):
    mgr = make(root)
    mgr.set({"memory": {"limit": 1 << 20, "swap": 1 << 20}})
    assert read(root + "/c1", "memory.swap.max") == "0"
    mgr.set({"memory": {"limit": -1}})
    assert read(root + "/c1", "memory.max") == "max"
    assert read(root + "/c1", "memory.swap.max") == "max"


def test_pids_zero_or_negative_is_max(root):
    mgr = make(root)
    for limit in (0, -1):
        mgr.set({"pids": {"limit": 5}})
        mgr.set({"pids": {"limit": limit}})
        assert read(root + "/c1", "pids.max") == "max"


@pytest.mark.parametrize("name", ["../memory.max", "a/b", "memory.max/..", "..", "cgroup.procs",
                                  "cgroup.kill", "nodot", ""])
def test_unified_names_must_be_plain_files(root, writes, name):
    with pytest.raises(InvalidArgument):
        make(root).set({"unified": {name: "1"}})
    assert writes == []


def test_unsupported_before_any_write(root, writes):
    populate(root + "/c1", {**LEAF, "cgroup.controllers": "memory pids"})
    mgr = new_manager("/c1", "c1", root=root)
    for resources in ({"pids": {"limit": 5}, "cpu": {"shares": 100}},
                      {"pids": {"limit": 5}, "cpu": {"realtimeRuntime": 1000}},
                      {"pids": {"limit": 5}, "network": {"classID": 1}}):
        with pytest.raises(Unsupported):
            mgr.set(resources)
    assert writes == []
    with pytest.raises(Unsupported):
        mgr.set({"unified": {"cpu.weight.nice": "1"}})  # no such file, no cpu controller


def test_freeze_thaw_frozen(root):
    mgr = make(root)
    assert not mgr.frozen()
    with open(root + "/c1/cgroup.events", "w") as file:
        file.write("populated 1\nfrozen 1\n")  # the kernel reports it when done
    mgr.freeze()
    assert read(root + "/c1", "cgroup.freeze") == "1" and mgr.frozen()
    with open(root + "/c1/cgroup.events", "w") as file:
        file.write("populated 1\nfrozen 0\n")
    mgr.thaw()
    assert read(root + "/c1", "cgroup.freeze") == "0" and not mgr.frozen()


def test_stats_and_oom_kills(root):
    mgr = make(root)
    stats = mgr.stats()
    assert stats["cpu"]["usage"]["total"] == 7000 and stats["cpu"]["usage"]["kernel"] == 2000
    assert stats["cpu"]["throttling"] == {"periods": 4, "throttledPeriods": 1,
                                          "throttledTime": 3000}
    assert stats["memory"]["usage"] == {"usage": 4096, "max": 8192, "limit": 2**64 - 1,
                                        "failcnt": 2}
    assert stats["memory"]["swap"]["usage"] == 4196 and stats["memory"]["cache"] == 20
    assert stats["pids"] == {"current": 3, "limit": 0}
    assert stats["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512}]
    assert stats["hugetlb"] == {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}
    assert mgr.oom_kill_count() == 1


def test_destroy_detaches_and_is_idempotent(root, filters):
    mgr = make(root)
    populate(root + "/c1/nested", {"cgroup.procs": ""})
    mgr.destroy()
    assert filters == [("detach", root + "/c1")]
    assert not mgr.exists() and sorted(os.listdir(root)) == sorted(
        ["cgroup.controllers", "cgroup.subtree_control", "cgroup.procs"])
    mgr.destroy()
    assert load_manager(mgr.paths(), root=root).paths() == mgr.paths()
    with pytest.raises(InvalidArgument):
        load_manager({"unified": root}, root=root)


def test_swap_v2_cannot_express_is_refused_before_any_write(root, writes):
    mgr = make(root)
    with pytest.raises(InvalidArgument):
        mgr.set({"pids": {"limit": 5}, "memory": {"swap": 1 << 20}})
    os.unlink(root + "/c1/memory.swap.max")
    with pytest.raises(Unsupported):
        mgr.set({"pids": {"limit": 5}, "memory": {"limit": 1 << 20, "swap": 2 << 20}})
    assert writes == []
    # "No swap" is already true without swap accounting: the failed write is fine.
    mgr.set({"memory": {"limit": 1 << 20, "swap": 1 << 20}})
    assert writes == [("memory.swap.max", "0"), ("memory.max", str(1 << 20))]


# ---- the BPF device filter, run by a tiny interpreter of the opcodes it uses ----

def run_filter(code: bytes, kind: str, major: int, minor: int, access: str) -> int:
    regs = [0] * 11
    ctx = (({"c": bpf.BPF_DEVCG_DEV_CHAR, "b": bpf.BPF_DEVCG_DEV_BLOCK}[kind])
           | (devices_bpf._access_bits(access) << 16), major, minor)
    insns = [struct.unpack("=BBhi", code[i:i + 8]) for i in range(0, len(code), 8)]
    pc = 0
    while True:
        op, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if op == 0x61:
            regs[dst] = ctx[off // 4]
        elif op == 0x54:
            regs[dst] &= imm
        elif op == 0x74:
            regs[dst] >>= imm
        elif op == 0xBC:
            regs[dst] = regs[src]
        elif op == 0xB4:
            regs[dst] = imm
        elif op == 0x55:
            pc += off if regs[dst] != imm else 0
        elif op == 0x5D:
            pc += off if regs[dst] != regs[src] else 0
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def verdicts(rules, probes):
    code = devices_bpf.compile_filter(*devices_bpf.emulate(rules))
    return [run_filter(code, *probe) for probe in probes]


def test_filter_is_default_deny_with_allowed_exceptions():
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 136, "access": "rw"},
             {"allow": True, "type": "b", "access": "m"}]
    probes = [("c", 1, 3, "rw"), ("c", 1, 5, "r"), ("c", 136, 7, "rw"), ("c", 136, 7, "m"),
              ("b", 8, 0, "m"), ("b", 8, 0, "r"), ("c", 5, 1, "w")]
    assert verdicts(rules, probes) == [1, 0, 1, 0, 1, 0, 0]


def test_filter_default_allow_denies_only_the_listed():
    rules = [{"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 3}]
    assert verdicts(rules, [("c", 1, 3, "r"), ("c", 1, 5, "r"), ("b", 1, 3, "w")]) == [0, 1, 1]


def test_filter_without_rules_denies_everything():
    assert verdicts([], [("c", 1, 3, "r"), ("b", 8, 0, "m")]) == [0, 0]


def test_filter_merges_permissions_and_needs_all_requested():
    rules = [{"allow": True, "type": "c", "major": 10, "minor": 200, "access": "r"},
             {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "w"}]
    assert verdicts(rules, [("c", 10, 200, "rw"), ("c", 10, 200, "rwm")]) == [1, 0]
