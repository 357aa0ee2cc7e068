"""How containers find names: the /etc/hosts, /etc/resolv.conf and
/etc/hostname Docker gives every container.

On a user-defined network each container's /etc/hosts lists the others
(name, aliases, short id); endpoints.py rewrites the files of everyone on
the network when a container joins or leaves, in place, because each is
bind-mounted into its container.
"""

import os

LOCALHOST = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
# What Docker falls back to when the host's resolv.conf leaves none.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def hosts_text(hostname: str, own_address: str, peers: list[tuple[str, list[str]]], extra: list[str]) -> str:
    """OWN_ADDRESS ("" without a network: 127.0.1.1 then); PEERS: (address,
    names) of the others; EXTRA: --add-host "name:address" entries."""
    lines = [LOCALHOST.rstrip("\n")]
    lines += [f"{address}\t{name}" for name, address in (entry.split(":", 1) for entry in extra)]
    lines.append(f"{own_address or '127.0.1.1'}\t{hostname}")
    lines += [f"{address}\t{' '.join(names)}" for address, names in peers]
    return "\n".join(lines) + "\n"


def resolv_text(dns=(), search=(), options=(), host_network: bool = False, source: str = "/etc/resolv.conf") -> str:
    """The host's resolv.conf; loopback name servers are left out (they mean
    nothing in the container's own network namespace) unless it shares the
    host's. --dns, --dns-search and --dns-option replace the host's lines."""
    try:
        with open(source) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    kept = []
    for line in lines:
        words = line.split()
        key = words[0] if words else ""
        if (key == "nameserver" and dns) or (key in ("search", "domain") and search) or (key == "options" and options):
            continue
        if key == "nameserver" and not host_network and _loopback(words[1:2]):
            continue
        kept.append(line)
    kept += [f"nameserver {server}" for server in dns]
    if search:
        kept.append("search " + " ".join(search))
    if options:
        kept.append("options " + " ".join(options))
    if not any(line.split()[:1] == ["nameserver"] for line in kept):
        kept += [f"nameserver {server}" for server in FALLBACK_NAMESERVERS]
    return "\n".join(kept) + "\n"


def _loopback(address: list[str]) -> bool:
    return bool(address) and (address[0].startswith("127.") or address[0] == "::1")


def rewrite(path: str, text: str) -> None:
    """Replace PATH's content in place: the container sees it through a bind
    mount of this inode, which a rename would leave behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
