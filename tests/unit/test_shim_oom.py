"""Finding a container's memory cgroup and its OOM-kill counter, on fake files."""

from capsa.shim import oom

MOUNTINFO_HYBRID = """\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
"""
MOUNTINFO_V2 = "24 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
MOUNTINFO_NESTED = "30 1 0:28 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"


def test_cgroup_mounts_name_controllers_and_cgroup2(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_HYBRID)
    mounts = oom.cgroup_mounts(str(path))
    assert mounts["memory"] == ("/sys/fs/cgroup/memory", "/")
    assert mounts["cpuacct"] == ("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert mounts[""] == ("/sys/fs/cgroup/unified", "/")


def test_paths_below_a_mount_whose_root_is_not_slash():
    memory = "/sys/fs/cgroup/memory"
    assert oom._below((memory, "/"), "/capsa/c1") == memory + "/capsa/c1"
    assert oom._below(("/sys/fs/cgroup/memory", "/docker/abc"), "/docker/abc/c1") == \
        "/sys/fs/cgroup/memory/c1"  # fmt: skip
    assert oom._below(("/sys/fs/cgroup/memory", "/docker/abc"), "/docker/abc") == "/sys/fs/cgroup/memory"
    assert oom._below(("/sys/fs/cgroup/unified", "/"), "/") == "/sys/fs/cgroup/unified"


def test_the_counter_compares_with_its_first_reading(tmp_path):
    control = tmp_path / "memory.oom_control"
    control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    counter = oom.OomCounter(str(control))
    assert counter.baseline == 2 and not counter.killed()
    control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert counter.killed()
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n")
    counter = oom.OomCounter(str(events))
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert counter.killed()


def test_a_removed_cgroup_reads_as_zero(tmp_path):
    counter = oom.OomCounter(str(tmp_path / "gone" / "memory.events"))
    assert counter.count() == 0 and not counter.killed()


def test_octal_escapes_in_mountinfo():
    assert oom._unescape("/mnt/with\\040space") == "/mnt/with space"
