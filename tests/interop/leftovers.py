"""What the peers' containers can leave on the host, scoped to this session.

Other sessions may run containers on this machine at the same time, so the
interop checks look only at what can be ours: mounts under the session's
directory (every peer's root, state and container rootfs is there),
processes whose root or command line is under it (container processes,
conmon, containerd shims), and cgroups under the session's cgroup parent.
"""

import os

CGROUP_FSTYPES = ("cgroup", "cgroup2")


def _mountinfo() -> list[list[str]]:
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f]


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def cgroup_mountpoints() -> list[str]:
    found = []
    for fields in _mountinfo():
        fstype = fields[fields.index("-") + 1]
        if fstype in CGROUP_FSTYPES:
            found.append(_unescape(fields[4]))
    return found


def mounts_under(directory: str) -> set[str]:
    prefix = directory.rstrip("/") + "/"
    found = set()
    for fields in _mountinfo():
        point = _unescape(fields[4])
        if point.startswith(prefix):
            fstype = fields[fields.index("-") + 1]
            found.add(f"{fstype} {point}")
    return found


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def processes_under(directory: str) -> set[str]:
    """Processes rooted (chroot/pivot_root) under DIRECTORY, or naming it on
    their command line; zombies have neither and are left to the cgroup check."""
    prefix = directory.rstrip("/") + "/"
    me = str(os.getpid())
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            root = ""
        cmdline = _cmdline(pid)
        if root.startswith(prefix) or prefix in cmdline:
            found.add(f"{pid} {cmdline or '(root ' + root + ')'}")
    return found


def cgroups_under(parent: str, keep: frozenset[str] = frozenset()) -> set[str]:
    """Cgroup directories below PARENT in every hierarchy, but PARENT itself
    and the relative paths in KEEP (parents the peers create once and reuse)."""
    found = set()
    for mountpoint in cgroup_mountpoints():
        base = mountpoint + parent
        for top, dirs, _ in os.walk(base):
            rel = os.path.relpath(top, base)
            if rel != "." and rel not in keep:
                found.add(f"{mountpoint}:{parent}/{rel}")
    return found


def snapshot(directory: str, cgroup_parent: str, keep: frozenset[str]) -> dict[str, set[str]]:
    return {"mount": mounts_under(directory),
            "process": processes_under(directory),
            "cgroup": cgroups_under(cgroup_parent, keep)}  # fmt: skip


def new_since(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    return {kind: after[kind] - before[kind] for kind in after if after[kind] - before[kind]}


def remove_cgroup_tree(parent: str) -> list[str]:
    """rmdir PARENT and everything below it in every hierarchy, deepest first;
    return what could not be removed (a cgroup still holding a process)."""
    failed = []
    for mountpoint in cgroup_mountpoints():
        base = mountpoint + parent
        if not os.path.isdir(base):
            continue
        for top, _, _ in sorted(os.walk(base), key=lambda entry: -entry[0].count("/")):
            try:
                os.rmdir(top)
            except OSError as err:
                failed.append(f"{top}: {err.strerror}")
    return failed


def reap_zombie_children(exclude: set[int]) -> None:
    """Reap our exited children (conmon and shims reparented to us, the
    session's subreaper), but not the ones in EXCLUDE (daemons we wait for)."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in exclude:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(pid), os.WNOHANG)
            except ChildProcessError:
                pass
