"""The iptables rules capsa keeps itself, and the tidying CNI leaves to its
runtime. Each change is one `iptables-save` read and one
`iptables-restore --noflush` batch: a process per rule would cost more
than the rest of a container's start.

Per network, while its bridge exists (activate / deactivate):
- isolation, as Docker's DOCKER-ISOLATION-STAGE-1/2: a packet that enters
  from one capsa bridge and leaves by another is dropped, so two networks
  never talk; an internal network's bridge forwards nothing in or out;
- masquerading of what leaves the subnet (not for internal networks): one
  rule per network instead of the bridge plugin's chain per container.

The plugins never remove the chains they share between containers
(portmap's CNI-HOSTPORT-*, firewall's CNI-FORWARD/CNI-ADMIN); when nothing
is left in them deactivate removes them and the jumps to them, so the
host's tables are as they were before capsa's first container.
"""


from capsa.errors import CapsaError

STAGE_1 = "CAPSA-ISOLATION-1"
STAGE_2 = "CAPSA-ISOLATION-2"
JUMP = f"-A FORWARD -j {STAGE_1}"
# per table: the plugins' shared chains, each with the targets its rules
# have when no container uses it
PLUGIN_CHAINS = {
    "nat": {"CNI-HOSTPORT-DNAT": (), "CNI-HOSTPORT-SETMARK": ("MARK",), "CNI-HOSTPORT-MASQ": ("MASQUERADE",)},
    "filter": {"CNI-FORWARD": ("CNI-ADMIN",), "CNI-ADMIN": ()},
}


class Tables:
    """`iptables-save` read once: per table, its user chains and its rules
    ("-A CHAIN ..." as iptables-save writes them)."""

    def __init__(self, text: str):
        self.chains: dict[str, set[str]] = {}
        self.rules: dict[str, list[str]] = {}
        self.policies: dict[tuple[str, str], str] = {}
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
                self.chains[table], self.rules[table] = set(), []
            elif line.startswith(":") and table:
                chain, policy = line[1:].split()[:2]
                if policy == "-":
                    self.chains[table].add(chain)
                else:
                    self.policies[(table, chain)] = policy
            elif line.startswith("-A ") and table:
                self.rules[table].append(line)

    @classmethod
    def read(cls) -> "Tables":
        done = _run(["iptables-save"])
        if done.returncode != 0:
            raise CapsaError(f"failed to read the iptables rules: {_why(done)}")
        return cls(done.stdout)

    def chain_rules(self, table: str, chain: str) -> list[str]:
        return [r for r in self.rules.get(table, []) if r.split()[1] == chain]


def network_rules(bridge: str, subnet: str, internal: bool) -> dict[str, list[str]]:
    """The rules of one network, as iptables-save writes them."""
    filter_rules = [f"-A {STAGE_1} -i {bridge} ! -o {bridge} -j {STAGE_2}", f"-A {STAGE_2} -o {bridge} -j DROP"]
    if internal:
        return {"filter": [f"-A {STAGE_1} -i {bridge} ! -o {bridge} -j DROP",
                           f"-A {STAGE_1} ! -i {bridge} -o {bridge} -j DROP", *filter_rules], "nat": []}  # fmt: skip
    return {"filter": filter_rules, "nat": [f"-A POSTROUTING -s {subnet} ! -d {subnet} -j MASQUERADE"]}


def activate(bridge: str, subnet: str, internal: bool) -> None:
    tables = Tables.read()
    batch: dict[str, list[str]] = {"filter": [], "nat": []}
    for chain in (STAGE_1, STAGE_2):
        if chain not in tables.chains.get("filter", set()):
            batch["filter"].append(f":{chain} - [0:0]")
    # first in FORWARD: the firewall plugin's chain accepts a container's packets wherever they go
    forward = tables.chain_rules("filter", "FORWARD")
    if forward[:1] != [JUMP]:
        batch["filter"] += ["-D" + JUMP[2:]] * forward.count(JUMP) + [f"-I FORWARD 1 -j {STAGE_1}"]
    for table, rules in network_rules(bridge, subnet, internal).items():
        batch[table] += [rule for rule in rules if rule not in tables.rules.get(table, [])]
    restore(batch)


def deactivate(bridge: str, subnet: str, internal: bool) -> None:
    """Remove the network's rules, then whatever shared chain is left idle."""
    tables = Tables.read()
    batch: dict[str, list[str]] = {"filter": [], "nat": []}
    for table, rules in network_rules(bridge, subnet, internal).items():
        for rule in rules:
            if rule in tables.rules.get(table, []):
                batch[table].append("-D" + rule[2:])
                tables.rules[table].remove(rule)
    if STAGE_1 in tables.chains.get("filter", set()) and not tables.chain_rules("filter", STAGE_1) \
            and not tables.chain_rules("filter", STAGE_2):  # fmt: skip
        batch["filter"] += drop_chains(tables, "filter", [STAGE_1, STAGE_2])
    for table, chains in PLUGIN_CHAINS.items():
        present = tables.chains.get(table, set())
        idle = all(chain in present and all(_target(r) in owned for r in tables.chain_rules(table, chain))
                   for chain, owned in chains.items())  # fmt: skip
        if idle:
            batch[table] += drop_chains(tables, table, list(chains))
    restore(batch)


def drop_chains(tables: Tables, table: str, chains: list[str]) -> list[str]:
    """Delete every rule jumping to CHAINS from elsewhere, then the chains."""
    lines = ["-D" + r[2:] for r in tables.rules.get(table, []) if _target(r) in chains and r.split()[1] not in chains]
    lines += [f"-F {chain}" for chain in chains if chain in tables.chains.get(table, set())]
    return lines + [f"-X {chain}" for chain in chains if chain in tables.chains.get(table, set())]


def _target(rule: str) -> str:
    words = rule.split()
    return words[words.index("-j") + 1] if "-j" in words else ""


def restore(batch: dict[str, list[str]]) -> None:
    text = "".join(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n" for table, lines in batch.items() if lines)
    if not text:
        return
    done = _run(["iptables-restore", "--noflush", "--wait"], text)
    if done.returncode != 0:
        raise CapsaError(f"failed to change the iptables rules: {_why(done)}")


def forward_policy_drops() -> bool:
    """Whether the host drops forwarded packets (as dockerd sets it): then
    containers need the firewall plugin's ACCEPT rules."""
    return Tables.read().policies.get(("filter", "FORWARD")) == "DROP"


def _run(argv: list[str], stdin: str | None = None):
    """ARGV run to its end, its output captured (a subprocess.CompletedProcess)."""
    import subprocess  # 9 ms of imports that a container without a network never needs

    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise CapsaError(f"{argv[0]} is not installed (Debian's iptables package)") from None


def _why(done) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("# Warning")]
    return (lines or [f"exit status {done.returncode}"])[-1]
