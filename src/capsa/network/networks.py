"""Networks and their endpoints in capsa.db, and the CNI configuration list
each network is run with.

A network is a Linux bridge with its own IPv4 subnet. The default one,
`capsa` (bridge capsa0), is made on first use; `bridge` names it, as
Docker's default network is called. The bridge itself and its iptables
rules exist from the network's first container until it is removed
(firewall.py, endpoints.py).
"""

import ipaddress
import json
import os
import re
import sqlite3

from capsa.db import Transaction, find
from capsa.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from capsa.record import field, record

DEFAULT = "capsa"
DEFAULT_BRIDGE = "capsa0"
BRIDGE_PREFIX = "capsa"  # every capsa bridge's name starts so (firewall.py's rules match it)
# Modes of --network that are not networks; "bridge" is the default network.
MODES = ("none", "host", "bridge")
POOL = ipaddress.ip_network("10.89.0.0/16")
POOL_PREFIX = 24
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@record
class Network:
    id: str
    name: str
    driver: str
    bridge: str
    subnet: str
    gateway: str
    internal: bool = False
    labels: dict = field(default_factory=dict)
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT


@record
class Endpoint:
    container: str
    network: str  # the network's id
    ifname: str
    aliases: list = field(default_factory=list)
    result: dict | None = None  # the CNI result while attached

    def address(self) -> str:
        """The container's address on the network, "10.89.0.2/24", or ""."""
        ips = (self.result or {}).get("ips") or []
        return ips[0]["address"] if ips else ""

    def mac(self) -> str:
        for interface in (self.result or {}).get("interfaces") or []:
            if interface.get("sandbox"):
                return interface.get("mac", "")
        return ""


def conflist(network: Network, ipam_dir: str, publish: bool, accept_forward: bool) -> dict:
    """The CNI configuration list of one attachment: a bridge with
    host-local addresses; portmap when ports are published (it also answers
    on 127.0.0.1); firewall when the host drops forwarded packets (its
    ACCEPT rules let the container's through). Masquerading is one rule per
    network (firewall.py), not the bridge plugin's chain per container."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": network.subnet, "gateway": network.gateway}]],
            "routes": [] if network.internal else [{"dst": "0.0.0.0/0"}], "dataDir": ipam_dir}  # fmt: skip
    plugins = [{"type": "bridge", "bridge": network.bridge, "isGateway": True, "ipMasq": False,
                "hairpinMode": True, "ipam": ipam}]  # fmt: skip
    if publish:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    if accept_forward:
        plugins.append({"type": "firewall", "backend": "iptables"})
    return {"cniVersion": "1.0.0", "name": network.id, "plugins": plugins}


class Networks:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- networks

    @staticmethod
    def _load(row: sqlite3.Row) -> Network:
        values = dict(row)
        values["internal"] = bool(values["internal"])
        values["labels"] = json.loads(values["labels"])
        return Network(**values)

    def all(self) -> list[Network]:
        return [self._load(r) for r in self.conn.execute("SELECT * FROM networks ORDER BY created")]

    def get(self, network_id: str) -> Network | None:
        row = self.conn.execute("SELECT * FROM networks WHERE id = ?", (network_id,)).fetchone()
        return self._load(row) if row else None

    def lookup(self, text: str) -> Network:
        """By full id, name or unique id prefix; "bridge" is the default
        network, made now if this is its first use."""
        if text in (DEFAULT, "bridge"):
            return self.default()
        rows = find(self.conn, "networks", text)
        if len(rows) > 1:
            raise InvalidArgument(f"network {text} is ambiguous ({len(rows)} matches found based on ID prefix)")
        if not rows:
            raise NotFound(f"network {text} not found")
        return self._load(rows[0])

    def default(self) -> Network:
        row = self.conn.execute("SELECT * FROM networks WHERE name = ?", (DEFAULT,)).fetchone()
        if row:
            return self._load(row)
        try:
            return self.create(DEFAULT)
        except AlreadyExists:  # another capsa made it first
            return self.lookup(DEFAULT)

    def create(self, name: str, subnet: str | None = None, gateway: str | None = None,
               internal: bool = False, labels: dict | None = None) -> Network:  # fmt: skip
        if not _NAME.match(name):
            raise InvalidArgument(f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
        if name in MODES:
            raise AlreadyExists(f"network with name {name} already exists")
        from capsa.engine.paths import new_id
        from capsa.engine.records import now

        network_id = new_id()
        with Transaction(self.conn) as conn:
            if conn.execute("SELECT 1 FROM networks WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"network with name {name} already exists")
            taken = [ipaddress.ip_network(r[0]) for r in conn.execute("SELECT subnet FROM networks")]
            net = _checked_subnet(subnet, taken) if subnet else _free_subnet(taken)
            gw = _checked_gateway(net, gateway)
            bridge = self._bridge_name(conn, name, network_id)
            conn.execute("INSERT INTO networks (id, name, driver, bridge, subnet, gateway, internal, labels, "
                         "created) VALUES (?, ?, 'bridge', ?, ?, ?, ?, ?, ?)",
                         (network_id, name, bridge, str(net), str(gw), int(internal),
                          json.dumps(labels or {}), now()))  # fmt: skip
        return self.get(network_id)

    @staticmethod
    def _bridge_name(conn, name: str, network_id: str) -> str:
        taken = {r[0] for r in conn.execute("SELECT bridge FROM networks")}
        if name == DEFAULT and DEFAULT_BRIDGE not in taken and not os.path.exists(f"/sys/class/net/{DEFAULT_BRIDGE}"):
            return DEFAULT_BRIDGE
        return f"{BRIDGE_PREFIX}-{network_id[:9]}"  # 15 bytes: the longest interface name

    def remove(self, network: Network) -> None:
        """Forget NETWORK; refused while containers are on it. The default
        network may go too (unlike Docker's): it is made again on first use."""
        users = self.endpoints_on(network.id)
        if users:
            raise FailedPrecondition(f"error while removing network: network {network.name} id {network.id} "
                                     "has active endpoints")  # fmt: skip
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM networks WHERE id = ?", (network.id,))

    # -- endpoints

    @staticmethod
    def _load_endpoint(row: sqlite3.Row) -> Endpoint:
        values = dict(row)
        values["aliases"] = json.loads(values["aliases"])
        values["result"] = json.loads(values["result"]) if values["result"] else None
        return Endpoint(**values)

    def endpoints_of(self, container_id: str) -> list[Endpoint]:
        rows = self.conn.execute("SELECT * FROM endpoints WHERE container = ? ORDER BY ifname", (container_id,))
        return [self._load_endpoint(r) for r in rows]

    def endpoints_on(self, network_id: str) -> list[Endpoint]:
        rows = self.conn.execute("SELECT * FROM endpoints WHERE network = ?", (network_id,))
        return [self._load_endpoint(r) for r in rows]

    def add_endpoint(self, container_id: str, network: Network, aliases=()) -> Endpoint:
        """Put the container on NETWORK with the next free interface name."""
        with Transaction(self.conn) as conn:
            if conn.execute("SELECT 1 FROM endpoints WHERE container = ? AND network = ?",
                            (container_id, network.id)).fetchone():  # fmt: skip
                raise AlreadyExists(f"endpoint with name {container_id[:12]} already exists in network "
                                    f"{network.name}")  # fmt: skip
            used = {r[0] for r in conn.execute("SELECT ifname FROM endpoints WHERE container = ?", (container_id,))}
            ifname = next(f"eth{n}" for n in range(len(used) + 1) if f"eth{n}" not in used)
            conn.execute("INSERT INTO endpoints (container, network, ifname, aliases) VALUES (?, ?, ?, ?)",
                         (container_id, network.id, ifname, json.dumps(list(aliases))))  # fmt: skip
        return Endpoint(container_id, network.id, ifname, list(aliases))

    def set_result(self, endpoint: Endpoint, result: dict | None) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("UPDATE endpoints SET result = ? WHERE container = ? AND network = ?",
                         (json.dumps(result) if result is not None else None, endpoint.container,
                          endpoint.network))  # fmt: skip

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM endpoints WHERE container = ? AND network = ?",
                         (endpoint.container, endpoint.network))  # fmt: skip


def _checked_subnet(text: str, taken: list) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid subnet {text}: not a CIDR (e.g. 10.90.0.0/24)") from None
    if net.version != 4:
        raise InvalidArgument(f"invalid subnet {text}: only IPv4 subnets are supported")
    if str(net) != text.strip():
        raise InvalidArgument(f"invalid subnet {text}: it should be {net}")
    if net.num_addresses < 4:
        raise InvalidArgument(f"invalid subnet {text}: too small for a gateway and a container")
    for other in taken:
        if net.overlaps(other):
            raise FailedPrecondition(f"Pool overlaps with other one on this address space ({other})")
    return net


def _free_subnet(taken: list) -> ipaddress.IPv4Network:
    busy = taken + host_routes()
    for net in POOL.subnets(new_prefix=POOL_PREFIX):
        if not any(net.overlaps(other) for other in busy):
            return net
    raise FailedPrecondition(f"could not find an available, non-overlapping IPv4 address pool in {POOL}")


def _checked_gateway(net, gateway: str | None):
    if gateway is None:
        return next(net.hosts())
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        raise InvalidArgument(f"invalid gateway {gateway}: not an IPv4 address") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise InvalidArgument(f"invalid gateway {gateway}: not a host address of {net}")
    return gw


def host_routes() -> list:
    """The IPv4 networks the host already routes (other than the default)."""
    routes = []
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
    except FileNotFoundError:
        return routes
    for line in lines:
        fields = line.split()
        destination, mask = (int(fields[1], 16), int(fields[7], 16))
        if mask:
            # /proc/net/route writes the addresses in host (little-endian) byte order
            addr = ipaddress.IPv4Address(destination.to_bytes(4, "little"))
            prefix = mask.bit_count()
            routes.append(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
    return routes
