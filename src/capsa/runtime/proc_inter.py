"""The intermediate process: enters the namespaces, then forks the init.

CLONE_NEWPID applies to children only, so this process unshares (or joins)
the namespaces and forks the container's pid 1; it then reports the init's
pid and exits.

With a user or cgroup namespace, this process is in the container's cgroup
before it forks (the parent moves it there and only then sends START), so
the init starts inside it and a new cgroup namespace is rooted there.
Without either, nothing before the init's first child depends on the
cgroup, and moving a process into a cgroup v1 hierarchy waits for an RCU
grace period (10-20 ms): START comes at once, and the parent moves the init
in on INIT_PID while the init prepares its rootfs. The init starts no
process before the parent has answered INIT_PID's successors (HOOKS), nor
execs before `create` returns.
"""

import os

from capsa.linux import ns
from capsa.runtime import proc_init, sync


def run(ctx: dict, channel: sync.Channel) -> None:
    """Entry point in the forked child; never returns."""
    try:
        namespaces = ctx["config"].get("linux", {}).get("namespaces", [])
        early = init_moves_in(ctx["config"])
        if early:
            join_namespaces(namespaces)
            unshare_namespaces(namespaces)
        start = channel.expect(sync.START)
        ctx["cgroup_paths"] = start["cgroup_paths"]
        ctx["cgroup_mode"] = start["cgroup_mode"]
        if not early:
            # A new cgroup namespace is rooted at our cgroup: join it first.
            enter_user_namespace(namespaces, channel)
            join_namespaces(namespaces)
            unshare_namespaces(namespaces)
        set_time_offsets(ctx["config"].get("linux", {}).get("timeOffsets"))
        pid = os.fork()
        if pid == 0:
            proc_init.run(ctx, channel)
        channel.send(sync.INIT_PID, pid=pid)
    except BaseException as err:  # noqa: BLE001 - reported to the parent once
        channel.send_error(err)
        os._exit(1)
    os._exit(0)


def init_moves_in(config: dict) -> bool:
    """Whether the parent moves the init into the cgroup, after the fork
    (no user or cgroup namespace), rather than this process before it."""
    namespaces = config.get("linux", {}).get("namespaces", [])
    return not any(n["type"] in ("user", "cgroup") for n in namespaces)


def enter_user_namespace(namespaces: list[dict], channel: sync.Channel) -> None:
    """The user namespace comes first: it owns every namespace created after."""
    userns = next((n for n in namespaces if n["type"] == "user"), None)
    if userns is None:
        return
    if userns.get("path"):
        ns.join(userns["path"], ns.CLONE_NEWUSER)
    else:
        ns.unshare(ns.CLONE_NEWUSER)
        # Only a process outside the namespace may write its id maps.
        channel.send(sync.USERNS_MAP_REQUEST, pid=os.getpid())
        channel.expect(sync.USERNS_MAPPED)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def join_namespaces(namespaces: list[dict]) -> None:
    for entry in namespaces:
        if entry.get("path") and entry["type"] != "user":
            flag, _ = ns.NAMESPACES[entry["type"]]
            try:
                ns.join(entry["path"], flag)
            except OSError as err:
                raise OSError(err.errno, f"failed to join {entry['type']} namespace "
                              f"{entry['path']}: {os.strerror(err.errno)}") from None  # fmt: skip


def unshare_namespaces(namespaces: list[dict]) -> None:
    flags = 0
    for entry in namespaces:
        if not entry.get("path") and entry["type"] != "user":
            if not ns.supported(entry["type"]):
                raise OSError(22, f"this kernel has no {entry['type']} namespace")
            flags |= ns.NAMESPACES[entry["type"]][0]
    if flags:
        ns.unshare(flags)


def set_time_offsets(offsets: dict | None) -> None:
    """Clock offsets of a new time namespace; only before its first process."""
    if not offsets:
        return
    lines = "".join(f"{clock} {o.get('secs', 0)} {o.get('nanosecs', 0)}\n"
                    for clock, o in offsets.items())  # fmt: skip
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(lines)
