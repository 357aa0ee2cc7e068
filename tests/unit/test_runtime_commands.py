"""ps, update, events, features and --systemd-cgroup without root: their parsers and shapes.

Nothing here touches a real cgroup: the update merge and the events
conversion work on dicts, the systemd expansion on strings, and create is
stopped before it would fork.
"""

import json

import pytest

from capsa.errors import FailedPrecondition, InvalidArgument, Unsupported
from capsa.runtime import cli, container, events, features, ps, rootfs, update
from capsa.runtime.cgroups import empty_stats, parse_cpu_list, systemd

# --- sizes (docker/go-units RAMInBytes) -------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1024", 1024), ("1k", 1024), ("1K", 1024), ("1kb", 1024), ("1KiB", 1024),
    ("256m", 256 << 20), ("256M", 256 << 20), ("256MB", 256 << 20), ("1g", 1 << 30),
    ("2T", 2 << 40), ("1p", 1 << 50), ("1.5g", 3 << 29), ("0.5k", 512), ("64 MB", 64 << 20),
    ("10b", 10), ("10B", 10), ("1i", 1), ("1.999", 1),
])  # fmt: skip
def test_sizes_as_go_units_reads_them(text, expected):
    assert update.parse_ram_in_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "k", "m1", "1x", "1kk", "1  k", "-1", "-1k", " 1",
                                  "1.2.3", ".5k", "1e3", "١", "10000000000p"])  # fmt: skip
def test_bad_sizes_are_refused(text):
    with pytest.raises(InvalidArgument, match="invalid size"):
        update.parse_ram_in_bytes(text)


# --- update's flags, merge and undo ------------------------------------------------------


def flags(**values):
    return {name.replace("_", "-"): value for name, value in values.items()}


def test_flags_become_resources():
    resources = update.resources_from_flags(flags(
        memory="256m", memory_swap="-1", memory_reservation="1g", kernel_memory_tcp="1m",
        cpu_quota="-1", cpu_period="100000", cpu_share="512", cpu_rt_runtime="95000",
        cpu_rt_period="1000000", cpuset_cpus="0-1", cpuset_mems="0", pids_limit="-1",
        blkio_weight="300", cpu_burst="0", cpu_idle="1"))  # fmt: skip
    assert resources == {
        "memory": {"limit": 256 << 20, "swap": -1, "reservation": 1 << 30, "kernelTCP": 1 << 20},
        "cpu": {"quota": -1, "period": 100000, "shares": 512, "realtimeRuntime": 95000,
                "realtimePeriod": 1000000, "cpus": "0-1", "mems": "0", "burst": 0, "idle": 1},
        "pids": {"limit": -1}, "blockIO": {"weight": 300}}  # fmt: skip


def test_zero_pids_limit_and_blkio_weight_mean_unchanged_as_in_runc():
    assert update.resources_from_flags(flags(pids_limit="0", blkio_weight="0")) == {}
    assert update.resources_from_flags(flags(memory="", cpu_quota=None)) == {}


@pytest.mark.parametrize("name, value, message", [
    ("cpu-period", "-1", "out of range"), ("cpu-share", "x", "not an integer"),
    ("cpu-quota", "1.0", "not an integer"), ("pids-limit", "", None),
    ("pids-limit", "1e3", "not an integer"), ("memory", "1x", "invalid size"),
    ("memory-swap", "-2", "invalid size"), ("blkio-weight", "70000", "out of range"),
    ("cpu-quota", str(2**63), "out of range"), ("cpu-period", "٣", "not an integer"),
])  # fmt: skip
def test_bad_flag_values(name, value, message):
    if message is None:
        assert update.resources_from_flags({name: value}) == {}
        return
    with pytest.raises(InvalidArgument, match=f"--{name}.*{message}"):
        update.resources_from_flags({name: value})


def test_rdt_flags_are_refused():
    update.refuse_rdt(flags(l3_cache_schema=None, mem_bw_schema=""))
    with pytest.raises(Unsupported, match="intel rdt"):
        update.refuse_rdt(flags(l3_cache_schema="L3:0=f"))
    with pytest.raises(Unsupported, match="mem-bw-schema"):
        update.refuse_rdt(flags(mem_bw_schema="MB:0=50"))


def test_the_cli_spells_every_update_flag():
    names = {f.name for f in cli.COMMANDS["update"].flags}
    assert names == {"resources", *update.FLAG_FIELDS, *update.RDT_FLAGS}
    assert {"memory", "cpu-quota", "pids-limit", "blkio-weight", "kernel-memory",
            "kernel-memory-tcp", "l3-cache-schema", "mem-bw-schema"} <= names  # fmt: skip


def test_merge_keeps_what_is_not_given():
    old = {"devices": [{"allow": False, "access": "rwm"}],
           "memory": {"limit": 100, "reservation": 50}, "pids": {"limit": 9},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "unified": {"a.b": "1"}}
    new = {"memory": {"limit": 200, "reservation": None}, "cpu": {"shares": 3},
           "hugepageLimits": [], "unified": {"c.d": "2"}, "pids": None}
    assert update.merge(old, new) == {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": 200, "reservation": 50}, "pids": {"limit": 9},
        "hugepageLimits": [], "unified": {"a.b": "1", "c.d": "2"}, "cpu": {"shares": 3}}
    assert old["memory"] == {"limit": 100, "reservation": 50}  # not modified


def test_unlimited_memory_without_swap_means_unlimited_swap():
    assert update.merge({"memory": {"swap": 300}}, {"memory": {"limit": -1}}) == \
        {"memory": {"limit": -1, "swap": -1}}
    assert update.merge({}, {"memory": {"limit": -1, "swap": 500}}) == \
        {"memory": {"limit": -1, "swap": 500}}


def test_restore_values_undo_an_update():
    old = {"memory": {"limit": 100}, "cpu": {"cpus": "0"}}
    new = {"memory": {"limit": 200, "reservation": 7}, "cpu": {"shares": 5, "cpus": "1"},
           "pids": {"limit": 3}}
    assert update.restore_values(old, new) == {
        "memory": {"limit": 100, "reservation": -1}, "cpu": {"cpus": "0", "shares": 1024},
        "pids": {"limit": -1}}


@pytest.mark.parametrize("resources", [
    {"cpu": {"shares": 1}}, {"cpu": {"shares": 262145}}, {"cpu": {"period": 999}},
    {"cpu": {"period": 1000001}}, {"cpu": {"quota": 999}}, {"blockIO": {"weight": 9}},
    {"cpu": {"realtimePeriod": 2_000_000_000}},
])  # fmt: skip
def test_values_the_kernel_would_refuse_or_clamp(resources):
    with pytest.raises(InvalidArgument):
        update.check_bounds(resources)


def test_values_the_kernel_takes():
    update.check_bounds({"cpu": {"shares": 2, "period": 1000, "quota": -5},
                         "blockIO": {"weight": 1000}})  # fmt: skip
    update.check_bounds({"cpu": {"shares": 0, "period": 0, "quota": 0}})  # 0: unset


def test_resources_json_from_a_file_and_stdin(tmp_path):
    import io

    path = tmp_path / "r.json"
    path.write_text('{"pids": {"limit": 5}}')
    assert update.resources_from_json(str(path)) == {"pids": {"limit": 5}}
    assert update.resources_from_json("-", io.BytesIO(b'{"memory": {}}')) == {"memory": {}}
    with pytest.raises(InvalidArgument, match="standard input"):
        update.resources_from_json("-", io.BytesIO(b"{"))
    with pytest.raises(InvalidArgument, match="not a JSON object"):
        update.resources_from_json("-", io.BytesIO(b"[]"))
    with pytest.raises(InvalidArgument, match="no such file"):
        update.resources_from_json(str(tmp_path / "none"))


def test_update_validates_before_loading_the_container(tmp_path):
    with pytest.raises(InvalidArgument, match="c1.*memory.limit"):
        update.update(str(tmp_path), "c1", {"memory": {"limit": "x"}}, print)


# --- events: durations and runc's JSON -------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("5s", 5), ("100ms", 0.1), ("1m30s", 90), ("1.5h", 5400), ("250us", 0.00025),
    ("250µs", 0.00025), ("10ns", 1e-8), ("0", 0), ("+2s", 2), ("-1s", -1), ("1h1m1s1ms", 3661.001),
])  # fmt: skip
def test_durations_as_go_parses_them(text, seconds):
    assert events.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1.2.3s", ".s", "1s5", "soon", "-"])
def test_bad_durations(text):
    with pytest.raises(InvalidArgument, match="invalid duration"):
        events.parse_duration(text)


def test_stats_in_runcs_shape_with_omitempty():
    stats = empty_stats()
    stats["cpu"]["usage"].update(total=10, percpu=[6, 4], kernel=3, user=0)
    stats["memory"]["usage"] = {"usage": 5, "max": 0, "limit": 100, "failcnt": 0}
    stats["memory"]["raw"] = {"z": 1, "a": 0}
    stats["pids"] = {"current": 1, "limit": 0}
    stats["blkio"]["ioServiceBytesRecursive"] = [{"major": 8, "minor": 0, "op": "Read",
                                                  "value": 0}]  # fmt: skip
    stats["hugetlb"] = {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}
    stats["cpuset"] = {"cpus": [0, 1], "mems": [], "sched_relax_domain_level": -1}
    event = {"type": "stats", "id": "c1", "data": events.runc_stats(stats)}
    assert events.encode(event) == (
        '{"type":"stats","id":"c1","data":{'
        '"cpu":{"usage":{"total":10,"percpu":[6,4],"kernel":3,"user":0},"throttling":{}},'
        '"cpuset":{"cpus":[0,1],"cpu_exclusive":0,"mem_hardwall":0,"mem_exclusive":0,'
        '"memory_migrate":0,"memory_spread_page":0,"memory_spread_slab":0,'
        '"memory_pressure":0,"sched_load_balance":0,"sched_relax_domain_level":-1},'
        '"memory":{"usage":{"limit":100,"usage":5,"failcnt":0},'
        '"swap":{"limit":0,"failcnt":0},"kernel":{"limit":0,"failcnt":0},'
        '"kernelTCP":{"limit":0,"failcnt":0},"raw":{"a":0,"z":1}},'
        '"pids":{"current":1},'
        '"blkio":{"ioServiceBytesRecursive":[{"major":8,"op":"Read"}]},'
        '"hugetlb":{"2MB":{"failcnt":0}},"intel_rdt":{},"network_interfaces":null}}')


def test_stats_without_cpuset_leave_it_out():
    assert "cpuset" not in events.runc_stats(empty_stats())


def test_an_oom_event_is_as_runc_writes_it():
    assert events.encode({"type": "oom", "id": "c<1>&"}) == \
        '{"type":"oom","id":"c\\u003c1\\u003e\\u0026"}'


@pytest.mark.parametrize("text, cpus", [("0-3,8", [0, 1, 2, 3, 8]), ("", []), ("5", [5]),
                                        ("0-1\n", [0, 1])])  # fmt: skip
def test_cpu_lists(text, cpus):
    assert parse_cpu_list(text) == cpus


# --- ps ---------------------------------------------------------------------------------

PS_EF = b"""UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root         605     602  0 10:01 ?        00:00:00 sleep 1000
root         606     605  0 10:01 ?        00:00:00 sleep 1000 \xff
"""


def test_ps_keeps_the_header_and_the_containers_lines():
    assert ps.filter_table(PS_EF, [605, 606, 9999]) == b"\n".join(PS_EF.splitlines()[0:1] +
                                                                  PS_EF.splitlines()[2:]) + b"\n"
    assert ps.filter_table(PS_EF, []) == PS_EF.splitlines()[0] + b"\n"


def test_ps_finds_the_pid_column_anywhere():
    out = b"COMMAND   PID\nsleep     605\ninit        1\n"
    assert ps.filter_table(out, [605]) == b"COMMAND   PID\nsleep     605\n"


def test_ps_without_a_pid_column_or_with_garbage():
    with pytest.raises(InvalidArgument, match="couldn't find PID field"):
        ps.filter_table(b"COMMAND\nsleep\n", [1])
    with pytest.raises(Exception, match="unable to parse pid"):
        ps.filter_table(b"PID CMD\nxx sleep\n", [1])


# --- features ---------------------------------------------------------------------------


def test_mount_options_are_what_rootfs_acts_on():
    assert features.mount_options() == sorted(
        {*rootfs.MOUNT_FLAGS, *rootfs.PROPAGATION, *rootfs.RECURSIVE_ATTRS, "tmpcopyup"})
    for option in features.mount_options():
        rootfs.Options([option])  # none is refused or passed on as data
        assert rootfs.Options([option]).data is None


def test_the_features_document_is_json_with_the_specs_fields():
    document = features.document("9.9")
    json.dumps(document)
    assert document["annotations"]["org.capsa.runtime.version"] == "9.9"
    assert document["linux"]["intelRdt"] == {"enabled": False}


# --- --systemd-cgroup ---------------------------------------------------------------------


@pytest.mark.parametrize("name, path", [
    ("system.slice", "/system.slice"), ("a-b.slice", "/a.slice/a-b.slice"),
    ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"), ("-.slice", "/"),
    ("user-1000.slice", "/user.slice/user-1000.slice"),
])  # fmt: skip
def test_expand_slice_as_runc(name, path):
    assert systemd.expand_slice(name) == path


@pytest.mark.parametrize("name", ["", ".slice", "a", "a.scope", "-a.slice", "a--b.slice",
                                  "a-.slice", "a/b.slice", "a.slice/b-c.slice"])  # fmt: skip
def test_bad_slice_names(name):
    with pytest.raises(InvalidArgument, match="slice"):
        systemd.expand_slice(name)


@pytest.mark.parametrize("cgroups_path, expected", [
    ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
    ("a-b.slice:pfx:web", "/a.slice/a-b.slice/pfx-web.scope"),
    (":crio:x", "/system.slice/crio-x.scope"),
    ("-.slice:p:n", "/p-n.scope"),
    ("machine.slice:p:kube-pod1.slice", "/machine.slice/kube-pod1.slice"),
    ("machine.slice::n", "/machine.slice/n.scope"),
    (None, "/system.slice/capsa-c1.scope"), ("", "/system.slice/capsa-c1.scope"),
])  # fmt: skip
def test_systemd_cgroups_paths(cgroups_path, expected):
    assert systemd.cgroup_path(cgroups_path, "c1") == expected


@pytest.mark.parametrize("cgroups_path", ["/abs/path", "a:b", "a:b:c:d", "x.slice:p:",
                                          "bad:p:n", "a.slice:p:..", "a.slice:p/q:n"])  # fmt: skip
def test_bad_systemd_cgroups_paths(cgroups_path):
    with pytest.raises(InvalidArgument):
        systemd.cgroup_path(cgroups_path, "c1")


def test_booted_is_sd_booted(tmp_path):
    assert not systemd.booted(str(tmp_path / "none"))
    assert systemd.booted(str(tmp_path))


def test_create_refuses_the_flag_where_systemd_is_not_init(tmp_path, monkeypatch):
    monkeypatch.setattr(systemd, "booted", lambda: False)
    root = tmp_path / "state"
    with pytest.raises(FailedPrecondition, match="^systemd cgroup driver requested but "
                                                 "systemd is not the init on this host$"):
        container.create(str(root), "c1", container.Options(bundle=str(tmp_path),
                                                            systemd_cgroup=True))
    assert not root.exists()  # nothing made, not even the state directory


def test_the_cli_prints_the_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(systemd, "booted", lambda: False)
    code = cli.main(["--root", str(tmp_path), "--systemd-cgroup", "create", "-b", str(tmp_path),
                     "c1"])  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err == ("capsa-runtime: systemd cgroup driver requested but "
                                       "systemd is not the init on this host\n")


def test_on_a_systemd_host_the_slice_path_reaches_the_cgroup_manager(tmp_path, monkeypatch):
    from capsa.runtime import cgroups, spec

    config = spec.default()
    config["root"]["path"] = str(tmp_path)
    config["process"]["terminal"] = False
    config["linux"]["cgroupsPath"] = "machine-web.slice:capsa:c1"
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(systemd, "booted", lambda: True)
    asked = []

    def new_manager(path, container_id):
        asked.append((path, container_id))
        raise RuntimeError("stop before anything is made")

    monkeypatch.setattr(cgroups, "new_manager", new_manager)
    with pytest.raises(RuntimeError, match="stop"):
        container.create(str(tmp_path / "state"), "c1",
                         container.Options(bundle=str(tmp_path), systemd_cgroup=True))
    assert asked == [("/machine.slice/machine-web.slice/capsa-c1.scope", "c1")]
    assert not (tmp_path / "state" / "c1").exists()  # undone


def test_without_the_flag_a_slice_path_is_refused(tmp_path):
    from capsa.runtime import spec

    config = spec.default()
    config["linux"]["cgroupsPath"] = "system.slice:capsa:c1"
    with pytest.raises(InvalidArgument, match="--systemd-cgroup"):
        spec.validate(config)
    spec.validate(config, systemd_cgroup=True)


# --- events: the stream, with a fake cgroup and a real child process ----------------------


class FakeCgroup:
    """A cgroup manager whose OOM-kill count rises when told."""

    def __init__(self, paths):
        self._paths, self.kills, self.stats_read = paths, 0, 0

    def paths(self):
        return self._paths

    def oom_kill_count(self):
        return self.kills

    def stats(self):
        self.stats_read += 1
        return empty_stats()

    def exists(self):
        return True


class FakeState:
    def __init__(self, pid, cgroup):
        self.id, self.pid, self._cgroup = "c1", pid, cgroup

    def alive(self):
        from capsa.linux.proc import is_alive, start_time

        return is_alive(self.pid, start_time(self.pid) or -1)

    def cgroup(self):
        return self._cgroup


def test_oom_watch_counts_new_kills_once(tmp_path):
    (tmp_path / "memory.events").write_text("oom 0\noom_kill 0\n")
    cgroup = FakeCgroup({"unified": str(tmp_path)})
    watch = events.OomWatch(cgroup)
    assert watch.kind == "v2"
    assert watch.events(False) == 0
    cgroup.kills = 2
    assert watch.events(True) == 2
    assert watch.events(False) == 0
    watch.close()


def test_oom_watch_without_a_memory_cgroup(tmp_path):
    cgroup = FakeCgroup({"unified": str(tmp_path / "gone")})
    cgroup.oom_kill_count = lambda: (_ for _ in ()).throw(Unsupported("no memory"))
    watch = events.OomWatch(cgroup)
    assert watch.kind == "" and watch.events(False) == 0


def test_the_stream_writes_stats_and_ooms_and_ends_with_the_init(tmp_path):
    import subprocess
    import time

    (tmp_path / "memory.events").write_text("oom_kill 0\n")
    cgroup = FakeCgroup({"unified": str(tmp_path)})
    child = subprocess.Popen(["sleep", "0.55"])
    written = []

    def write(event):
        written.append(event)
        if len(written) == 2:
            cgroup.kills = 1  # an OOM kill between two stats

    began = time.monotonic()
    try:
        events.stream(FakeState(child.pid, cgroup), 0.1, write, print)
    finally:
        child.wait()
    assert time.monotonic() - began < 3
    kinds = [event["type"] for event in written]
    assert kinds.count("oom") == 1 and kinds.count("stats") >= 3
    assert kinds.index("oom") >= 2
    assert all(event["id"] == "c1" for event in written)


# --- cpuset statistics (runc reports them; `events` needs them from the drivers) ----------


def test_v1_cpuset_stats(tmp_path):
    from capsa.runtime.cgroups.v1 import V1Manager

    directory = tmp_path / "cpuset" / "c1"
    directory.mkdir(parents=True)
    for name, value in {"cpus": "0-2", "mems": "0", "sched_load_balance": "1",
                        "sched_relax_domain_level": "-1", "cpu_exclusive": "0"}.items():
        (directory / f"cpuset.{name}").write_text(value + "\n")
    stats = V1Manager(str(tmp_path), {"cpuset": str(directory)}).stats()
    assert stats["cpuset"]["cpus"] == [0, 1, 2] and stats["cpuset"]["mems"] == [0]
    assert stats["cpuset"]["sched_load_balance"] == 1
    assert stats["cpuset"]["sched_relax_domain_level"] == -1
    assert stats["cpuset"]["mem_hardwall"] == 0  # a file the kernel lacks reads as 0


def test_v2_cpuset_stats_are_the_effective_sets(tmp_path):
    from capsa.runtime.cgroups.v2 import V2Manager

    directory = tmp_path / "c1"
    directory.mkdir()
    (directory / "cpuset.cpus.effective").write_text("0-1\n")
    (directory / "cpuset.mems.effective").write_text("0\n")
    stats = V2Manager(str(tmp_path), str(directory)).stats()
    assert stats["cpuset"] == {"cpus": [0, 1], "mems": [0]}
    (directory / "cpuset.cpus.effective").unlink()
    assert "cpuset" not in V2Manager(str(tmp_path), str(directory)).stats()
