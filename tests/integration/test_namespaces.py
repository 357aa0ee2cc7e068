"""Namespaces: new ones, joined ones by path, and user namespaces with id maps."""

import os
import subprocess
import time

import pytest


def test_new_namespaces_differ_from_the_hosts(run_container):
    _, out, _ = run_container("for n in pid net ipc uts mnt; do readlink /proc/self/ns/$n; done")
    theirs = out.split()
    for kind, name in zip(["pid", "net", "ipc", "uts", "mnt"], theirs):
        assert name != os.readlink(f"/proc/self/ns/{kind}"), kind


def test_init_is_pid_1_and_sees_only_its_processes(run_container):
    _, out, _ = run_container("echo $$; ls -d /proc/[0-9]* | wc -l")
    pid, count = out.split()
    assert pid == "1"
    assert int(count) <= 3  # sh, and ls/wc of the pipeline


def test_network_namespace_has_only_loopback(run_container):
    _, out, _ = run_container("ls /sys/class/net")
    assert out.split() == ["lo"]


def test_hostname_and_domainname(run_container, bundle):
    bundle.config["hostname"] = "box1"
    bundle.config["domainname"] = "example.test"
    bundle.write()
    _, out, _ = run_container("hostname; cat /proc/sys/kernel/domainname")
    assert out.split() == ["box1", "example.test"]


def test_cgroup_namespace(run_container, bundle):
    bundle.linux["namespaces"].append({"type": "cgroup"})
    bundle.write()
    _, out, _ = run_container("readlink /proc/self/ns/cgroup; grep memory /proc/self/cgroup")
    ns_name, line = out.split()
    assert ns_name != os.readlink("/proc/self/ns/cgroup")
    assert line.endswith(":memory:/")  # the container's cgroup is its root


def test_time_namespace_offsets(run_container, bundle):
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("kernel without time namespaces")
    bundle.linux["namespaces"].append({"type": "time"})
    bundle.linux["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    bundle.write()
    _, out, _ = run_container("cut -d. -f1 /proc/uptime")
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    assert int(out) >= host_uptime + 86400 * 365 - 5


@pytest.fixture
def netns_holder():
    """A process in a new network and uts namespace, for joining by path."""
    proc = subprocess.Popen(["unshare", "--net", "--uts", "sh", "-c",
                             "hostname joined-uts; exec sleep 60"])  # fmt: skip
    deadline = time.monotonic() + 5
    while os.readlink(f"/proc/{proc.pid}/ns/uts") == os.readlink("/proc/self/ns/uts"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_join_namespaces_by_path(run_container, bundle, netns_holder):
    for ns in bundle.linux["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/proc/{netns_holder}/ns/net"
        if ns["type"] == "uts":
            ns["path"] = f"/proc/{netns_holder}/ns/uts"
    bundle.config.pop("hostname")
    bundle.write()
    _, out, _ = run_container("readlink /proc/self/ns/net; hostname")
    net, hostname = out.split()
    assert net == os.readlink(f"/proc/{netns_holder}/ns/net")
    assert hostname == "joined-uts"


def test_join_missing_namespace_path_fails_cleanly(runtime, bundle):
    for ns in bundle.linux["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = "/proc/999999999/ns/net"
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "badns", check=False)
    assert result.returncode != 0
    assert b"namespace" in result.stderr
    assert runtime.ids() == []


def open_path_to(path) -> None:
    """Let an unmapped uid walk down to path (pytest's tmp dirs are 0700)."""
    path = os.path.abspath(str(path))
    while path != "/":
        os.chmod(path, os.stat(path).st_mode | 0o055)
        path = os.path.dirname(path)


def test_user_namespace_with_mappings(run_container, bundle):
    open_path_to(bundle.path)
    open_path_to(bundle.rootfs)
    bundle.linux["namespaces"].append({"type": "user"})
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if m["destination"] != "/sys/fs/cgroup"]  # fmt: skip
    bundle.write()
    _, out, _ = run_container("cat /proc/self/uid_map /proc/self/gid_map; id -u")
    lines = [line.split() for line in out.strip().splitlines()]
    assert lines[0] == ["0", "100000", "65536"]
    assert lines[1] == ["0", "100000", "65536"]
    assert lines[2] == ["0"]
