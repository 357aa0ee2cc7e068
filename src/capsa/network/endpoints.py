"""A container's network, from its namespace to its names: what the engine
asks for at start and undoes at rm.

Modes (`--network`): a network's name (or `bridge`, the default network);
`none` (its own namespace, loopback only); `host` (the host's namespace);
`container:<id>` (another container's namespace and /etc files).

For its own namespace the engine binds one at <state>/netns/<id> (kept
across restarts of the container), with loopback up, and runs CNI ADD for
each network the container is on; the first interface gets the published
ports. rm runs DEL from the CNI cache (so a half-made attachment after a
crash is undone too) and removes the namespace. A network's bridge and
iptables rules are made with its first container and stay until the
network is removed (`network rm`, `network prune`), so that each `run`
does not pay for making and deleting a bridge.

One host-wide lock orders these changes: they touch shared iptables chains.
"""

import contextlib
import fcntl
import os
import shutil

from capsa.errors import CapsaError, FailedPrecondition
from capsa.linux import netns
from capsa.network import cni, firewall, names, ports
from capsa.network.networks import Endpoint, Network, Networks, conflist

LOCK = "/run/lock/capsa-network.lock"


def mode_of(config: dict) -> str:
    return config.get("network") or "bridge"


def own_namespace(mode: str) -> bool:
    """Whether the network MODE gives the container a namespace of its own."""
    return mode != "host" and not mode.startswith("container:")


@contextlib.contextmanager
def locked():
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Wiring:
    """The network side of one engine: its networks, the CNI cache and the
    per-container namespaces."""

    def __init__(self, engine):
        self.engine = engine
        self.networks = Networks(engine.images.conn)
        self.cache = cni.Cache(os.path.join(engine.root, "networks", "cache"))
        self.ipam_dir = os.path.join(engine.root, "networks", "ipam")

    def netns_path(self, container_id: str) -> str:
        return os.path.join(self.engine.state, "netns", container_id)

    # -- at create

    def plan(self, container_id: str, options) -> None:
        """Record the endpoints OPTIONS ask for (checked by resolve_mode)."""
        mode = options.network or "bridge"
        if own_namespace(mode) and mode != "none":
            self.networks.add_endpoint(container_id, self.networks.lookup(mode), options.network_aliases)

    def resolve_mode(self, options) -> None:
        """Check --network and what may go with it before anything is made."""
        mode = options.network = options.network or "bridge"
        if mode.startswith("container:"):
            other = self.engine.containers.lookup(mode.split(":", 1)[1])
            options.network = f"container:{other.id}"
        elif mode not in ("none", "host"):
            self.networks.lookup(mode)
        if not own_namespace(options.network):
            if options.publish or options.publish_all:
                raise FailedPrecondition("conflicting options: port publishing and the container type network mode")
            if options.network_aliases:
                raise FailedPrecondition("network-scoped aliases are only supported for user-defined networks")
        if options.network.startswith("container:") and (options.dns or options.add_host):
            raise FailedPrecondition("conflicting options: dns and the network mode")

    # -- at start

    def connect(self, container) -> None:
        """Make CONTAINER's network ready before its start."""
        mode = mode_of(container.config)
        if mode == "host":
            return
        if mode.startswith("container:"):
            other = self.engine.containers.get(mode.split(":", 1)[1])
            if other is None or self.engine.refresh(other).state != "running":
                raise FailedPrecondition(f"cannot join network of a non running container: {mode.split(':', 1)[1]}")
            return
        path = self.netns_path(container.id)
        with locked():
            fresh = not netns.exists(path)
            if fresh:
                if os.path.exists(path):
                    os.unlink(path)  # a file left by a crash: its namespace is gone
                netns.create(path)
            try:
                for endpoint in self.networks.endpoints_of(container.id):
                    if endpoint.result is None or fresh or not self._still_attached(container.id, endpoint):
                        self._attach(container, endpoint, path)
            except BaseException:
                self._disconnect_locked(container)
                raise
            self._rewrite_hosts(container.id)

    def _attach(self, container, endpoint: Endpoint, path: str) -> None:
        network = self.networks.get(endpoint.network)
        mappings = self._allocate_ports(container) if endpoint.ifname == "eth0" else []
        attachment = cni.Attachment(container.id, path, endpoint.ifname,
                                    {"portMappings": [m.to_cni() for m in mappings]})  # fmt: skip
        accept_forward = firewall.forward_policy_drops()
        config = conflist(network, self.ipam_dir, bool(mappings), accept_forward)
        stale = self.cache.read(network.id, container.id, endpoint.ifname)
        if stale:  # attached before the namespace was lost (a reboot): give its lease back first
            self._run_del(network.id, *stale)
        if not os.path.exists(f"/sys/class/net/{network.bridge}"):  # its first container since made
            firewall.activate(network.bridge, network.subnet, network.internal)
        self.cache.write(network.id, config, attachment, None)
        try:
            result = cni.add(config, attachment)
        except CapsaError:
            self.cache.remove(network.id, container.id, endpoint.ifname)
            self._retire_if_idle(network)
            raise
        if accept_forward:  # ahead of the firewall plugin's rules again
            firewall.activate(network.bridge, network.subnet, network.internal)
        self.cache.write(network.id, config, attachment, result)
        self.networks.set_result(endpoint, result)

    def _still_attached(self, container_id: str, endpoint: Endpoint) -> bool:
        """CNI CHECK of an attachment kept from an earlier start (`capsa start`
        after a stop): False, after undoing what is left of it, if it broke."""
        cached = self.cache.read(endpoint.network, container_id, endpoint.ifname)
        if cached is None:
            return False
        config, attachment, result = cached
        try:
            cni.check(config, attachment, result)
            return True
        except cni.PluginError:
            self._run_del(endpoint.network, config, attachment, result)
            self.networks.set_result(endpoint, None)
            return False

    def _allocate_ports(self, container) -> list[ports.Mapping]:
        wanted = [m for spec in container.config.get("publish") or [] for m in ports.parse_publish(spec)]
        if container.config.get("publish_all"):  # what -p already publishes keeps its binding
            given = {f"{m.container_port}/{m.protocol}" for m in wanted}
            wanted += ports.exposed_mappings([k for k in container.config.get("expose") or [] if k not in given])
        in_use = set()
        for other in self.engine.containers.all():
            held = ports.from_records(other.config.get("ports"))
            if other.id == container.id or not held:
                continue
            if self.engine.refresh(other).state not in ("running", "paused"):
                self._disconnect_locked(other)  # a stopped container gives its ports up
                continue
            in_use.update((m.host_ip, m.host_port, m.protocol) for m in held)
        mappings = ports.allocate(wanted, in_use)
        self.engine.containers.update(container.id, config={**container.config, "ports": ports.to_records(mappings)})
        container.config["ports"] = ports.to_records(mappings)
        return mappings

    # -- at rm

    def disconnect(self, container) -> None:
        """Undo all of CONTAINER's network (nothing for host and container: modes)."""
        with locked():
            self._disconnect_locked(container)

    def _disconnect_locked(self, container) -> None:
        touched = set()
        for endpoint in self.networks.endpoints_of(container.id):
            self.networks.set_result(endpoint, None)  # the cache still knows what DEL needs
            if self._detach(container.id, endpoint.network, endpoint.ifname):
                touched.add(endpoint.network)
        for network_id, ifname in self.cache.entries_of(container.id):  # left by a crash
            self._detach(container.id, network_id, ifname)
            touched.add(network_id)
        netns.remove(self.netns_path(container.id))
        if container.config.get("ports"):
            config = {**container.config, "ports": []}
            if self.engine.containers.get(container.id):
                self.engine.containers.update(container.id, config=config)
            container.config["ports"] = []
        for network_id in touched:
            self._rewrite_hosts_on(network_id)

    def _detach(self, container_id: str, network_id: str, ifname: str) -> bool:
        cached = self.cache.read(network_id, container_id, ifname)
        if cached is None:
            return False
        self._run_del(network_id, *cached)
        return True

    def _run_del(self, network_id: str, config: dict, attachment: cni.Attachment, result) -> None:
        if not netns.exists(attachment.netns):
            attachment.netns = ""  # gone (a reboot): plugins release what lives outside it
        try:
            cni.delete(config, attachment, result)
        finally:
            self.cache.remove(network_id, attachment.container_id, attachment.ifname)

    def _idle(self, network: Network) -> bool:
        """No container is attached to NETWORK, nor half-attached after a crash."""
        if any(e.result is not None for e in self.networks.endpoints_on(network.id)):
            return False
        return not any(name.startswith(network.id + "-") for name in _listdir(self.cache.directory))

    def _retire_if_idle(self, network: Network) -> None:
        """NETWORK is being removed, or failed to take its first container:
        unless a container is on it, its bridge, leases and rules go."""
        if not self._idle(network):
            return
        if os.path.exists(f"/sys/class/net/{network.bridge}"):
            try:
                import subprocess

                subprocess.run(["ip", "link", "delete", network.bridge], capture_output=True, check=False)
            except FileNotFoundError:
                raise CapsaError(f"cannot delete the bridge {network.bridge}: ip is not installed "
                                 "(Debian's iproute2 package)") from None
        shutil.rmtree(os.path.join(self.ipam_dir, network.id), ignore_errors=True)
        firewall.deactivate(network.bridge, network.subnet, network.internal)

    # -- networks and endpoints by hand: capsa network …

    def remove_network(self, network: Network) -> None:
        with locked():
            self.networks.remove(network)
            self._retire_if_idle(network)

    def join(self, container, network: Network, aliases=()) -> None:
        """`network connect`: on NETWORK now if CONTAINER runs, else from its next start."""
        if not own_namespace(mode_of(container.config)) or mode_of(container.config) == "none":
            raise FailedPrecondition(f"container {container.name} is not on a bridge network: "
                                     f"its network mode is {mode_of(container.config)}")  # fmt: skip
        endpoint = self.networks.add_endpoint(container.id, network, aliases)
        if self.engine.refresh(container).state in ("running", "paused"):
            with locked():
                try:
                    self._attach(container, endpoint, self.netns_path(container.id))
                except BaseException:
                    self.networks.delete_endpoint(endpoint)
                    raise
                self._rewrite_hosts(container.id)

    def leave(self, container, network: Network) -> None:
        """`network disconnect`."""
        endpoint = next((e for e in self.networks.endpoints_of(container.id) if e.network == network.id), None)
        if endpoint is None:
            raise FailedPrecondition(f"container {container.short_id} is not connected to network {network.name}")
        with locked():
            self.networks.set_result(endpoint, None)
            self._detach(container.id, network.id, endpoint.ifname)
            self.networks.delete_endpoint(endpoint)
            self._rewrite_hosts(container.id)
            self._rewrite_hosts_on(network.id)

    def describe(self, network: Network) -> dict:
        """Docker's network inspect JSON."""
        attached = {}
        for endpoint in self.networks.endpoints_on(network.id):
            container = self.engine.containers.get(endpoint.container)
            if container and endpoint.result:
                attached[container.id] = {"Name": container.name, "EndpointID": f"{container.id}-{endpoint.ifname}",
                                          "MacAddress": endpoint.mac(), "IPv4Address": endpoint.address(),
                                          "IPv6Address": ""}  # fmt: skip
        return {"Name": network.name, "Id": network.id, "Created": network.created, "Scope": "local",
                "Driver": network.driver, "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": {},
                         "Config": [{"Subnet": network.subnet, "Gateway": network.gateway}]},
                "Internal": network.internal, "Attachable": False, "Ingress": False,
                "Containers": attached, "Options": {"com.docker.network.bridge.name": network.bridge},
                "Labels": network.labels}  # fmt: skip

    def settings(self, container) -> dict:
        """Docker's NetworkSettings of CONTAINER's inspect JSON."""
        networks = {}
        for endpoint in self.networks.endpoints_of(container.id):
            network = self.networks.get(endpoint.network)
            address, _, prefix = endpoint.address().partition("/")
            networks[network.name] = {"NetworkID": network.id, "EndpointID": endpoint.result and
                                      f"{container.id}-{endpoint.ifname}" or "",
                                      "Aliases": endpoint.aliases or None, "IPAddress": address,
                                      "IPPrefixLen": int(prefix or 0),
                                      "Gateway": network.gateway if address else "",
                                      "MacAddress": endpoint.mac()}  # fmt: skip
        mode = mode_of(container.config)
        if mode in ("host", "none"):
            networks[mode] = {"NetworkID": "", "EndpointID": "", "Aliases": None, "IPAddress": "",
                              "IPPrefixLen": 0, "Gateway": "", "MacAddress": ""}  # fmt: skip
        first = next(iter(networks.values()), {})
        netns_path = self.netns_path(container.id)
        return {"SandboxKey": netns_path if netns.exists(netns_path) else "",
                "Ports": ports.describe(ports.from_records(container.config.get("ports"))),
                "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
                "Gateway": first.get("Gateway", ""), "MacAddress": first.get("MacAddress", ""),
                "Networks": networks}  # fmt: skip

    def prune(self) -> list[str]:
        """Remove every network no container uses; the default one too (it
        is made again on first use), so the host is as before capsa."""
        self.recover()
        removed = []
        for network in self.networks.all():
            if not self.networks.endpoints_on(network.id):
                self.remove_network(network)
                removed.append(network.name)
        return removed

    # -- names

    def _rewrite_hosts_on(self, network_id: str) -> None:
        for endpoint in self.networks.endpoints_on(network_id):
            self._rewrite_hosts(endpoint.container)

    def _rewrite_hosts(self, container_id: str, also_peers: bool = True) -> None:
        container = self.engine.containers.get(container_id)
        if container is None or not own_namespace(mode_of(container.config)):
            return
        endpoints = self.networks.endpoints_of(container_id)
        own = next((e.address().split("/")[0] for e in endpoints if e.address()), "")
        peers = []
        for endpoint in endpoints:
            network = self.networks.get(endpoint.network)
            if network.is_default:
                continue  # as on Docker's default bridge: no names
            for other in self.networks.endpoints_on(network.id):
                peer = self.engine.containers.get(other.container)
                if other.container != container_id and other.address() and peer:
                    peers.append((other.address().split("/")[0],
                                  [peer.name, *other.aliases, peer.id[:12]]))  # fmt: skip
        hostname = container.config.get("hostname") or container.id[:12]
        text = names.hosts_text(hostname, own, peers, container.config.get("add_host") or [])
        path = self.engine.paths(container).in_bundle("hosts")
        if os.path.exists(path):
            names.rewrite(path, text)
        if also_peers:
            for endpoint in endpoints:
                if not self.networks.get(endpoint.network).is_default:
                    for other in self.networks.endpoints_on(endpoint.network):
                        if other.container != container_id:
                            self._rewrite_hosts(other.container, also_peers=False)

    # -- crash recovery

    def recover(self) -> None:
        """Undo what no container owns any more: cached attachments,
        namespaces and endpoints of containers that are gone."""
        known = {c.id for c in self.engine.containers.all()}
        with locked():
            for name in _listdir(self.cache.directory):
                network_id, _, rest = name.partition("-")
                container_id, _, ifname = rest.removesuffix(".json").partition("-")
                if container_id not in known and name.endswith(".json"):
                    self._detach(container_id, network_id, ifname)
            for container_id in _listdir(os.path.dirname(self.netns_path("x"))):
                if container_id not in known:
                    netns.remove(self.netns_path(container_id))
            for network in self.networks.all():
                for endpoint in self.networks.endpoints_on(network.id):
                    if endpoint.container not in known:
                        self.networks.delete_endpoint(endpoint)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
