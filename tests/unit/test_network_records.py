"""Networks in capsa.db (names, subnets, bridges, endpoints) and the
iptables batches firewall.py computes from an iptables-save text."""

import pytest

from capsa import db
from capsa.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from capsa.network import firewall, networks
from capsa.network.networks import Networks, conflist


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(networks, "host_routes", list)
    conn = db.connect(str(tmp_path))
    conn.execute("INSERT INTO images VALUES ('img', 'm', 't', 'linux/amd64', NULL, 0, '', 0)")
    for cid in ("c1", "c2"):
        conn.execute("INSERT INTO containers (id, name, image, image_name, created, state, runtime, config) "
                     "VALUES (?, ?, 'img', 'busybox', 0, 'created', 'capsa-runtime', '{}')", (cid, cid))  # fmt: skip
    yield Networks(conn)
    conn.close()


def test_subnets_are_given_in_turn_and_checked(store):
    first, second = store.create("one"), store.create("two")
    assert (first.subnet, first.gateway) == ("10.89.0.0/24", "10.89.0.1")
    assert second.subnet == "10.89.1.0/24" and second.bridge.startswith("capsa-") and len(second.bridge) <= 15
    custom = store.create("three", "10.90.0.0/16", "10.90.255.254", internal=True, labels={"a": "b"})
    assert (custom.gateway, custom.internal, custom.labels) == ("10.90.255.254", True, {"a": "b"})
    with pytest.raises(FailedPrecondition, match="overlaps"):
        store.create("four", "10.90.1.0/24")
    with pytest.raises(InvalidArgument, match="it should be 10.91.0.0/24"):
        store.create("four", "10.91.0.7/24")
    with pytest.raises(InvalidArgument, match="not a host address"):
        store.create("four", "10.91.0.0/24", "10.91.0.255")
    with pytest.raises(InvalidArgument, match="only IPv4"):
        store.create("four", "fd00::/64")
    with pytest.raises(AlreadyExists):
        store.create("one")
    with pytest.raises(AlreadyExists):
        store.create("host")
    with pytest.raises(InvalidArgument, match="invalid network name"):
        store.create("-bad")
    assert [n.name for n in store.all()] == ["one", "two", "three"]


def test_a_subnet_the_host_routes_is_skipped(store, monkeypatch):
    import ipaddress

    monkeypatch.setattr(networks, "host_routes", lambda: [ipaddress.ip_network("10.89.0.0/23")])
    assert store.create("one").subnet == "10.89.2.0/24"


def test_lookup_by_name_id_prefix_and_bridge_is_the_default(store):
    made = store.create("one")
    assert store.lookup(made.id[:5]).name == "one" and store.lookup(made.id).name == "one"
    default = store.lookup("bridge")
    assert default.name == "capsa" and store.lookup("capsa").id == default.id
    with pytest.raises(NotFound, match="network nosuch not found"):
        store.lookup("nosuch")


def test_endpoints_take_the_next_interface_and_block_removal(store):
    one, two = store.create("one"), store.create("two")
    assert store.add_endpoint("c1", one, ["web"]).ifname == "eth0"
    second = store.add_endpoint("c1", two)
    assert second.ifname == "eth1"
    with pytest.raises(AlreadyExists):
        store.add_endpoint("c1", one)
    store.set_result(second, {"ips": [{"address": "10.89.1.2/24"}], "interfaces": [{"mac": "aa", "sandbox": "/x"}]})
    ep = store.endpoints_of("c1")[1]
    assert (ep.address(), ep.mac()) == ("10.89.1.2/24", "aa")
    with pytest.raises(FailedPrecondition, match="active endpoints"):
        store.remove(one)
    default = store.default()
    store.remove(default)  # unused: it is made again on first use
    assert store.get(default.id) is None and store.lookup("bridge").id != default.id
    store.conn.execute("DELETE FROM containers WHERE id = 'c1'")  # endpoints go with their container
    store.remove(one)
    assert store.get(one.id) is None


def test_the_conflist_has_only_the_plugins_needed(store):
    network = store.create("one", internal=True)
    plain = conflist(network, "/ipam", publish=False, accept_forward=False)
    assert [p["type"] for p in plain["plugins"]] == ["bridge"]
    assert plain["plugins"][0]["ipam"]["routes"] == [] and plain["name"] == network.id
    full = conflist(network, "/ipam", publish=True, accept_forward=True)
    assert [p["type"] for p in full["plugins"]] == ["bridge", "portmap", "firewall"]


SAVED = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:CNI-FORWARD - [0:0]
:CNI-ADMIN - [0:0]
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
COMMIT
"""


def batches(monkeypatch, saved: str) -> list[dict]:
    done = []
    monkeypatch.setattr(firewall.Tables, "read", classmethod(lambda cls: cls(saved)))
    monkeypatch.setattr(firewall, "restore", done.append)
    return done


def test_activation_puts_isolation_first_and_masquerades_the_subnet(monkeypatch):
    done = batches(monkeypatch, SAVED)
    firewall.activate("capsa0", "10.89.0.0/24", internal=False)
    assert done == [{"filter": [":CAPSA-ISOLATION-1 - [0:0]", ":CAPSA-ISOLATION-2 - [0:0]",
                                "-I FORWARD 1 -j CAPSA-ISOLATION-1",
                                "-A CAPSA-ISOLATION-1 -i capsa0 ! -o capsa0 -j CAPSA-ISOLATION-2",
                                "-A CAPSA-ISOLATION-2 -o capsa0 -j DROP"],
                     "nat": ["-A POSTROUTING -s 10.89.0.0/24 ! -d 10.89.0.0/24 -j MASQUERADE"]}]  # fmt: skip
    assert firewall.Tables(SAVED).policies[("filter", "FORWARD")] == "DROP"


def test_deactivation_removes_the_rules_and_the_idle_shared_chains(monkeypatch):
    active = SAVED.replace("COMMIT\n*nat", ":CAPSA-ISOLATION-1 - [0:0]\n:CAPSA-ISOLATION-2 - [0:0]\n"
                           "-A FORWARD -j CAPSA-ISOLATION-1\n"
                           "-A CAPSA-ISOLATION-1 -i capsa0 ! -o capsa0 -j CAPSA-ISOLATION-2\n"
                           "-A CAPSA-ISOLATION-2 -o capsa0 -j DROP\nCOMMIT\n*nat")  # fmt: skip
    done = batches(monkeypatch, active)
    firewall.deactivate("capsa0", "10.89.0.0/24", internal=False)
    filter_batch = done[0]["filter"]
    assert filter_batch[:2] == ["-D CAPSA-ISOLATION-1 -i capsa0 ! -o capsa0 -j CAPSA-ISOLATION-2",
                                "-D CAPSA-ISOLATION-2 -o capsa0 -j DROP"]  # fmt: skip
    assert "-D FORWARD -j CAPSA-ISOLATION-1" in filter_batch and "-X CAPSA-ISOLATION-2" in filter_batch
    assert '-D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD' in filter_batch
    assert filter_batch[-2:] == ["-X CNI-FORWARD", "-X CNI-ADMIN"]


def test_shared_chains_in_use_are_kept(monkeypatch):
    busy = SAVED.replace("COMMIT\n*nat", "-A CNI-FORWARD -d 10.88.0.5/32 -j ACCEPT\nCOMMIT\n*nat")
    done = batches(monkeypatch, busy)
    firewall.deactivate("capsa0", "10.89.0.0/24", internal=True)
    assert done == [{"filter": [], "nat": []}]
