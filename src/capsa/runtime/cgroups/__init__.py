"""Cgroups for capsa-runtime: one protocol, a v1 driver (with hybrid) and a v2 driver.

The host's layout is detected once (`host_mode`): "v2" when /sys/fs/cgroup is
cgroup2, "hybrid" when v1 controllers sit beside a cgroup2 mount at
/sys/fs/cgroup/unified, else "v1". `new_manager` picks the driver (runc's
manager.NewWithPaths); `load_manager` rebuilds it in a later command from the
`paths()` saved in state.json. A container's life, as the runtime drives it:

    mgr = new_manager(spec_cgroups_path, "web1")  # nothing on disk yet
    mgr.apply(init_pid)          # mkdir in every hierarchy, move the init in
    mgr.set(spec["linux"]["resources"])
    save_state(paths=mgr.paths())
    ...                          # later, another capsa-runtime process:
    mgr = load_manager(state["cgroup_paths"])
    mgr.freeze(); mgr.thaw(); mgr.stats(); mgr.pids()
    mgr.destroy()                # after every process is gone; idempotent

If `apply` or `set` fails the runtime calls `destroy`; the drivers do not
guess which directories are safe to undo. cgroupsPath follows runc's fs
driver: "/a/b" is below each hierarchy's root, "a/b" below the caller's own
cgroup in that hierarchy (/proc/self/cgroup), none means "/<container id>".
"""

import errno
import os
import posixpath
import time

from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, NotFound, Unsupported

DEFAULT_ROOT = "/sys/fs/cgroup"
SELF_CGROUP = "/proc/self/cgroup"
_MODES: dict[str, str] = {}


class CgroupManager:
    """The cgroup of one container, in every hierarchy the host mounts.

    Both drivers (v1.V1Manager, v2.V2Manager) subclass it; the runtime never
    looks at which one it has. A plain class, not typing.Protocol: importing
    typing costs the runtime's start-up ~5 ms.
    """

    def apply(self, pid: int) -> None:
        """Create the directories and move pid in (before it runs user code)."""
        self.make()
        self.join(pid)

    def make(self) -> None:
        """Create the directories (made already: nothing happens)."""
        raise NotImplementedError

    def join(self, pid: int) -> None:
        """Move pid into the created cgroup."""
        raise NotImplementedError

    def set(self, resources: dict) -> None:
        """Write OCI linux.resources; malformed input changes nothing."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every pid in the cgroup and its sub-cgroups."""
        raise NotImplementedError

    def freeze(self) -> None:
        """Freeze every task; returns once the kernel says they are frozen."""
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict:
        """runc `events --stats` "data": cpu, memory, pids, blkio, hugetlb."""
        raise NotImplementedError

    def oom_kill_count(self) -> int:
        raise NotImplementedError

    def paths(self) -> dict[str, str]:
        """Hierarchy name -> directory, for state.json and load_manager."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove every directory (and device program); idempotent."""
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError


def host_mode(root: str = DEFAULT_ROOT) -> str:
    """Return "v1", "hybrid" or "v2" for the cgroup filesystems under root."""
    mode = _MODES.get(root)
    if mode is None:
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            mode = "v2"
        elif os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
            mode = "hybrid"
        elif os.path.isdir(root) and os.listdir(root):
            mode = "v1"
        else:
            raise Unsupported(f"failed to detect cgroup mode: nothing mounted at {root}")
        _MODES[root] = mode
    return mode


def new_manager(cgroups_path: str | None, container_id: str, *,
                root: str = DEFAULT_ROOT) -> CgroupManager:
    """The manager for a new container's cgroup; nothing is created before apply()."""
    inner, relative = split_cgroups_path(cgroups_path, container_id)
    if host_mode(root) == "v2":
        from capsa.runtime.cgroups import v2
        return v2.V2Manager.create(root, inner, relative)
    from capsa.runtime.cgroups import v1
    unified = os.path.join(root, "unified") if host_mode(root) == "hybrid" else None
    return v1.V1Manager.create(root, inner, relative, unified)


def load_manager(paths: dict, *, root: str = DEFAULT_ROOT) -> CgroupManager:
    """Rebuild a manager from paths() as saved by an earlier command."""
    if not isinstance(paths, dict) or not paths:
        raise InvalidArgument("failed to load cgroup paths: not a non-empty object")
    # destroy() removes sub-cgroups recursively: a saved path naming a mount
    # point (or anything outside root) would take every empty cgroup with it.
    v2_only = set(paths) == {"unified"}
    for name, directory in paths.items():
        below = (isinstance(directory, str) and posixpath.normpath(directory) == directory
                 and directory.startswith(root.rstrip("/") + "/"))
        depth = len(os.path.relpath(directory, root).split("/")) if below else 0
        if depth < (1 if v2_only else 2):
            raise InvalidArgument(f"failed to load cgroup path {name}: {directory!r} "
                                  f"is not a cgroup below {root}")
    if v2_only:
        from capsa.runtime.cgroups import v2
        return v2.V2Manager(root, paths["unified"])
    from capsa.runtime.cgroups import v1
    return v1.V1Manager(root, dict(paths))


def split_cgroups_path(cgroups_path: str | None, container_id: str) -> tuple[str, bool]:
    """Return (cleaned path, is relative to the caller's cgroup) for a cgroupsPath."""
    if not cgroups_path:
        # Like runc: beside the caller's own cgroup in each hierarchy.
        cgroups_path = container_id
    relative = not cgroups_path.startswith("/")
    # Clean as if rooted so ".." can never climb out of the hierarchy (runc CleanPath).
    inner = posixpath.normpath("/" + cgroups_path.lstrip("/"))
    if "\0" in inner:
        raise InvalidArgument(f"failed to use cgroups path {cgroups_path!r}: it holds a NUL")
    if inner == "/":
        raise InvalidArgument(f"failed to use cgroups path {cgroups_path!r}: "
                              "it names the hierarchy root, not a container cgroup")
    return inner, relative


def own_cgroups(path: str | None = None) -> dict[str, str]:
    """The caller's cgroup per controller; the cgroup2 entry is keyed "unified"."""
    own = {}
    with open(path or SELF_CGROUP) as file:
        for line in file:
            _, controllers, where = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else ["unified"]:
                own[name] = where
    return own


def join_cgroup(mount: str, parent: str, inner: str) -> str:
    """mount + parent + inner as one normalised absolute directory."""
    return posixpath.normpath(posixpath.join(mount, parent.lstrip("/"), inner.lstrip("/")))


def cause(err: OSError) -> str:
    """The lowercase reason of an OSError, for one-line messages."""
    return (err.strerror or str(err)).lower()


def _error_class(err: OSError) -> type[CapsaError]:
    return {errno.ENOENT: NotFound, errno.EINVAL: InvalidArgument, errno.ERANGE: InvalidArgument,
            errno.EBUSY: FailedPrecondition, errno.EOPNOTSUPP: Unsupported}.get(err.errno,
                                                                                 CapsaError)


def write_file(directory: str, name: str, value: str) -> None:
    """Write value to a cgroup file in one write(2), as cgroupfs requires."""
    path = os.path.join(directory, name)
    try:
        # No O_CREAT: a missing file means a missing controller, not a new file.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise _error_class(err)(f"failed to write {value!r} to {path}: {cause(err)}") from err


def read_file(directory: str, name: str) -> str:
    """The stripped content of a cgroup file."""
    path = os.path.join(directory, name)
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError as err:
        raise _error_class(err)(f"failed to read {path}: {cause(err)}") from err


def read_optional(directory: str, name: str) -> str | None:
    """The stripped content of a cgroup file, or None when the kernel lacks it."""
    try:
        with open(os.path.join(directory, name)) as file:
            return file.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise _error_class(err)(f"failed to read {directory}/{name}: {cause(err)}") from err


def read_int(directory: str, name: str, default: int = 0) -> int:
    """An integer cgroup file; "max" and absent files give default or 2**64-1."""
    text = read_optional(directory, name)
    if text is None or text == "":
        return default
    if text == "max":
        return 2**64 - 1
    return int(text.split()[0])


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat-keyed file such as memory.stat or cpu.stat: "key value" per line."""
    out = {}
    for line in (read_optional(directory, name) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_cpu_list(text: str | None) -> list[int]:
    """A cpuset list such as "0-3,8" as [0, 1, 2, 3, 8]."""
    numbers = []
    for part in (text or "").strip().split(","):
        low, dash, high = part.strip().partition("-")
        if low.isdigit() and (not dash or high.isdigit()):
            numbers.extend(range(int(low), int(high if dash else low) + 1))
    return numbers


def memory_entry(usage: int = 0, max: int = 0, limit: int = 0, failcnt: int = 0) -> dict:
    """One runc MemoryEntry (usage, max usage, limit, failcnt) in bytes."""
    return {"usage": usage, "max": max, "limit": limit, "failcnt": failcnt}


def empty_stats() -> dict:
    """The shape of runc `events --stats` "data", zeroed; drivers fill in what they can."""
    return {
        "cpu": {"usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                          "kernel": 0, "user": 0},
                "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0}},
        "memory": {"cache": 0, "usage": memory_entry(), "swap": memory_entry(),
                   "kernel": memory_entry(), "kernelTCP": memory_entry(), "raw": {}},
        "pids": {"current": 0, "limit": 0},
        "blkio": {"ioServiceBytesRecursive": [], "ioServicedRecursive": []},
        "hugetlb": {},
    }


def remove_cgroup(directory: str) -> None:
    """rmdir a cgroup and its sub-cgroups, retrying while the kernel says EBUSY."""
    try:
        with os.scandir(directory) as entries:
            children = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        raise CapsaError(f"failed to list {directory}: {cause(err)}") from err
    for child in children:
        remove_cgroup(child)
    # Exited tasks leave the cgroup asynchronously, so a first rmdir right
    # after the last kill can see EBUSY (runc retries the same way).
    delay = 0.01
    for attempt in range(6):
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or attempt == 5:
                raise _error_class(err)(f"failed to remove {directory}: {cause(err)}") from err
        time.sleep(delay)
        delay *= 2


def list_pids(directory: str) -> list[int]:
    """Every pid in directory's cgroup.procs and in its sub-cgroups."""
    pids = set()
    for current, _, _ in os.walk(directory):
        for line in (read_optional(current, "cgroup.procs") or "").split():
            pids.add(int(line))
    return sorted(pids)


def make_dirs(directory: str) -> None:
    """mkdir -p for a cgroup directory."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise _error_class(err)(f"failed to create {directory}: {cause(err)}") from err


# ---- validation of linux.resources, before anything is written -------------

_INT64 = (-2**63, 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_UINT32 = (0, 2**32 - 1)
_DIGITS = frozenset("0123456789")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_NOT_RESOURCES = {"cgroup.procs", "cgroup.threads", "cgroup.kill"}
# No `re` here: it costs the runtime's start-up ~10 ms under python -IS.


def _is_cpu_list(text: str) -> bool:  # "0-3,8"
    return set(text) <= _DIGITS | set(",- \t\n")


def _is_page_size(text: str) -> bool:  # "2MB", "1GB"
    return text[-2:] in ("KB", "MB", "GB", "TB", "PB") and bool(text[:-2]) and \
        set(text[:-2]) <= _DIGITS


def _is_unified_name(text: str) -> bool:  # "<controller>.<key>", e.g. "memory.high"
    controller, dot, key = text.partition(".")
    return bool(controller and dot and key) and set(controller) <= _WORD and \
        set(key) <= _WORD | set(".-")


def _is_interface_name(text: str) -> bool:
    return bool(text) and not any(char.isspace() or char == "/" for char in text)


def _integer(low: int, high: int):
    def check(value, where):
        if type(value) is not int or not low <= value <= high:
            raise InvalidArgument(f"failed to parse {where}: {value!r} is not an integer "
                                  f"in [{low}, {high}]")
    return check


def _boolean(value, where):
    if not isinstance(value, bool):
        raise InvalidArgument(f"failed to parse {where}: {value!r} is not true or false")


def _text(accept):
    def check(value, where):
        if not isinstance(value, str) or not accept(value):
            raise InvalidArgument(f"failed to parse {where}: {value!r} is malformed")
    return check


def _object(fields: dict, required: tuple = ()):
    def check(value, where):
        if not isinstance(value, dict):
            raise InvalidArgument(f"failed to parse {where}: not an object")
        for key in required:
            if value.get(key) is None:
                raise InvalidArgument(f"failed to parse {where}: {key} is required")
        for key, checker in fields.items():
            if value.get(key) is not None:
                checker(value[key], f"{where}.{key}")
    return check


def _list(item_check):
    def check(value, where):
        if not isinstance(value, list):
            raise InvalidArgument(f"failed to parse {where}: not a list")
        for index, item in enumerate(value):
            item_check(item, f"{where}[{index}]")
    return check


def _unified(value, where):
    if not isinstance(value, dict):
        raise InvalidArgument(f"failed to parse {where}: not an object")
    for name, content in value.items():
        # A key is a file name in the container's own cgroup directory, never a path.
        if ("/" in name or ".." in name or not _is_unified_name(name)
                or name in _NOT_RESOURCES):
            raise InvalidArgument(f"failed to parse {where}: {name!r} is not a cgroup "
                                  "file name of the form <controller>.<key>")
        if not isinstance(content, str):
            raise InvalidArgument(f"failed to parse {where}.{name}: value is not a string")


def _devices(value, where):
    from capsa.runtime.cgroups.devices_bpf import emulate, validate_device_rule
    if not isinstance(value, list):
        raise InvalidArgument(f"failed to parse {where}: not a list")
    for index, rule in enumerate(value):
        validate_device_rule(rule, f"{where}[{index}]")
    emulate(value)  # refuses rules v1 would silently ignore (holes in wildcards)


def _rdma(value, where):
    if not isinstance(value, dict):
        raise InvalidArgument(f"failed to parse {where}: not an object")
    check = _object({"hcaHandles": _integer(*_UINT32), "hcaObjects": _integer(*_UINT32)})
    for name, limits in value.items():
        if not name or "/" in name or " " in name:
            raise InvalidArgument(f"failed to parse {where}: bad device name {name!r}")
        check(limits, f"{where}.{name}")


_WEIGHT = _integer(0, 1000)
_DEVICE = {"major": _integer(0, 2**32 - 1), "minor": _integer(0, 2**32 - 1)}
_THROTTLE = _list(_object({**_DEVICE, "rate": _integer(*_UINT64)}, ("major", "minor", "rate")))
_MEMORY_VALUE = _integer(-1, _INT64[1])

_RESOURCES = _object({
    "devices": _devices,
    "memory": _object({
        "limit": _MEMORY_VALUE, "reservation": _MEMORY_VALUE, "swap": _MEMORY_VALUE,
        "kernel": _MEMORY_VALUE, "kernelTCP": _MEMORY_VALUE,
        "swappiness": _integer(-1, 100), "disableOOMKiller": _boolean,
        "useHierarchy": _boolean, "checkBeforeUpdate": _boolean}),
    "cpu": _object({
        "shares": _integer(*_UINT64), "quota": _integer(-1, _INT64[1]),
        "burst": _integer(*_UINT64), "period": _integer(*_UINT64),
        "realtimeRuntime": _integer(-1, _INT64[1]), "realtimePeriod": _integer(*_UINT64),
        "cpus": _text(_is_cpu_list), "mems": _text(_is_cpu_list), "idle": _integer(0, 1)}),
    "pids": _object({"limit": _integer(*_INT64)}),
    "blockIO": _object({
        "weight": _WEIGHT, "leafWeight": _WEIGHT,
        "weightDevice": _list(_object({**_DEVICE, "weight": _WEIGHT, "leafWeight": _WEIGHT},
                                      ("major", "minor"))),
        "throttleReadBpsDevice": _THROTTLE, "throttleWriteBpsDevice": _THROTTLE,
        "throttleReadIOPSDevice": _THROTTLE, "throttleWriteIOPSDevice": _THROTTLE}),
    "hugepageLimits": _list(_object({"pageSize": _text(_is_page_size),
                                     "limit": _integer(*_UINT64)}, ("pageSize", "limit"))),
    "network": _object({
        "classID": _integer(*_UINT32),
        "priorities": _list(_object({"name": _text(_is_interface_name),
                                     "priority": _integer(*_UINT32)}, ("name", "priority")))}),
    "rdma": _rdma,
    "unified": _unified,
})


def validate_resources(resources: dict) -> None:
    """Raise InvalidArgument when linux.resources is malformed; nothing is written."""
    if resources is None:
        return
    _RESOURCES(resources, "linux.resources")
    memory = resources.get("memory") or {}
    limit, swap = memory.get("limit") or 0, memory.get("swap") or 0
    if limit > 0 and swap > 0 and swap < limit:
        raise InvalidArgument(f"failed to parse linux.resources.memory: swap {swap} (memory "
                              f"plus swap) is below limit {limit}")
