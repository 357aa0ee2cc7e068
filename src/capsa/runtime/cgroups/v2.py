"""The cgroup v2 driver: one directory, a straight sequence of _set_* steps.

Controllers are enabled in every ancestor's cgroup.subtree_control on the way
down (runc fs2 CreateCgroupPath), never in the container's own directory: the
"no internal processes" rule would then forbid its init from living there.
OCI resources are written in v2 terms, converting v1 semantics as runc does:
cpu shares -> cpu.weight, memory+swap -> swap-only memory.swap.max, blkio
weight -> io.weight. Devices are a BPF program (devices_bpf). Freezing uses
cgroup.freeze, OOM kills are counted in memory.events.

The hybrid v1 driver reuses create_cgroup, set_hugetlb, set_devices,
set_unified, hugetlb_stats and detach_filters for its unified hierarchy.
"""

import os
import time

from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, NotFound, Unsupported
from capsa.runtime.cgroups import (
    CgroupManager, empty_stats, join_cgroup, list_pids, make_dirs, memory_entry, own_cgroups,
    parse_cpu_list, read_int, read_keyed, read_optional, remove_cgroup, validate_resources,
    write_file,
)

UNLIMITED = 2**64 - 1


def _section(resources: dict, key: str) -> dict:
    return resources.get(key) or {}


def controllers(directory: str) -> set[str]:
    """The controllers available in directory (its cgroup.controllers)."""
    return set((read_optional(directory, "cgroup.controllers") or "").split())


def create_cgroup(root: str, directory: str) -> None:
    """mkdir directory below the cgroup2 mount root, enabling controllers on the way."""
    relative = os.path.relpath(directory, root)
    if relative.startswith(".."):
        raise InvalidArgument(f"failed to create cgroup {directory}: not below {root}")
    current = root
    for part in relative.split("/"):
        _enable_controllers(current)
        current = os.path.join(current, part)
        make_dirs(current)


def _enable_controllers(directory: str) -> None:
    wanted = sorted(controllers(directory))
    if not wanted:
        return
    try:
        write_file(directory, "cgroup.subtree_control", " ".join("+" + c for c in wanted))
    except CapsaError:
        # One refused controller (not delegated, or a process living in this
        # cgroup) fails the whole write; enable what can be. A missing one is
        # reported by the _set_* step that needs it.
        for controller in wanted:
            try:
                write_file(directory, "cgroup.subtree_control", "+" + controller)
            except CapsaError:
                pass


def _set(directory: str, name: str, value) -> None:
    if value:
        write_file(directory, name, str(value))


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], runc's linear map."""
    if not shares:
        return 0
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000], runc's linear map."""
    if not weight:
        return 0
    return 1 + (max(weight, 10) - 10) * 9999 // 990


def swap_to_v2(swap: int, limit: int) -> int:
    """OCI memory.swap (memory+swap, v1 meaning) -> memory.swap.max (swap only); -1 is max."""
    if limit == -1 and swap == 0:
        return -1  # unlimited memory means unlimited swap too
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise InvalidArgument(f"failed to set memory swap {swap}: a swap limit needs a "
                              "memory limit")
    if swap < limit:
        raise InvalidArgument(f"failed to set memory swap {swap}: memory+swap is below "
                              f"limit {limit}")
    return swap - limit


def _number(value: int) -> str:
    return "max" if value == -1 else str(value)


def _set_pids(directory: str, resources: dict) -> None:
    limit = _section(resources, "pids").get("limit")
    if limit is not None:
        write_file(directory, "pids.max", str(limit) if limit > 0 else "max")


def check_swap(directory: str, memory: dict) -> None:
    """Refuse, before any write, a swap limit v2 cannot express or the host cannot keep."""
    swap = memory.get("swap") or 0
    swap_max = swap_to_v2(swap, memory.get("limit") or 0)
    if swap_max > 0 and read_optional(directory, "memory.swap.max") is None:
        raise Unsupported(f"failed to set memory swap on {directory}: swap accounting "
                          "is disabled (no memory.swap.max)")


def _set_memory(directory: str, resources: dict) -> None:
    memory = _section(resources, "memory")
    limit, swap = memory.get("limit") or 0, memory.get("swap") or 0
    reservation = memory.get("reservation") or 0
    if not (limit or swap or reservation):
        return  # kernel, kernelTCP, swappiness, OOM killer: no v2 files (runc ignores them)
    if memory.get("checkBeforeUpdate") and limit > 0:
        usage = read_int(directory, "memory.current")
        if usage >= limit:
            raise FailedPrecondition(f"failed to set memory limit {limit} on {directory}: "
                                     f"current usage {usage} is not below it")
    swap_max = swap_to_v2(swap, limit)
    if swap_max == 0 and swap > 0:
        swap_max_text = "0"  # memory == memory+swap: no swap at all
    else:
        swap_max_text = _number(swap_max) if swap_max else ""
    if swap_max_text:
        try:
            write_file(directory, "memory.swap.max", swap_max_text)
        except NotFound:
            # No swap accounting: "unlimited" and "none" are already true.
            if swap_max_text not in ("max", "0"):
                raise Unsupported(f"failed to set memory swap on {directory}: swap "
                                  "accounting is disabled (no memory.swap.max)") from None
    if limit:
        write_file(directory, "memory.max", _number(limit))
    if reservation:
        write_file(directory, "memory.low", _number(reservation))


def _set_io(directory: str, resources: dict) -> None:
    block = _section(resources, "blockIO")
    weight = block.get("weight")
    # BFQ takes the blkio-range weight as is; io.weight needs the conversion.
    bfq = read_optional(directory, "io.bfq.weight") is not None
    if weight:
        if bfq:
            write_file(directory, "io.bfq.weight", str(weight))
        else:
            write_file(directory, "io.weight", str(blkio_to_io_weight(weight)))
    for device in block.get("weightDevice") or []:
        if device.get("weight") and bfq:
            write_file(directory, "io.bfq.weight",
                       f"{device['major']}:{device['minor']} {device['weight']}")
    for key, field in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                       ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for device in block.get(key) or []:
            write_file(directory, "io.max",
                       f"{device['major']}:{device['minor']} {field}={device['rate']}")


def _set_cpu(directory: str, resources: dict) -> None:
    cpu = _section(resources, "cpu")
    if cpu.get("idle") is not None:
        write_file(directory, "cpu.idle", str(cpu["idle"]))
    _set(directory, "cpu.weight", shares_to_weight(cpu.get("shares") or 0))
    quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
    if quota or period:
        if quota:
            text = _number(quota)
        else:
            # Only the period changes: keep the quota already in place.
            text = (read_optional(directory, "cpu.max") or "max").split()[0]
        write_file(directory, "cpu.max", f"{text} {period}" if period else text)
    if cpu.get("burst") is not None:
        write_file(directory, "cpu.max.burst", str(cpu["burst"]))


def _set_cpuset(directory: str, resources: dict) -> None:
    cpu = _section(resources, "cpu")
    _set(directory, "cpuset.cpus", cpu.get("cpus"))
    _set(directory, "cpuset.mems", cpu.get("mems"))


def set_hugetlb(directory: str, resources: dict) -> None:
    """hugetlb.<size>.max (and .rsvd.max where the kernel has it) per page size."""
    for limit in resources.get("hugepageLimits") or []:
        prefix = f"hugetlb.{limit['pageSize']}"
        write_file(directory, prefix + ".max", str(limit["limit"]))
        if read_optional(directory, prefix + ".rsvd.max") is not None:
            write_file(directory, prefix + ".rsvd.max", str(limit["limit"]))


def rdma_lines(rdma: dict) -> list[str]:
    """OCI rdma limits as rdma.max lines, "mlx5_1 hca_handle=3 hca_object=10000"."""
    lines = []
    for device, limits in sorted(rdma.items()):
        fields = [f"{key}={limits[name]}" for name, key in
                  (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object"))
                  if limits.get(name) is not None]
        if fields:
            lines.append(" ".join([device, *fields]))
    return lines


def _set_rdma(directory: str, resources: dict) -> None:
    for line in rdma_lines(resources.get("rdma") or {}):
        write_file(directory, "rdma.max", line)


def set_devices(directory: str, resources: dict) -> None:
    """Replace the device filter when the resources carry a device list."""
    if resources.get("devices") is not None:
        from capsa.runtime.cgroups import devices_bpf
        devices_bpf.apply_device_filter(directory, resources["devices"])


def set_unified(directory: str, resources: dict) -> None:
    """linux.resources.unified: file name -> content, one write per line (runc)."""
    for name, content in (resources.get("unified") or {}).items():
        for line in content.splitlines() or [""]:
            try:
                write_file(directory, name, line)
            except NotFound:
                controller = name.split(".", 1)[0]
                if controller != "cgroup" and controller not in controllers(directory):
                    raise Unsupported(f"failed to set unified resource {name}: controller "
                                      f"{controller} is not available in {directory}") from None
                raise


def detach_filters(directory: str) -> None:
    """Detach device programs before rmdir; best effort, as rmdir releases them too."""
    if not os.path.isdir(directory):
        return
    from capsa.runtime.cgroups import devices_bpf
    try:
        devices_bpf.detach_device_filters(directory)
    except CapsaError:
        pass  # the kernel drops a removed cgroup's programs (cgroup_bpf_release)


# Written in this order; unified last so its explicit files win.
SET_STEPS = [_set_pids, _set_memory, _set_io, _set_cpu, _set_cpuset, set_hugetlb, _set_rdma,
             set_devices, set_unified]


def required_controllers(resources: dict) -> set[str]:
    """The v2 controllers the resources need; Unsupported for what v2 cannot do."""
    memory, cpu, network = (_section(resources, key) for key in ("memory", "cpu", "network"))
    if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
        raise Unsupported("failed to set cpu realtime limits: cgroup v2 has no rt bandwidth")
    if network.get("classID") is not None or network.get("priorities"):
        raise Unsupported("failed to set network classID/priorities: cgroup v2 has no "
                          "net_cls or net_prio")
    wanted = {
        "memory": any(memory.get(key) for key in ("limit", "swap", "reservation")),
        "cpu": (any(cpu.get(key) for key in ("shares", "quota", "period"))
                or cpu.get("idle") is not None or cpu.get("burst") is not None),
        "cpuset": bool(cpu.get("cpus") or cpu.get("mems")),
        "pids": _section(resources, "pids").get("limit") is not None,
        "io": any(_section(resources, "blockIO").values()),
        "hugetlb": bool(resources.get("hugepageLimits")),
        "rdma": bool(resources.get("rdma")),
    }
    return {name for name, needed in wanted.items() if needed}


def hugetlb_stats(directory: str, out: dict) -> None:
    """hugetlb.<size>.current and the "max" count of .events, per page size."""
    for name in sorted(os.listdir(directory)):
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "hugetlb" and parts[2] == "current":
            prefix = f"hugetlb.{parts[1]}"
            out["hugetlb"][parts[1]] = {
                "usage": read_int(directory, prefix + ".current"), "max": 0,
                "failcnt": read_keyed(directory, prefix + ".events").get("max", 0)}


def _io_stats(directory: str, out: dict) -> None:
    service_bytes, serviced = [], []
    for line in (read_optional(directory, "io.stat") or "").splitlines():
        number, *fields = line.split()
        major, minor = (int(part) for part in number.split(":"))
        values = dict(field.split("=", 1) for field in fields if "=" in field)
        for entries, prefix in ((service_bytes, "bytes"), (serviced, "ios")):
            for op, key in (("Read", "r"), ("Write", "w")):
                if key + prefix in values:
                    entries.append({"major": major, "minor": minor, "op": op,
                                    "value": int(values[key + prefix])})
    out["blkio"] = {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}


class V2Manager(CgroupManager):
    """A container's cgroup on a cgroup v2 host: one directory below root."""

    def __init__(self, root: str, directory: str):
        self._root = root
        self._directory = directory

    @classmethod
    def create(cls, root: str, inner: str, relative: bool) -> "V2Manager":
        parent = own_cgroups().get("unified", "/") if relative else "/"
        return cls(root, join_cgroup(root, parent, inner))

    def paths(self) -> dict[str, str]:
        return {"unified": self._directory}

    def exists(self) -> bool:
        return os.path.isdir(self._directory)

    def make(self) -> None:
        create_cgroup(self._root, self._directory)

    def join(self, pid: int) -> None:
        write_file(self._directory, "cgroup.procs", str(pid))

    def set(self, resources: dict) -> None:
        validate_resources(resources)
        if not resources:
            return
        missing = required_controllers(resources) - controllers(self._directory)
        if missing:
            raise Unsupported(f"failed to set resources on {self._directory}: cgroup "
                              f"controllers not available: {' '.join(sorted(missing))}")
        check_swap(self._directory, _section(resources, "memory"))
        for step in SET_STEPS:
            step(self._directory, resources)

    def pids(self) -> list[int]:
        return list_pids(self._directory)

    def freeze(self) -> None:
        self._write_freeze("1")

    def thaw(self) -> None:
        self._write_freeze("0")

    def _write_freeze(self, value: str) -> None:
        if read_optional(self._directory, "cgroup.freeze") is None:
            raise Unsupported(f"failed to freeze {self._directory}: no cgroup.freeze "
                              "(kernel older than 5.2)")
        write_file(self._directory, "cgroup.freeze", value)
        # The write only requests the change; cgroup.events says when every
        # task has reached it.
        delay = 0.0005
        deadline = time.monotonic() + 5
        while self._events().get("frozen", 0) != int(value):
            if time.monotonic() > deadline:
                raise CapsaError(f"failed to {'freeze' if value == '1' else 'thaw'} "
                                 f"{self._directory}: timed out waiting for cgroup.events")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _events(self) -> dict[str, int]:
        return read_keyed(self._directory, "cgroup.events")

    def frozen(self) -> bool:
        return self.exists() and self._events().get("frozen", 0) == 1

    def stats(self) -> dict:
        out, directory = empty_stats(), self._directory
        if not self.exists():
            raise NotFound(f"failed to read stats: cgroup {directory} does not exist")
        cpu = read_keyed(directory, "cpu.stat")
        out["cpu"]["usage"].update(total=cpu.get("usage_usec", 0) * 1000,
                                   user=cpu.get("user_usec", 0) * 1000,
                                   kernel=cpu.get("system_usec", 0) * 1000)
        out["cpu"]["throttling"] = {"periods": cpu.get("nr_periods", 0),
                                    "throttledPeriods": cpu.get("nr_throttled", 0),
                                    "throttledTime": cpu.get("throttled_usec", 0) * 1000}
        self._memory_stats(out["memory"])
        limit = read_optional(directory, "pids.max")
        out["pids"] = {"current": read_int(directory, "pids.current"),
                       "limit": 0 if limit in (None, "max") else int(limit)}
        _io_stats(directory, out)
        hugetlb_stats(directory, out)
        if read_optional(directory, "cpuset.cpus.effective") is not None:
            out["cpuset"] = {
                "cpus": parse_cpu_list(read_optional(directory, "cpuset.cpus.effective")),
                "mems": parse_cpu_list(read_optional(directory, "cpuset.mems.effective"))}
        return out

    def _memory_stats(self, memory: dict) -> None:
        directory = self._directory
        usage = memory_entry(usage=read_int(directory, "memory.current"),
                             max=read_int(directory, "memory.peak"),
                             limit=read_int(directory, "memory.max", UNLIMITED),
                             failcnt=read_keyed(directory, "memory.events").get("max", 0))
        # v1 reported swap as memory+swap; keep that meaning for callers (runc).
        swap_limit = read_int(directory, "memory.swap.max", UNLIMITED)
        if swap_limit != UNLIMITED and usage["limit"] != UNLIMITED:
            swap_limit += usage["limit"]
        swap = memory_entry(usage=read_int(directory, "memory.swap.current") + usage["usage"],
                            limit=swap_limit,
                            failcnt=read_keyed(directory, "memory.swap.events").get("max", 0))
        memory.update(usage=usage, swap=swap, raw=read_keyed(directory, "memory.stat"))
        memory["cache"] = memory["raw"].get("file", 0)

    def oom_kill_count(self) -> int:
        if read_optional(self._directory, "memory.events") is None:
            raise Unsupported(f"failed to count oom kills in {self._directory}: "
                              "the memory controller is not enabled")
        return read_keyed(self._directory, "memory.events").get("oom_kill", 0)

    def destroy(self) -> None:
        detach_filters(self._directory)
        remove_cgroup(self._directory)
