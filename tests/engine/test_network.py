"""Networks through CNI, end to end: published ports answered on 127.0.0.1,
names on user networks, isolation, internal networks, the other network
modes, and nothing left on the host (the capsa fixture checks links,
iptables rules and namespace mounts after every test).

Traffic stays on 127.0.0.1 and inside the namespaces the tests make."""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import pytest

pytestmark = pytest.mark.root

HTTPD = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"
# A UDP echo server: the host's python, bound into the busybox container.
HOST_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9999))\n"
            "while True:\n data, peer = s.recvfrom(512); s.sendto(b'echo:' + data, peer)")  # fmt: skip


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sh(capsa, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`capsa run --rm ARGS...` whose last argument is a shell script."""
    *flags, script = args
    return capsa("run", "--rm", *flags, "busybox", "sh", "-c", script, check=check)


def http_get(address: str) -> str:
    """A script that prints what http://ADDRESS/ answers, or "unreachable"."""
    return f'echo -e "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {address} 80 | tail -n 1 || true; echo end'


@pytest.fixture
def networks(capsa):
    made = []

    def create(*args: str) -> str:
        capsa("network", "create", *args)
        made.append(args[-1])
        return args[-1]

    yield create
    capsa.remove_all()
    for name in made:
        capsa("network", "rm", "--force", name, check=False)


def test_published_port_answers_on_the_hosts_loopback(capsa):
    port = free_port()
    capsa("run", "-d", "--name", "web", "-p", f"{port}:80", "-h", "webhost", "busybox", "sh", "-c", HTTPD)
    assert fetch(f"http://127.0.0.1:{port}/") == "hello from webhost\n"
    assert capsa("port", "web").stdout == f"80/tcp -> 0.0.0.0:{port}\n"
    assert capsa("port", "web", "80").stdout == f"0.0.0.0:{port}\n"
    assert f"0.0.0.0:{port}->80/tcp" in capsa("ps").stdout
    info = json.loads(capsa("inspect", "web").stdout)[0]
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert info["NetworkSettings"]["IPAddress"].startswith("10.89.")
    assert info["NetworkSettings"]["Networks"]["capsa"]["Gateway"].endswith(".1")
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    assert "No public port '81/tcp'" in capsa.fails("port", "web", "81")
    # rm takes the container's veth and port rules; the network's bridge stays until the network goes
    capsa("rm", "-f", "web")
    assert str(port) not in subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert not [link for link in os.listdir("/sys/class/net") if link.startswith("veth")]
    bridge = json.loads(capsa("network", "inspect", "capsa").stdout)[0]["Options"]["com.docker.network.bridge.name"]
    assert bridge in os.listdir("/sys/class/net")
    capsa("network", "rm", "capsa")
    assert bridge not in os.listdir("/sys/class/net")


def test_a_port_without_host_port_gets_a_free_one_and_P_publishes_exposed_ports(capsa):
    capsa("run", "-d", "--name", "web", "-p", "127.0.0.1::80", "--expose", "8080", "-P", "busybox",
          "sh", "-c", HTTPD)  # fmt: skip
    lines = sorted(capsa("port", "web").stdout.splitlines())
    assert [line.split(" -> ")[0] for line in lines] == ["80/tcp", "8080/tcp"]  # -P adds what -p did not
    local = next(line.split(" -> ")[1] for line in lines if "127.0.0.1:" in line)
    assert fetch(f"http://{local}/").startswith("hello from")


def test_a_published_udp_port_echoes(capsa):
    port = free_port(socket.SOCK_DGRAM)
    capsa("run", "-d", "--name", "udp", "-p", f"127.0.0.1:{port}:9999/udp", *HOST_PYTHON, "busybox",
          "/usr/bin/python3", "-c", UDP_ECHO)  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for _ in range(40):  # until the server is up
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                assert s.recvfrom(512)[0] == b"echo:ping"
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("no UDP echo through the published port")


def test_a_taken_host_port_is_refused(capsa):
    port = free_port()
    capsa("run", "-d", "--name", "first", "-p", f"{port}:80", "busybox", "sh", "-c", HTTPD)
    error = capsa.fails("run", "-d", "--name", "second", "-p", f"{port}:80", "busybox", "sh", "-c", HTTPD)
    assert f"Bind for 0.0.0.0:{port} failed: port is already allocated" in error
    assert "Created" in capsa("ps", "-a", "--filter", "name=second").stdout  # as Docker leaves it
    first_id = json.loads(capsa("inspect", "first").stdout)[0]["Id"]
    assert fetch(f"http://127.0.0.1:{port}/") == f"hello from {first_id[:12]}\n"


def test_containers_find_each_other_by_name_and_alias_and_names_follow_them(capsa, networks):
    networks("appnet")
    capsa("run", "-d", "--name", "web", "--network", "appnet", "--network-alias", "www", "busybox",
          "sh", "-c", HTTPD)  # fmt: skip
    web_id = capsa("inspect", "web").stdout and json.loads(capsa("inspect", "web").stdout)[0]["Id"]
    out = sh(capsa, "--network", "appnet", f"{http_get('web')}; {http_get('www')}").stdout.split("\n")
    assert out[:4] == [f"hello from {web_id[:12]}", "end", f"hello from {web_id[:12]}", "end"], out
    # a container started later appears in the running one's /etc/hosts, and leaves it with rm
    capsa("run", "-d", "--name", "later", "--network", "appnet", "busybox", "sleep", "60")
    hosts = capsa("exec", "web", "cat", "/etc/hosts").stdout
    assert any(line.split()[1:2] == ["later"] for line in hosts.splitlines()), hosts
    capsa("rm", "-f", "later")
    assert "later" not in capsa("exec", "web", "cat", "/etc/hosts").stdout


def test_two_networks_do_not_talk(capsa, networks):
    networks("left")
    networks("right")
    capsa("run", "-d", "--name", "server", "--network", "left", "busybox", "sh", "-c", HTTPD)
    address = json.loads(capsa("inspect", "server").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert sh(capsa, "--network", "left", http_get(address)).stdout.startswith("hello from")
    assert sh(capsa, "--network", "right", http_get(address)).stdout == "end\n"
    assert sh(capsa, http_get(address)).stdout == "end\n"  # nor the default network


def test_an_internal_network_has_no_route_out(capsa, networks):
    networks("--internal", "--subnet", "10.89.200.0/24", "inner")
    out = sh(capsa, "--network", "inner", "ip route; ping -c 1 -W 1 192.0.2.1 2>&1; true").stdout
    assert out.splitlines()[0].startswith("10.89.200.0/24 dev eth0")
    assert "default" not in out and "unreachable" in out.lower(), out


def test_network_container_shares_the_namespace(capsa):
    capsa("run", "-d", "--name", "first", "busybox", "sh", "-c", HTTPD)
    out = sh(capsa, "--network", "container:first", f"{http_get('127.0.0.1')}; hostname").stdout.split("\n")
    first_id = json.loads(capsa("inspect", "first").stdout)[0]["Id"]
    assert out[:3] == [f"hello from {first_id[:12]}", "end", first_id[:12]]
    assert "conflicting options" in capsa.fails("run", "--rm", "--network", "container:first", "-p", "80",
                                                "busybox", "true")  # fmt: skip


def test_host_network_sees_the_hosts_interfaces(capsa):
    out = sh(capsa, "--network", "host", "ls /sys/class/net; hostname").stdout.split()
    assert set(out[:-1]) == set(subprocess.run(["ls", "/sys/class/net"], capture_output=True,
                                               text=True, check=True).stdout.split())  # fmt: skip
    assert out[-1] == socket.gethostname()


def test_network_none_has_loopback_only_and_up(capsa):
    out = sh(capsa, "--network", "none", "ls /sys/class/net; cat /sys/class/net/lo/operstate; ping -c1 -W1 127.0.0.1")
    assert out.stdout.split()[:2] == ["lo", "unknown"] and "1 packets received" in out.stdout


def test_dns_flags_and_extra_hosts(capsa):
    out = sh(capsa, "--dns", "10.0.0.53", "--dns-search", "example.test", "--dns-option", "ndots:2",
             "--add-host", "db:10.1.2.3", "-h", "box", "cat /etc/resolv.conf /etc/hosts").stdout  # fmt: skip
    assert "nameserver 10.0.0.53\nsearch example.test\noptions ndots:2\n" in out
    assert "10.1.2.3\tdb\n" in out
    assert any(line.endswith("\tbox") and line.startswith("10.89.") for line in out.splitlines()), out
    assert "bad format for add-host" in capsa.fails("run", "--rm", "--add-host", "nocolon", "busybox", "true",
                                                    code=125)  # fmt: skip


def test_network_commands_and_their_errors(capsa, networks):
    network_id = capsa("network", "create", "--subnet", "10.89.210.0/24", "--gateway", "10.89.210.254",
                       "--label", "team=a", "made").stdout.strip()  # fmt: skip
    try:
        assert len(network_id) == 64
        listed = capsa("network", "ls").stdout
        assert "made" in listed and "capsa" in listed
        info = json.loads(capsa("network", "inspect", "made").stdout)[0]
        assert info["IPAM"]["Config"] == [{"Subnet": "10.89.210.0/24", "Gateway": "10.89.210.254"}]
        assert info["Labels"] == {"team": "a"} and info["Containers"] == {}
        assert "already exists" in capsa.fails("network", "create", "made")
        assert "overlaps" in capsa.fails("network", "create", "--subnet", "10.89.210.0/25", "other")
        assert "invalid subnet" in capsa.fails("network", "create", "--subnet", "10.89.300.0/24", "other")
        assert "not found" in capsa.fails("run", "--rm", "--network", "nosuch", "busybox", "true", code=125)
        assert capsa("ps", "-aq").stdout == ""
        capsa("run", "-d", "--name", "user", "--network", "made", "busybox", "sleep", "60")
        assert "active endpoints" in capsa.fails("network", "rm", "made")
        capsa("run", "-d", "--name", "plain", "busybox", "sleep", "60")
        assert "active endpoints" in capsa.fails("network", "rm", "capsa")
        info = json.loads(capsa("network", "inspect", "made").stdout)[0]
        assert [c["Name"] for c in info["Containers"].values()] == ["user"]
        assert info["Containers"][next(iter(info["Containers"]))]["IPv4Address"] == "10.89.210.1/24"
    finally:
        capsa("rm", "-f", "user", "plain", check=False)
    assert capsa("network", "rm", "made").stdout == "made\n"
    assert "no such network: made" in capsa.fails("network", "inspect", "made")
    capsa("network", "create", "spare")
    assert capsa("network", "prune", "-f").stdout == "Deleted Networks:\ncapsa\nspare\n"


def test_connect_and_disconnect_a_running_container(capsa, networks):
    networks("extra")
    capsa("run", "-d", "--name", "box", "busybox", "sleep", "60")
    capsa("network", "connect", "--alias", "boxy", "extra", "box")
    assert "eth1" in capsa("exec", "box", "ls", "/sys/class/net").stdout
    info = json.loads(capsa("inspect", "box").stdout)[0]["NetworkSettings"]["Networks"]
    assert set(info) == {"capsa", "extra"} and info["extra"]["Aliases"] == ["boxy"]
    assert "already exists" in capsa.fails("network", "connect", "extra", "box")
    capsa("network", "disconnect", "extra", "box")
    assert "eth1" not in capsa("exec", "box", "ls", "/sys/class/net").stdout
    assert "is not connected" in capsa.fails("network", "disconnect", "extra", "box")


def test_a_restart_keeps_the_address(capsa):
    capsa("run", "-d", "--name", "flaky", "--restart", "always", "busybox", "sh", "-c",
          "ip -4 -o addr show eth0 | awk '{print $4}'; sleep 0.3; exit 1")  # fmt: skip
    deadline = time.monotonic() + 20
    while len(capsa("logs", "flaky").stdout.split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    addresses = capsa("logs", "flaky").stdout.split()
    assert len(addresses) >= 2 and len(set(addresses)) == 1, addresses


def test_what_a_crash_left_is_cleaned_by_the_next_prune(capsa):
    capsa("run", "-d", "--name", "lost", "-p", f"{free_port()}:80", "busybox", "sleep", "60")
    container_id = json.loads(capsa("inspect", "lost").stdout)[0]["Id"]
    # as if capsa died halfway through rm: the container, its shim and its record are gone, its network is not
    with open(f"{capsa.state}/containers/{container_id}/shim.json") as f:
        shim_pid = json.load(f)["shim_pid"]
    capsa("kill", "lost")
    capsa("wait", "lost")
    os.kill(shim_pid, signal.SIGKILL)
    subprocess.run(["capsa-runtime", "--root", f"{capsa.state}/runtime", "delete", "--force", container_id],
                   capture_output=True, check=False)  # fmt: skip
    db = sqlite3.connect(f"{capsa.root}/capsa.db")
    db.execute("PRAGMA foreign_keys = ON")
    with db:
        db.execute("DELETE FROM containers WHERE id = ?", (container_id,))
    db.close()
    subprocess.run(["umount", "-l", f"{capsa.root}/containers/{container_id}/rootfs"], check=True)
    shutil.rmtree(f"{capsa.root}/containers/{container_id}")
    shutil.rmtree(f"{capsa.state}/containers/{container_id}")
    assert os.listdir(f"{capsa.state}/netns") == [container_id]
    assert "Deleted Networks:\ncapsa\n" in capsa("system", "prune", "-f").stdout
    assert os.listdir(f"{capsa.state}/netns") == []


def test_start_after_stop_checks_the_attachment_and_mends_a_broken_one(capsa):
    capsa("run", "-d", "--name", "box", "-t", "busybox", "sh")
    info = json.loads(capsa("inspect", "box").stdout)[0]
    address = info["NetworkSettings"]["IPAddress"]
    capsa("stop", "-t", "0", "box")
    capsa("start", "box")  # CNI CHECK passes: the same attachment
    assert json.loads(capsa("inspect", "box").stdout)[0]["NetworkSettings"]["IPAddress"] == address
    capsa("stop", "-t", "0", "box")
    # break it while stopped: the host end of its veth pair goes (and the container's end with it)
    veths = {link for link in os.listdir("/sys/class/net") if link.startswith("veth")}
    assert len(veths) == 1
    subprocess.run(["ip", "link", "delete", veths.pop()], check=True)
    capsa("start", "box")  # CHECK fails: DEL what is left, ADD again
    gateway = json.loads(capsa("inspect", "box").stdout)[0]["NetworkSettings"]["Gateway"]
    out = capsa("exec", "box", "ping", "-c", "1", "-W", "2", gateway).stdout
    assert "1 packets received" in out
