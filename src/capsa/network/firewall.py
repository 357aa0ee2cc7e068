"""The iptables rules capsa keeps itself, and the tidying CNI leaves to its
runtime.

Isolation, as Docker's DOCKER-ISOLATION-STAGE-1/2: a packet that enters
from one capsa bridge and leaves by another is dropped, so two networks
never talk; an internal network's bridge forwards nothing in or out.
Rules for a network exist while its bridge does.

The plugins never remove the chains they share between containers
(portmap's CNI-HOSTPORT-*, firewall's CNI-FORWARD/CNI-ADMIN); when the last
rule in them is gone, prune_plugin_chains() removes them and the jumps to
them, so the host's tables are as they were before capsa's first container.
"""

import shlex
import subprocess

from capsa.errors import CapsaError

STAGE_1 = "CAPSA-ISOLATION-1"
STAGE_2 = "CAPSA-ISOLATION-2"
# per table: (chain, the targets its rules may have while no container uses it)
_PLUGIN_CHAINS = {
    "nat": [("CNI-HOSTPORT-DNAT", ()), ("CNI-HOSTPORT-SETMARK", ("MARK",)), ("CNI-HOSTPORT-MASQ", ("MASQUERADE",))],
    "filter": [("CNI-FORWARD", ("CNI-ADMIN",)), ("CNI-ADMIN", ())],
}


def iptables(*args: str, table: str = "filter", check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["iptables", "-w", "-t", table, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise CapsaError(f"failed to run iptables {' '.join(args)}: {why}")
    return done


def _exists(table: str, *rule: str) -> bool:
    return iptables("-C", *rule, table=table, check=False).returncode == 0


def _ensure(table: str, *rule: str) -> None:
    if not _exists(table, *rule):
        iptables("-A", *rule, table=table)


def _rules(table: str, chain: str) -> list[list[str]] | None:
    """The rules of CHAIN as `iptables -S` prints them (without -A CHAIN);
    None when the chain does not exist."""
    done = iptables("-S", chain, table=table, check=False)
    if done.returncode != 0:
        return None
    return [shlex.split(line)[2:] for line in done.stdout.splitlines() if line.startswith("-A ")]


def _isolation_rules(bridge: str, internal: bool) -> list[tuple[str, ...]]:
    rules = [(STAGE_1, "-i", bridge, "!", "-o", bridge, "-j", STAGE_2), (STAGE_2, "-o", bridge, "-j", "DROP")]
    if internal:
        rules = [(STAGE_1, "-i", bridge, "!", "-o", bridge, "-j", "DROP"),
                 (STAGE_1, "-o", bridge, "!", "-i", bridge, "-j", "DROP")] + rules  # fmt: skip
    return rules


def isolate(bridge: str, internal: bool) -> None:
    for chain in (STAGE_1, STAGE_2):
        if _rules("filter", chain) is None:
            iptables("-N", chain)
    # first in FORWARD: the firewall plugin's chain accepts a container's packets wherever they go
    forward = _rules("filter", "FORWARD") or []
    if forward[:1] != [["-j", STAGE_1]]:
        while _exists("filter", "FORWARD", "-j", STAGE_1):
            iptables("-D", "FORWARD", "-j", STAGE_1)
        iptables("-I", "FORWARD", "1", "-j", STAGE_1)
    for rule in _isolation_rules(bridge, internal):
        _ensure("filter", *rule)


def unisolate(bridge: str, internal: bool) -> None:
    for rule in _isolation_rules(bridge, internal):
        while _exists("filter", *rule):
            iptables("-D", *rule)
    if _rules("filter", STAGE_1) == [] and _rules("filter", STAGE_2) == []:
        _drop_chain("filter", STAGE_1)
        _drop_chain("filter", STAGE_2)


def prune_plugin_chains() -> None:
    """Remove the plugins' shared chains that hold nothing of anyone's."""
    for table, chains in _PLUGIN_CHAINS.items():
        contents = {chain: _rules(table, chain) for chain, _ in chains}
        if any(rules is None for rules in contents.values()):
            continue  # never made, or half gone: nothing of ours to judge
        idle = all(all(_target(rule) in owned for rule in contents[chain]) for chain, owned in chains)
        if idle:
            for chain, _ in chains:
                iptables("-F", chain, table=table)
            for chain, _ in chains:
                _drop_chain(table, chain)


def _target(rule: list[str]) -> str:
    return rule[rule.index("-j") + 1] if "-j" in rule else ""


def _drop_chain(table: str, chain: str) -> None:
    """Delete every jump to CHAIN from the built-in chains, then CHAIN."""
    for builtin in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"):
        for rule in _rules(table, builtin) or []:
            if _target(rule) == chain:
                iptables("-D", builtin, *rule, table=table)
    iptables("-F", chain, table=table, check=False)
    iptables("-X", chain, table=table, check=False)
