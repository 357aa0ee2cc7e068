"""update: new cgroup limits for a live container, seen from inside it and saved.

A container copies its own cgroup files (as it sees them under
/sys/fs/cgroup) into a host directory every 20 ms, so a test checks the
effect of an update from inside; the host's cgroup files and state.json are
checked too, and after every refused update all three are unchanged.
"""

import json
import os

import pytest
from running import (cgroup_dir, one_line_error, read, saved_state, shared, start, wait_for,
                     wait_status)  # fmt: skip

INSIDE = {  # name in the shared directory -> file under the container's /sys/fs/cgroup
    "memory": "memory/memory.limit_in_bytes",
    "reservation": "memory/memory.soft_limit_in_bytes",
    "pids": "pids/pids.max",
    "quota": "cpu/cpu.cfs_quota_us",
    "period": "cpu/cpu.cfs_period_us",
    "shares": "cpu/cpu.shares",
    "cpus": "cpuset/cpuset.cpus",
}


@pytest.fixture
def watched(runtime, bundle, tmp_path):
    """A running container reporting its cgroup files; returns a reader of them."""
    host = shared(bundle, tmp_path)
    copies = "; ".join(f"cat /sys/fs/cgroup/{path} > /tmp/{name}.new; "
                       f"mv /tmp/{name}.new /tmp/{name}" for name, path in INSIDE.items())
    bundle.linux["resources"].update({"memory": {"limit": 128 << 20}, "pids": {"limit": 50}})
    start(runtime, bundle, "c1", "sh", "-c", f"while :; do {copies}; sleep 0.02; done")

    def inside(name: str) -> str | None:
        value = read(host / name)
        return value.strip() if value else None

    wait_for(lambda: inside("cpus"), what="the first report")
    return inside


def expect_inside(inside, name: str, value) -> None:
    wait_for(lambda: inside(name) == str(value), timeout=10,
             what=f"{name} to read {value} inside")  # fmt: skip


def resources(runtime) -> dict:
    return saved_state(runtime, "c1")["config"]["linux"]["resources"]


def test_update_flags_set_the_limits_seen_inside_and_saved(runtime, watched):
    runtime("update", "--memory", "256m", "--memory-reservation", "64m", "--pids-limit", "20",
            "--cpu-quota", "50000", "--cpu-period", "100000", "--cpu-share", "512",
            "--cpuset-cpus", "0", "c1")  # fmt: skip
    expect_inside(watched, "memory", 256 << 20)
    expect_inside(watched, "reservation", 64 << 20)
    expect_inside(watched, "pids", 20)
    expect_inside(watched, "quota", 50000)
    expect_inside(watched, "period", 100000)
    expect_inside(watched, "shares", 512)
    expect_inside(watched, "cpus", "0")
    saved = resources(runtime)
    assert saved["memory"] == {"limit": 256 << 20, "reservation": 64 << 20}
    assert saved["pids"] == {"limit": 20}
    assert saved["cpu"] == {"quota": 50000, "period": 100000, "shares": 512, "cpus": "0"}
    assert saved["devices"] == [{"allow": False, "access": "rwm"}]  # untouched


def test_a_second_update_keeps_what_the_first_set(runtime, watched):
    runtime("update", "--pids-limit", "30", "c1")
    runtime("update", "--memory", "64m", "c1")
    expect_inside(watched, "memory", 64 << 20)
    assert watched("pids") == "30"
    assert resources(runtime)["pids"] == {"limit": 30}
    assert resources(runtime)["memory"] == {"limit": 64 << 20}


def test_update_from_a_resources_file(runtime, watched, tmp_path):
    path = tmp_path / "resources.json"
    path.write_text(json.dumps({"memory": {"limit": 100 << 20}, "pids": {"limit": 40},
                                "cpu": {"shares": 256}}))  # fmt: skip
    # As runc: with --resources the single-value flags are ignored.
    runtime("update", "--resources", str(path), "--pids-limit", "9", "c1")
    expect_inside(watched, "memory", 100 << 20)
    expect_inside(watched, "pids", 40)
    expect_inside(watched, "shares", 256)
    assert resources(runtime)["pids"] == {"limit": 40}


def test_update_from_stdin(runtime, watched):
    runtime("update", "-r", "-", "c1", input=b'{"pids": {"limit": 33}, "memory": null}')
    expect_inside(watched, "pids", 33)
    assert resources(runtime)["memory"] == {"limit": 128 << 20}


@pytest.mark.parametrize("text, expected", [
    ("1g", 1 << 30), ("65536k", 64 << 20), ("33.5m", 67 << 19), ("123456789", 123456789),
    ("300MiB", 300 << 20), ("64 MB", 64 << 20),
])  # fmt: skip
def test_memory_sizes_as_runc_reads_them(runtime, watched, text, expected):
    runtime("update", "--memory", text, "c1")
    expect_inside(watched, "memory", expected // 4096 * 4096)  # the kernel rounds to pages
    assert resources(runtime)["memory"]["limit"] == expected


def test_minus_one_means_unlimited(runtime, watched):
    runtime("update", "--memory", "-1", "--pids-limit", "-1", "--cpu-quota", "-1", "c1")
    wait_for(lambda: watched("pids") == "max", what="pids.max to be max")
    expect_inside(watched, "quota", -1)
    wait_for(lambda: int(watched("memory")) > 1 << 60, what="no memory limit inside")
    saved = resources(runtime)
    assert saved["memory"] == {"limit": -1, "swap": -1} and saved["pids"] == {"limit": -1}


def test_update_of_a_paused_container(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    runtime("pause", "c1")
    runtime("update", "--pids-limit", "12", "c1")
    assert read(os.path.join(cgroup_dir(runtime, "c1", "pids"), "pids.max")) == "12\n"
    assert runtime.state("c1")["status"] == "paused"


def host_files(runtime) -> dict:
    files = {}
    for hierarchy, names in (("memory", ["memory.limit_in_bytes", "memory.soft_limit_in_bytes",
                                         "memory.memsw.limit_in_bytes"]),
                             ("pids", ["pids.max"]), ("cpuset", ["cpuset.cpus"]),
                             ("cpu", ["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"])):
        for name in names:
            files[name] = read(os.path.join(cgroup_dir(runtime, "c1", hierarchy), name))
    return files


BAD_FLAGS = [
    (["--memory", "1x"], "invalid size"),
    (["--memory", "lots"], "invalid size"),
    (["--pids-limit", "abc"], "not an integer"),
    (["--cpu-quota", "1.5"], "not an integer"),
    (["--cpu-period", "-5"], "-5"),
    (["--cpu-share", "1"], "range"),
    (["--cpu-period", "10"], "range"),
    (["--blkio-weight", "5"], "range"),
    (["--memory", "256m", "--cpu-share", "999999999"], "range"),
    (["--memory-swap", "1m"], "swap"),  # memory+swap below the memory limit
    (["--cpuset-cpus", "a-b"], "cpus"),
    (["--l3-cache-schema", "L3:0=f"], "intel rdt"),
    (["--mem-bw-schema", "MB:0=20"], "intel rdt"),
    (["--no-such-flag", "1"], "flag provided but not defined"),
    (["--cpuset-cpus", "9999"], "cpuset.cpus"),  # refused by the kernel
    # Refused by the kernel after the memory limits were written: they are undone,
    # to the config's value or (reservation) to the kernel's default.
    (["--memory", "256m", "--cpu-rt-runtime", "2000000"], "rt_runtime"),
    (["--memory-reservation", "64m", "--cpu-rt-runtime", "2000000"], "rt_runtime"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_a_refused_update_changes_nothing(runtime, bundle, flags, message):
    bundle.linux["resources"].update({"memory": {"limit": 128 << 20}, "pids": {"limit": 50},
                                      "cpu": {"shares": 300}})  # fmt: skip
    start(runtime, bundle, "c1", "sleep", "60")
    before, saved = host_files(runtime), saved_state(runtime, "c1")
    error = one_line_error(runtime("update", *flags, "c1", check=False))
    assert message in error.lower()
    assert host_files(runtime) == before
    assert saved_state(runtime, "c1") == saved


BAD_JSON = [
    (b"not json", "failed to parse resources"),
    (b"[1, 2]", "not a json object"),
    (b'{"memory": {"limit": "a"}}', "memory.limit"),
    (b'{"memory": {"limit": 1.5}}', "memory.limit"),
    (b'{"pids": []}', "pids"),
    (b'{"cpu": {"shares": -3}}', "cpu.shares"),
    (b'{"memory": {"limit": 1048576, "swap": 1024}}', "swap"),
    (b'{"cpu": {"cpus": "0", "shares": 1}}', "cpu.shares"),
]


@pytest.mark.parametrize("data, message", BAD_JSON)
def test_bad_resources_json_changes_nothing(runtime, bundle, data, message):
    start(runtime, bundle, "c1", "sleep", "60")
    before, saved = host_files(runtime), saved_state(runtime, "c1")
    error = one_line_error(runtime("update", "-r", "-", "c1", input=data, check=False))
    assert message in error.lower() and "c1" in error
    assert host_files(runtime) == before
    assert saved_state(runtime, "c1") == saved


def test_a_missing_resources_file(runtime, bundle, tmp_path):
    start(runtime, bundle, "c1", "sleep", "60")
    error = one_line_error(runtime("update", "-r", str(tmp_path / "none.json"), "c1",
                                   check=False))  # fmt: skip
    assert "no such file" in error


def test_update_of_a_stopped_container_is_refused(runtime, bundle):
    start(runtime, bundle, "c1", "true")
    wait_status(runtime, "c1", "stopped")
    saved = saved_state(runtime, "c1")
    assert "not running" in one_line_error(runtime("update", "--pids-limit", "5", "c1",
                                                   check=False))  # fmt: skip
    assert saved_state(runtime, "c1") == saved


def test_update_of_an_unknown_or_deleted_container(runtime, bundle):
    assert "does not exist" in one_line_error(runtime("update", "--memory", "1g", "nope",
                                                      check=False))  # fmt: skip
    start(runtime, bundle, "c1", "sleep", "60")
    runtime("delete", "--force", "c1")
    assert "does not exist" in one_line_error(runtime("update", "--memory", "1g", "c1",
                                                      check=False))  # fmt: skip
    assert runtime.ids() == []


def test_devices_are_not_updated(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    result = runtime("update", "-r", "-", "c1",
                     input=b'{"devices": [{"allow": true, "access": "rwm"}], '
                           b'"pids": {"limit": 7}}')  # fmt: skip
    assert b"devices" in result.stderr
    saved = resources(runtime)
    assert saved["devices"] == [{"allow": False, "access": "rwm"}] and saved["pids"]["limit"] == 7
