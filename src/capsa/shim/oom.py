"""Whether the kernel's OOM killer struck in a container's memory cgroup.

The shim knows no runtime's internals: it finds the memory cgroup from
/proc/<init>/cgroup while the init lives (just after create) and reads the
cgroup's oom_kill counter then and again after the exit, before the runtime's
`delete` removes the cgroup. cgroup v1 keeps the counter in
memory.oom_control, v2 in memory.events (which counts the whole subtree).
A kill of any process in the container counts, as Docker's OOMKilled does.
"""

import posix

MOUNTINFO = "/proc/self/mountinfo"


class OomCounter:
    """The oom_kill counter of one cgroup, and its value when first read."""

    def __init__(self, path: str):
        self.path = path
        self.baseline = self.count()

    @classmethod
    def for_pid(cls, pid: int, mountinfo: str = MOUNTINFO) -> "OomCounter | None":
        """The counter of pid's memory cgroup; None without a memory controller."""
        directory = memory_cgroup_dir(pid, mountinfo)
        if directory is None:
            return None
        for name in ("memory.oom_control", "memory.events"):
            path = f"{directory}/{name}"
            if posix.access(path, posix.F_OK):
                return cls(path)
        return None

    def count(self) -> int:
        try:
            with open(self.path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def killed(self) -> bool:
        return self.count() > self.baseline


def memory_cgroup_dir(pid: int, mountinfo: str = MOUNTINFO) -> str | None:
    """pid's memory cgroup directory: the v1 memory hierarchy if mounted, else v2."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v1_path = v2_path = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1_path = path
        elif controllers == "":
            v2_path = path
    mounts = cgroup_mounts(mountinfo)
    if v1_path is not None and "memory" in mounts:
        return _below(mounts["memory"], v1_path)
    if v2_path is not None and "" in mounts:
        directory = _below(mounts[""], v2_path)
        if posix.access(f"{directory}/memory.events", posix.F_OK):
            return directory
    return None


def cgroup_mounts(mountinfo: str = MOUNTINFO) -> dict[str, tuple[str, str]]:
    """controller -> (mount point, root of the mount); "" for cgroup2."""
    mounts: dict[str, tuple[str, str]] = {}
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            fstype, options = fields[separator + 1], fields[separator + 3]
            root, point = _unescape(fields[3]), _unescape(fields[4])
            if fstype == "cgroup2":
                mounts.setdefault("", (point, root))
            elif fstype == "cgroup":
                for option in options.split(","):
                    mounts.setdefault(option, (point, root))
    return mounts


def _below(mount: tuple[str, str], path: str) -> str:
    """The directory of the cgroup PATH in a hierarchy that is mounted at
    its directory ROOT, on POINT."""
    point, root = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return (point + path).rstrip("/")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode()
