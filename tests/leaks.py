"""What a container can leave behind on the host, as comparable snapshots.

An integration test's fixture takes a snapshot before and after; anything
new afterwards (a mount, a cgroup directory, a process in another pid or
mount namespace, a namespace held by any process, a network interface, an
iptables rule or chain) fails the test.
"""

import os
import subprocess

CGROUP_ROOT = "/sys/fs/cgroup"


def mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f}


def cgroups() -> set[str]:
    found = set()
    for top, dirs, _ in os.walk(CGROUP_ROOT):
        if top != CGROUP_ROOT:
            found.add(top)
        if top.count("/") > 12:
            dirs.clear()
    return found


def _ns(pid: str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def namespaces() -> set[str]:
    """Every namespace some process holds (inode names like 'pid:[4026...]')."""
    held = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for kind in ("pid", "mnt", "net", "uts", "ipc", "user", "cgroup"):
                name = _ns(pid, kind)
                if name:
                    held.add(name)
    return held


def foreign_processes() -> set[str]:
    """Processes in a pid or mount namespace other than ours (containers)."""
    ours = {kind: _ns("self", kind) for kind in ("pid", "mnt")}
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for kind, mine in ours.items():
            theirs = _ns(pid, kind)
            if theirs and theirs != mine:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "?"
                found.add(f"{pid} {cmd.strip()}")
                break
    return found


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def iptables_rules() -> set[str]:
    """Every rule and user chain of iptables-save (counters left out)."""
    try:
        done = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return set()
    table, found = "", set()
    for line in done.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            found.add(f"{table} {line}")
        elif line.startswith(":") and line.split()[1] == "-":
            found.add(f"{table} {line.split()[0]}")
    return found


def snapshot() -> dict[str, set[str]]:
    return {"mount": mounts(), "cgroup": cgroups(), "namespace": namespaces(),
            "process": foreign_processes(), "link": links(), "iptables": iptables_rules()}  # fmt: skip


def new_since(before: dict[str, set[str]]) -> dict[str, set[str]]:
    after = snapshot()
    return {kind: after[kind] - before[kind] for kind in before if after[kind] - before[kind]}


def reap_orphans() -> None:
    """Reap every exited child. Called between tests, when no test's own
    subprocess is still waiting to be waited for."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
