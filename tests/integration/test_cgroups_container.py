"""linux.resources and cgroupsPath, checked from inside a real container."""

import os

import pytest


def read_inside(run_container, *files) -> list[str]:
    _, out, _ = run_container("; ".join(f"cat /sys/fs/cgroup/{f}" for f in files))
    return out.split()


def test_memory_pids_cpu_limits(run_container, bundle):
    bundle.linux["resources"].update({
        "memory": {"limit": 64 * 1024 * 1024, "reservation": 32 * 1024 * 1024},
        "pids": {"limit": 50},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    })  # fmt: skip
    bundle.write()
    values = read_inside(run_container, "memory/memory.limit_in_bytes",
                         "memory/memory.soft_limit_in_bytes", "pids/pids.max",
                         "cpu/cpu.shares", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us",
                         "cpuset/cpuset.cpus")  # fmt: skip
    assert values == [str(64 << 20), str(32 << 20), "50", "512", "50000", "100000", "0"]


def test_pids_limit_is_enforced(run_container, bundle):
    bundle.linux["resources"]["pids"] = {"limit": 3}
    bundle.write()
    code, out, err = run_container("for i in 1 2 3 4 5; do sleep 5 & done; wait", check=False)
    assert "can't fork" in err or "Resource temporarily unavailable" in err


def test_memory_limit_oom_kills(run_container, bundle):
    bundle.linux["resources"]["memory"] = {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}
    bundle.write()
    # A 64 MiB shell variable cannot fit in 16 MiB. The inner shell offers
    # itself to the OOM killer first (oom_score_adj 1000, inherited by its
    # children), or the killer may pick the outer shell that reports.
    code, out, err = run_container(
        "sh -c 'echo 1000 > /proc/self/oom_score_adj; x=$(head -c 67108864 /dev/zero | tr \\\\0 a); "
        "echo survived'; echo $?", check=False)  # fmt: skip
    assert "survived" not in out
    assert out.split()[-1] == "137"


def test_blkio_weight(run_container, bundle):
    if not os.path.exists("/sys/fs/cgroup/blkio/blkio.bfq.weight") and \
            not os.path.exists("/sys/fs/cgroup/blkio/blkio.weight"):  # fmt: skip
        pytest.skip("no blkio weight on this kernel")
    bundle.linux["resources"]["blockIO"] = {"weight": 300}
    bundle.write()
    _, out, _ = run_container("cat /sys/fs/cgroup/blkio/blkio.bfq.weight "
                              "/sys/fs/cgroup/blkio/blkio.weight 2>/dev/null", check=False)  # fmt: skip
    assert "300" in out.split()


def test_absolute_cgroups_path(runtime, bundle):
    bundle.linux["cgroupsPath"] = "/capsa-test/abs1"
    bundle.args("sleep", "10")
    runtime("create", "--bundle", str(bundle), "abs1")
    pid = runtime.state("abs1")["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    assert any(line.endswith(":pids:/capsa-test/abs1") for line in lines)
    assert os.path.isdir("/sys/fs/cgroup/pids/capsa-test/abs1")
    runtime("delete", "--force", "abs1")
    assert not os.path.exists("/sys/fs/cgroup/pids/capsa-test/abs1")
    os.rmdir("/sys/fs/cgroup/pids/capsa-test")  # the parent is the caller's, as with runc
    for name in os.listdir("/sys/fs/cgroup"):
        path = f"/sys/fs/cgroup/{name}/capsa-test"
        if os.path.isdir(path):
            os.rmdir(path)


def test_relative_cgroups_path_nests_under_the_callers_cgroup(runtime, bundle):
    bundle.linux["cgroupsPath"] = "rel1"
    bundle.args("sleep", "10")
    runtime("create", "--bundle", str(bundle), "rel1")
    pid = runtime.state("rel1")["pid"]
    with open("/proc/self/cgroup") as f:
        own = {line.split(":")[1]: line.split(":")[2] for line in f.read().splitlines()}
    with open(f"/proc/{pid}/cgroup") as f:
        theirs = {line.split(":")[1]: line.split(":")[2] for line in f.read().splitlines()}
    assert theirs["memory"] == own["memory"].rstrip("/") + "/rel1"


def test_hugetlb_on_the_unified_hierarchy(run_container, bundle):
    sizes = [d.split("-")[1][:-2] for d in os.listdir("/sys/kernel/mm/hugepages")] \
        if os.path.isdir("/sys/kernel/mm/hugepages") else []  # fmt: skip
    if not sizes:
        pytest.skip("no huge pages on this kernel")
    size = "2MB" if "2048" in sizes else f"{int(sizes[0]) // 1024}MB"
    bundle.linux["resources"]["hugepageLimits"] = [{"pageSize": size, "limit": 4 << 21}]
    bundle.write()
    _, out, _ = run_container(f"cat /sys/fs/cgroup/*/hugetlb.{size}.max "
                              f"/sys/fs/cgroup/*/hugetlb.{size}.limit_in_bytes 2>/dev/null",
                              check=False)  # fmt: skip
    assert str(4 << 21) in out.split()


def test_unknown_resource_value_is_refused(runtime, bundle):
    bundle.linux["resources"]["pids"] = {"limit": "many"}
    bundle.write()
    result = runtime("create", "--bundle", str(bundle), "badres", check=False)
    assert result.returncode != 0 and b"pids" in result.stderr
    assert runtime.ids() == []
