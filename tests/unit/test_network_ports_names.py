"""-p parsing and port allocation; the /etc files of a container's network."""

import socket

import pytest

from capsa.errors import FailedPrecondition, InvalidArgument
from capsa.network import names, ports
from capsa.network.ports import Mapping


@pytest.mark.parametrize("spec, expected", [
    ("80", [Mapping(80)]),
    ("8080:80", [Mapping(80, "tcp", "", 8080)]),
    ("127.0.0.1:8080:80/udp", [Mapping(80, "udp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [Mapping(80, "tcp", "127.0.0.1", 0)]),
    ("8000-8001:80-81", [Mapping(80, "tcp", "", 8000), Mapping(81, "tcp", "", 8001)]),
])  # fmt: skip
def test_publish_specs_as_docker_reads_them(spec, expected):
    assert ports.parse_publish(spec) == expected


@pytest.mark.parametrize("spec, error", [
    ("80/icmp", "invalid proto"), ("x:80", "invalid containerPort"), ("1.2.3:80:80", "invalid IP address"),
    ("8000-8002:80-81", "invalid ranges"), ("0:80", "invalid port range"), ("70000", "invalid port range"),
    ("a:b:c:d", "invalid port format"),
])  # fmt: skip
def test_bad_publish_specs_are_one_line_errors(spec, error):
    with pytest.raises(InvalidArgument, match=error):
        ports.parse_publish(spec)


def test_expose_keys_and_P_mappings():
    assert ports.parse_expose("8080-8081/udp") == ["8080/udp", "8081/udp"]
    assert ports.exposed_mappings(["80/tcp", "53/udp"]) == [Mapping(80), Mapping(53, "udp")]


def test_allocation_fills_free_ports_and_refuses_taken_ones():
    done = ports.allocate([Mapping(80), Mapping(81, "udp", "127.0.0.1")], set())
    assert all(m.host_port > 0 for m in done) and done[1].host_ip == "127.0.0.1"
    with pytest.raises(FailedPrecondition, match="port is already allocated"):
        ports.allocate([Mapping(80, "tcp", "127.0.0.1", 18080)], {("", 18080, "tcp")})
    # another protocol or another address is no conflict
    taken = {("127.0.0.2", 18081, "tcp"), ("", 18081, "udp")}
    assert ports.allocate([Mapping(80, "tcp", "127.0.0.1", 18081)], taken)[0].host_port == 18081


def test_a_port_a_host_process_holds_is_refused():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(FailedPrecondition, match=f"Bind for 127.0.0.1:{port} failed"):
            ports.allocate([Mapping(80, "tcp", "127.0.0.1", port)], set())


def test_ports_as_inspect_and_the_records_show_them():
    mappings = [Mapping(80, "tcp", "", 8080), Mapping(80, "tcp", "127.0.0.1", 9090)]
    assert ports.describe(mappings) == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                                                   {"HostIp": "127.0.0.1", "HostPort": "9090"}]}  # fmt: skip
    assert ports.from_records(ports.to_records(mappings)) == mappings


def test_hosts_lists_extra_hosts_itself_and_its_peers():
    text = names.hosts_text("box", "10.89.0.2", [("10.89.0.3", ["web", "www", "0123456789ab"])], ["db:10.1.2.3"])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-3:] == ["10.1.2.3\tdb", "10.89.0.2\tbox", "10.89.0.3\tweb www 0123456789ab"]
    assert "127.0.1.1\tbox" in names.hosts_text("box", "", [], [])


def test_resolv_conf_drops_loopback_servers_and_takes_the_flags(tmp_path):
    source = tmp_path / "resolv.conf"
    source.write_text("nameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch corp\noptions edns0\n")
    assert names.resolv_text(source=str(source)) == "nameserver 10.0.0.1\nsearch corp\noptions edns0\n"
    assert "nameserver 127.0.0.53" in names.resolv_text(host_network=True, source=str(source))
    text = names.resolv_text(["1.1.1.1"], ["a.test"], ["ndots:2"], source=str(source))
    assert text == "nameserver 1.1.1.1\nsearch a.test\noptions ndots:2\n"
    source.write_text("nameserver 127.0.0.53\n")
    assert names.resolv_text(source=str(source)) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_rewrite_keeps_the_inode_a_bind_mount_holds(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a much longer first version\n")
    inode = path.stat().st_ino
    names.rewrite(str(path), "short\n")
    assert path.read_text() == "short\n" and path.stat().st_ino == inode
