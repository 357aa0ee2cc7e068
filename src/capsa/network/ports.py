"""Published ports: -p/--publish as Docker parses it, host ports chosen
when none is given, and the mappings as portmap (CNI) and `capsa port`
want them.

    -p 8080:80            every host address, port 8080 -> the container's 80/tcp
    -p 127.0.0.1:8080:80  one host address
    -p 127.0.0.1::80      one host address, a free port
    -p 80                 a free port on every address
    -p 8000-8001:80-81/udp  ranges of the same length
"""

import ipaddress
import socket

from capsa.errors import FailedPrecondition, InvalidArgument
from capsa.record import asdict, record

PROTOCOLS = ("tcp", "udp", "sctp")


@record(frozen=True)
class Mapping:
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""  # "": every address
    host_port: int = 0  # 0: a free port, chosen at start

    def to_cni(self) -> dict:
        return {"hostPort": self.host_port, "containerPort": self.container_port, "protocol": self.protocol,
                "hostIP": self.host_ip}  # fmt: skip

    def host_address(self) -> str:
        return self.host_ip or "0.0.0.0"


def parse_publish(spec: str) -> list[Mapping]:
    text, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in PROTOCOLS:
        raise InvalidArgument(f"invalid proto: {protocol}")
    host_ip, host_ports, container_ports = _split(spec, text)
    if host_ip:
        try:
            ipaddress.IPv4Address(host_ip.strip("[]"))
        except ValueError:
            raise InvalidArgument(f"invalid IP address: {host_ip}") from None
    inside = _port_range(container_ports, spec)
    outside = _port_range(host_ports, spec) if host_ports else [0] * len(inside)
    if len(outside) != len(inside):
        raise InvalidArgument(f"invalid ranges specified for container and host Ports: {spec}")
    return [Mapping(c, protocol, host_ip, h) for c, h in zip(inside, outside, strict=True)]


def _split(spec: str, text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise InvalidArgument(f"invalid port format for --publish: {spec}")


def _port_range(text: str, spec: str) -> list[int]:
    first, sep, last = text.partition("-")
    try:
        low = int(first)
        high = int(last) if sep else low
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {text}" if text else f"no port specified: {spec}") from None
    if not (1 <= low <= high <= 65535):
        raise InvalidArgument(f"invalid port range: {text}")
    return list(range(low, high + 1))


def parse_expose(spec: str) -> list[str]:
    """--expose 80[/tcp] or a range: "80/tcp" keys as image configs have."""
    text, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in PROTOCOLS:
        raise InvalidArgument(f"invalid proto: {protocol}")
    return [f"{port}/{protocol}" for port in _port_range(text, spec)]


def exposed_mappings(exposed: list[str]) -> list[Mapping]:
    """-P: every exposed "port/proto" on a free host port."""
    found = []
    for key in exposed:
        port, _, protocol = key.partition("/")
        found.append(Mapping(int(port), protocol or "tcp"))
    return found


def allocate(mappings: list[Mapping], in_use: set[tuple[str, int, str]]) -> list[Mapping]:
    """MAPPINGS with every host port fixed: a free one where none was asked;
    a port capsa already publishes, or that a host process holds, is refused."""
    done = []
    for m in mappings:
        port = m.host_port or _free_port(m)
        if any(_overlaps((m.host_ip, port, m.protocol), taken) for taken in in_use):
            raise FailedPrecondition(f"Bind for {m.host_address()}:{port} failed: port is already allocated")
        if m.host_port:
            _check_free(m)
        done.append(Mapping(m.container_port, m.protocol, m.host_ip, port))
        in_use.add((m.host_ip, port, m.protocol))
    return done


def _overlaps(a: tuple[str, int, str], b: tuple[str, int, str]) -> bool:
    """The same port and protocol on the same address, or on every address."""
    return a[1:] == b[1:] and (a[0] == b[0] or not a[0] or not b[0])


def _socket(m: Mapping) -> socket.socket:
    kind = socket.SOCK_DGRAM if m.protocol == "udp" else socket.SOCK_STREAM
    return socket.socket(socket.AF_INET, kind)


def _free_port(m: Mapping) -> int:
    with _socket(m) as s:
        s.bind((m.host_ip or "0.0.0.0", 0))
        return s.getsockname()[1]


def _check_free(m: Mapping) -> None:
    """A host process listening on the port would never see its traffic:
    refuse, as Docker's proxy would fail to bind."""
    with _socket(m) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((m.host_ip or "0.0.0.0", m.host_port))
        except OSError as err:
            raise FailedPrecondition(f"Bind for {m.host_address()}:{m.host_port} failed: {err.strerror}") from None


def to_records(mappings: list[Mapping]) -> list[dict]:
    return [asdict(m) for m in mappings]


def from_records(records: list[dict]) -> list[Mapping]:
    return [Mapping(**r) for r in records or []]


def describe(mappings: list[Mapping]) -> dict[str, list[dict]]:
    """Docker's NetworkSettings.Ports: {"80/tcp": [{"HostIp", "HostPort"}]}."""
    ports: dict[str, list[dict]] = {}
    for m in mappings:
        ports.setdefault(f"{m.container_port}/{m.protocol}", []).append(
            {"HostIp": m.host_address(), "HostPort": str(m.host_port)})
    return ports
