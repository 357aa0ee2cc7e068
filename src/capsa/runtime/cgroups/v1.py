"""The cgroup v1 driver, and the hybrid layout's cgroup2 companion.

One small object per v1 subsystem (runc libcontainer/cgroups/fs): each says
whether linux.resources asks for it (`wanted`), what must be true before a
pid can join (`prepare`: the cpuset copy), what it writes (`set`) and what it
reports (`stats`). A subsystem the host does not mount is skipped unless the
resources ask for it, then `set` fails before writing anything.

Hybrid hosts (systemd's layout: v1 controllers plus cgroup2 at
/sys/fs/cgroup/unified) get the container's cgroup in the unified hierarchy
too: the pid joins it, hugetlb is limited there when v1 lacks it, and the v2
device filter is attached there as well as the v1 device lists, so device
access has v2 semantics even for programs v1 cannot see. crun refuses this
layout; capsa must not.
"""

import os
import time

from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, Unsupported
from capsa.runtime.cgroups import (
    CgroupManager, cause, empty_stats, join_cgroup, list_pids, make_dirs, memory_entry,
    own_cgroups, parse_cpu_list, read_file, read_int, read_keyed, read_optional, remove_cgroup,
    validate_resources, write_file,
)
from capsa.runtime.cgroups import v2

UNIFIED = "unified"


def _section(resources: dict, key: str) -> dict:
    return resources.get(key) or {}


def _set(directory: str, name: str, value) -> None:
    """Write value unless it is unset (None or 0, as runc treats OCI zeros)."""
    if value:
        write_file(directory, name, str(value))


def parse_blkio(text: str | None) -> list[dict]:
    """blkio.*_recursive lines "8:0 Read 4096" as runc's BlkioEntry list ("Total" dropped)."""
    entries = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 3 and ":" in fields[0]:
            major, minor = fields[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": fields[1],
                            "value": int(fields[2])})
    return entries


class Subsystem:
    """One v1 controller: its needs before a pid joins, its writes, its statistics."""

    name = ""

    def wanted(self, resources: dict) -> bool:
        return False

    def prepare(self, mount: str, directory: str) -> None:
        pass

    def set(self, directory: str, resources: dict) -> None:
        pass

    def stats(self, directory: str, out: dict) -> None:
        pass


class CpusetGroup(Subsystem):
    name = "cpuset"

    def wanted(self, resources):
        cpu = _section(resources, "cpu")
        return bool(cpu.get("cpus") or cpu.get("mems"))

    def prepare(self, mount, directory):
        # v1 creates cpuset cgroups with empty cpus and mems, and a task cannot
        # join a cpuset without both (ENOSPC): copy them down from the parent
        # at every level we may have created.
        levels, current = [], directory
        while current != mount and current.startswith(mount + "/"):
            levels.append(current)
            current = os.path.dirname(current)
        for level in reversed(levels):
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not read_file(level, name):
                    write_file(level, name, read_file(os.path.dirname(level), name))

    def set(self, directory, resources):
        cpu = _section(resources, "cpu")
        _set(directory, "cpuset.cpus", cpu.get("cpus"))
        _set(directory, "cpuset.mems", cpu.get("mems"))

    _FLAGS = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
              "memory_spread_page", "memory_spread_slab", "memory_pressure",
              "sched_load_balance", "sched_relax_domain_level")

    def stats(self, directory, out):
        cpuset = {"cpus": parse_cpu_list(read_optional(directory, "cpuset.cpus")),
                  "mems": parse_cpu_list(read_optional(directory, "cpuset.mems"))}
        for name in self._FLAGS:
            cpuset[name] = read_int(directory, f"cpuset.{name}")
        out["cpuset"] = cpuset


class DevicesGroup(Subsystem):
    name = "devices"

    def wanted(self, resources):
        return resources.get("devices") is not None

    def set(self, directory, resources):
        from capsa.runtime.cgroups import devices_bpf
        rules = resources.get("devices")
        if rules is None:
            return
        default_allow, exceptions = devices_bpf.emulate(rules)
        # "a" first resets the list to the default, then every exception is
        # written one per write(2) to the opposite file (runc's v1 devices).
        write_file(directory, "devices.allow" if default_allow else "devices.deny", "a")
        target = "devices.deny" if default_allow else "devices.allow"
        for (kind, major, minor), bits in sorted(exceptions.items()):
            write_file(directory, target, devices_bpf.format_rule(kind, major, minor, bits))


class MemoryGroup(Subsystem):
    name = "memory"

    def wanted(self, resources):
        memory = _section(resources, "memory")
        return any(value not in (None, False) for value in memory.values())

    def set(self, directory, resources):
        memory = _section(resources, "memory")
        limit, swap = memory.get("limit") or 0, memory.get("swap") or 0
        if memory.get("checkBeforeUpdate") and limit > 0:
            usage = read_int(directory, "memory.usage_in_bytes")
            if usage >= limit:
                raise FailedPrecondition(f"failed to set memory limit {limit} on {directory}: "
                                         f"current usage {usage} is not below it")
        self._set_limit_and_swap(directory, limit, swap)
        _set(directory, "memory.soft_limit_in_bytes", memory.get("reservation"))
        # Kernel memory limits are deprecated (and no-ops on recent kernels):
        # written when asked and present, skipped where the file is gone.
        for key, name in (("kernel", "memory.kmem.limit_in_bytes"),
                          ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
            if memory.get(key) and read_optional(directory, name) is not None:
                write_file(directory, name, str(memory[key]))
        if memory.get("disableOOMKiller") is not None:
            write_file(directory, "memory.oom_control", "1" if memory["disableOOMKiller"] else "0")
        if memory.get("useHierarchy") is not None:
            write_file(directory, "memory.use_hierarchy", "1" if memory["useHierarchy"] else "0")
        swappiness = memory.get("swappiness")
        if swappiness is not None and swappiness != -1:
            write_file(directory, "memory.swappiness", str(swappiness))

    def _set_limit_and_swap(self, directory, limit, swap):
        has_swap = read_optional(directory, "memory.memsw.limit_in_bytes") is not None
        if limit == -1 and swap == 0 and has_swap:
            swap = -1  # "unlimited memory" means memory+swap unlimited too (runc)
        if swap and not has_swap:
            if swap == -1:
                swap = 0
            else:
                raise Unsupported(f"failed to set memory+swap limit on {directory}: swap "
                                  "accounting is disabled (no memory.memsw.limit_in_bytes)")
        # The kernel keeps memsw.limit >= limit at every moment: raising goes
        # swap first, lowering goes limit first.
        if limit and swap:
            current = read_int(directory, "memory.limit_in_bytes")
            if swap == -1 or current < swap:
                write_file(directory, "memory.memsw.limit_in_bytes", str(swap))
                self._write_limit(directory, limit)
                return
        if limit:
            self._write_limit(directory, limit)
        _set(directory, "memory.memsw.limit_in_bytes", swap)

    def _write_limit(self, directory, limit):
        try:
            write_file(directory, "memory.limit_in_bytes", str(limit))
        except FailedPrecondition as err:  # EBUSY: usage cannot be reclaimed below it
            usage = read_int(directory, "memory.usage_in_bytes")
            raise FailedPrecondition(f"failed to set memory limit {limit} on {directory}: "
                                     f"usage {usage} cannot be reclaimed below it") from err

    def stats(self, directory, out):
        memory = out["memory"]
        for key, prefix in (("usage", "memory"), ("swap", "memory.memsw"),
                            ("kernel", "memory.kmem"), ("kernelTCP", "memory.kmem.tcp")):
            memory[key] = memory_entry(
                usage=read_int(directory, f"{prefix}.usage_in_bytes"),
                max=read_int(directory, f"{prefix}.max_usage_in_bytes"),
                limit=read_int(directory, f"{prefix}.limit_in_bytes"),
                failcnt=read_int(directory, f"{prefix}.failcnt"))
        memory["raw"] = read_keyed(directory, "memory.stat")
        memory["cache"] = memory["raw"].get("cache", 0)


class CpuGroup(Subsystem):
    name = "cpu"
    _KEYS = ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod")

    def wanted(self, resources):
        cpu = _section(resources, "cpu")
        return (any(cpu.get(key) for key in self._KEYS)
                or cpu.get("idle") is not None or cpu.get("burst") is not None)

    def set(self, directory, resources):
        cpu = _section(resources, "cpu")
        shares = cpu.get("shares")
        if shares:
            write_file(directory, "cpu.shares", str(shares))
            # The kernel clamps out-of-range shares silently; say so instead.
            got = read_int(directory, "cpu.shares")
            if got != shares:
                bound = "maximum" if shares > got else "minimum"
                raise InvalidArgument(f"failed to set cpu shares {shares} on {directory}: "
                                      f"the {bound} allowed is {got}")
        self._set_pair(directory, "cpu.cfs_period_us", cpu.get("period"),
                       "cpu.cfs_quota_us", cpu.get("quota"))
        if cpu.get("burst") is not None:
            write_file(directory, "cpu.cfs_burst_us", str(cpu["burst"]))
        if cpu.get("idle") is not None:
            write_file(directory, "cpu.idle", str(cpu["idle"]))
        self._set_pair(directory, "cpu.rt_period_us", cpu.get("realtimePeriod"),
                       "cpu.rt_runtime_us", cpu.get("realtimeRuntime"))

    def _set_pair(self, directory, period_file, period, amount_file, amount):
        # Period and quota (or rt period and runtime) are checked against each
        # other and the parent: a new period may be refused (EINVAL) until the
        # new amount is in, so on EINVAL retry the period after the amount.
        retry = False
        if period:
            try:
                write_file(directory, period_file, str(period))
            except InvalidArgument:
                if not amount:
                    raise
                retry = True
        if amount:
            write_file(directory, amount_file, str(amount))
            if retry:
                write_file(directory, period_file, str(period))

    def stats(self, directory, out):
        cpu_stat = read_keyed(directory, "cpu.stat")
        out["cpu"]["throttling"] = {"periods": cpu_stat.get("nr_periods", 0),
                                    "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                                    "throttledTime": cpu_stat.get("throttled_time", 0)}


class CpuacctGroup(Subsystem):
    name = "cpuacct"

    def stats(self, directory, out):
        usage = out["cpu"]["usage"]
        usage["total"] = read_int(directory, "cpuacct.usage")
        for key, name in (("percpu", "cpuacct.usage_percpu"),
                          ("percpu_kernel", "cpuacct.usage_percpu_sys"),
                          ("percpu_user", "cpuacct.usage_percpu_user")):
            usage[key] = [int(value) for value in (read_optional(directory, name) or "").split()]
        # cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
        ticks = read_keyed(directory, "cpuacct.stat")
        nanos_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        usage["user"] = ticks.get("user", 0) * nanos_per_tick
        usage["kernel"] = ticks.get("system", 0) * nanos_per_tick


class PidsGroup(Subsystem):
    name = "pids"

    def wanted(self, resources):
        return _section(resources, "pids").get("limit") is not None

    def set(self, directory, resources):
        limit = _section(resources, "pids").get("limit")
        if limit is not None:
            write_file(directory, "pids.max", str(limit) if limit > 0 else "max")

    def stats(self, directory, out):
        limit = read_optional(directory, "pids.max")
        out["pids"] = {"current": read_int(directory, "pids.current"),
                       "limit": 0 if limit in (None, "max") else int(limit)}


class BlkioGroup(Subsystem):
    name = "blkio"
    _THROTTLE = (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                 ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                 ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                 ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"))

    def wanted(self, resources):
        return any(value for value in _section(resources, "blockIO").values())

    def set(self, directory, resources):
        block = _section(resources, "blockIO")
        # With the BFQ scheduler the weight files are the blkio.bfq.* ones.
        bfq = read_optional(directory, "blkio.bfq.weight") is not None
        weight = "blkio.bfq.weight" if bfq else "blkio.weight"
        _set(directory, weight, block.get("weight"))
        _set(directory, "blkio.leaf_weight", block.get("leafWeight"))
        for device in block.get("weightDevice") or []:
            number = f"{device['major']}:{device['minor']}"
            _set(directory, weight + "_device", device.get("weight") and
                 f"{number} {device['weight']}")
            _set(directory, "blkio.leaf_weight_device", device.get("leafWeight") and
                 f"{number} {device['leafWeight']}")
        for key, name in self._THROTTLE:
            for device in block.get(key) or []:
                write_file(directory, name,
                           f"{device['major']}:{device['minor']} {device['rate']}")

    def stats(self, directory, out):
        # CFQ's files first, then BFQ's, then the throttle layer's (runc's order).
        for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
            service_bytes = parse_blkio(
                read_optional(directory, prefix + "io_service_bytes_recursive"))
            if service_bytes:
                out["blkio"]["ioServiceBytesRecursive"] = service_bytes
                out["blkio"]["ioServicedRecursive"] = parse_blkio(
                    read_optional(directory, prefix + "io_serviced_recursive"))
                return


class HugetlbGroup(Subsystem):
    name = "hugetlb"

    def wanted(self, resources):
        return bool(resources.get("hugepageLimits"))

    def set(self, directory, resources):
        for limit in resources.get("hugepageLimits") or []:
            prefix = f"hugetlb.{limit['pageSize']}"
            write_file(directory, prefix + ".limit_in_bytes", str(limit["limit"]))
            # Reservations are limited too where the kernel has them (5.7+).
            if read_optional(directory, prefix + ".rsvd.limit_in_bytes") is not None:
                write_file(directory, prefix + ".rsvd.limit_in_bytes", str(limit["limit"]))

    def stats(self, directory, out):
        for name in sorted(os.listdir(directory)):
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "hugetlb" and parts[2] == "usage_in_bytes":
                prefix = f"hugetlb.{parts[1]}"
                out["hugetlb"][parts[1]] = {
                    "usage": read_int(directory, prefix + ".usage_in_bytes"),
                    "max": read_int(directory, prefix + ".max_usage_in_bytes"),
                    "failcnt": read_int(directory, prefix + ".failcnt")}


class NetClsGroup(Subsystem):
    name = "net_cls"

    def wanted(self, resources):
        return _section(resources, "network").get("classID") is not None

    def set(self, directory, resources):
        class_id = _section(resources, "network").get("classID")
        if class_id is not None:
            write_file(directory, "net_cls.classid", str(class_id))


class NetPrioGroup(Subsystem):
    name = "net_prio"

    def wanted(self, resources):
        return bool(_section(resources, "network").get("priorities"))

    def set(self, directory, resources):
        for entry in _section(resources, "network").get("priorities") or []:
            write_file(directory, "net_prio.ifpriomap", f"{entry['name']} {entry['priority']}")


class RdmaGroup(Subsystem):
    name = "rdma"

    def wanted(self, resources):
        return bool(resources.get("rdma"))

    def set(self, directory, resources):
        for line in v2.rdma_lines(resources.get("rdma") or {}):
            write_file(directory, "rdma.max", line)


class FreezerGroup(Subsystem):
    name = "freezer"


class JoinOnly(Subsystem):
    """A hierarchy the container joins without setting anything (perf_event, name=systemd)."""

    def __init__(self, name: str):
        self.name = name


# runc's order: cpuset before anything a task might need, devices before memory.
SUBSYSTEMS = [CpusetGroup(), DevicesGroup(), MemoryGroup(), CpuGroup(), CpuacctGroup(),
              PidsGroup(), BlkioGroup(), HugetlbGroup(), NetClsGroup(), NetPrioGroup(),
              JoinOnly("perf_event"), FreezerGroup(), RdmaGroup(), JoinOnly("name=systemd")]
_NAMES = {subsystem.name for subsystem in SUBSYSTEMS}


def discover_mounts(root: str) -> dict[str, str]:
    """Subsystem name -> mount directory, from the directories under root.

    Co-mounted controllers ("cpu,cpuacct") map to the same directory; named
    hierarchies appear as their name ("systemd" is "name=systemd").
    """
    mounts = {}
    try:
        entries = sorted(os.listdir(root))
    except OSError as err:
        raise Unsupported(f"failed to list cgroup mounts in {root}: {cause(err)}") from err
    for entry in entries:
        path = os.path.join(root, entry)
        if entry == UNIFIED or not os.path.isdir(path):
            continue
        for part in entry.split(","):
            name = part if part in _NAMES else f"name={part}"
            if name in _NAMES:
                mounts.setdefault(name, path)
    return mounts


class V1Manager(CgroupManager):
    """A container's cgroup in every mounted v1 hierarchy (plus unified on hybrid)."""

    def __init__(self, root: str, paths: dict[str, str]):
        self._root = root
        self._paths = paths
        self._mounts = discover_mounts(root)
        self._subsystems = [subsystem for subsystem in SUBSYSTEMS if subsystem.name in paths]

    @classmethod
    def create(cls, root: str, inner: str, relative: bool, unified: str | None) -> "V1Manager":
        mounts = discover_mounts(root)
        own = own_cgroups() if relative else {}
        paths = {name: join_cgroup(mount, own.get(name, "/"), inner)
                 for name, mount in mounts.items()}
        if unified:
            paths[UNIFIED] = join_cgroup(unified, own.get(UNIFIED, "/"), inner)
        return cls(root, {name: paths[name] for name in sorted(paths)})

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def exists(self) -> bool:
        return any(os.path.isdir(directory) for directory in self._paths.values())

    def make(self) -> None:
        for subsystem in self._subsystems:
            directory = self._paths[subsystem.name]
            make_dirs(directory)
            subsystem.prepare(self._mounts.get(subsystem.name, self._root), directory)
        unified = self._paths.get(UNIFIED)
        if unified:
            v2.create_cgroup(self._unified_root(), unified)

    def join(self, pid: int) -> None:
        for subsystem in self._subsystems:
            write_file(self._paths[subsystem.name], "cgroup.procs", str(pid))
        unified = self._paths.get(UNIFIED)
        if unified:
            write_file(unified, "cgroup.procs", str(pid))

    def set(self, resources: dict) -> None:
        validate_resources(resources)
        if not resources:
            return
        self._check_supported(resources)
        for subsystem in self._subsystems:
            subsystem.set(self._paths[subsystem.name], resources)
        unified = self._paths.get(UNIFIED)
        if unified:
            if "hugetlb" not in self._paths:
                v2.set_hugetlb(unified, resources)
            v2.set_devices(unified, resources)
            v2.set_unified(unified, resources)

    def _check_supported(self, resources: dict) -> None:
        unified = self._paths.get(UNIFIED)
        available = v2.controllers(unified) if unified and os.path.isdir(unified) else set()
        for subsystem in SUBSYSTEMS:
            if subsystem.name in self._paths or not subsystem.wanted(resources):
                continue
            if subsystem.name == "hugetlb" and "hugetlb" in available:
                continue
            raise Unsupported(f"failed to set {subsystem.name} resources: the {subsystem.name} "
                              f"cgroup controller is not mounted under {self._root}")
        memory, directory = _section(resources, "memory"), self._paths.get("memory")
        if (memory.get("swap") or 0) > 0 and directory and os.path.isdir(directory) and \
                read_optional(directory, "memory.memsw.limit_in_bytes") is None:
            raise Unsupported(f"failed to set memory+swap limit on {directory}: swap "
                              "accounting is disabled (no memory.memsw.limit_in_bytes)")
        for name in resources.get("unified") or {}:
            controller = name.split(".", 1)[0]
            if controller not in available and controller != "cgroup":
                raise Unsupported(f"failed to set unified resource {name}: cgroup v2 controller "
                                  f"{controller} is not available on this v1 host")

    def pids(self) -> list[int]:
        for name in ("pids", "freezer", "devices", "memory", "cpu", UNIFIED, "name=systemd"):
            if name in self._paths:
                return list_pids(self._paths[name])
        return []

    def freeze(self) -> None:
        directory = self._freezer()
        # FREEZING can persist while new tasks keep arriving: re-write FROZEN,
        # and now and then thaw briefly to let stragglers settle (runc).
        for attempt in range(1000):
            if attempt % 50 == 49:
                write_file(directory, "freezer.state", "THAWED")
                time.sleep(0.01)
            write_file(directory, "freezer.state", "FROZEN")
            state = read_file(directory, "freezer.state")
            if state == "FROZEN":
                return
            if state != "FREEZING":
                raise CapsaError(f"failed to freeze {directory}: unexpected state {state}")
            time.sleep(0.0001 if attempt < 100 else 0.001)
        write_file(directory, "freezer.state", "THAWED")
        raise CapsaError(f"failed to freeze {directory}: still FREEZING")

    def thaw(self) -> None:
        write_file(self._freezer(), "freezer.state", "THAWED")

    def frozen(self) -> bool:
        directory = self._paths.get("freezer")
        return bool(directory) and read_optional(directory, "freezer.state") == "FROZEN"

    def _freezer(self) -> str:
        if "freezer" not in self._paths:
            raise Unsupported(f"failed to freeze: the freezer cgroup controller is not "
                              f"mounted under {self._root}")
        return self._paths["freezer"]

    def stats(self) -> dict:
        out = empty_stats()
        for subsystem in self._subsystems:
            directory = self._paths[subsystem.name]
            if os.path.isdir(directory):
                subsystem.stats(directory, out)
        unified = self._paths.get(UNIFIED)
        if unified and "hugetlb" not in self._paths and os.path.isdir(unified):
            v2.hugetlb_stats(unified, out)
        return out

    def oom_kill_count(self) -> int:
        if "memory" not in self._paths:
            raise Unsupported(f"failed to count oom kills: the memory cgroup controller is "
                              f"not mounted under {self._root}")
        return read_keyed(self._paths["memory"], "memory.oom_control").get("oom_kill", 0)

    def destroy(self) -> None:
        failure = None
        unified = self._paths.get(UNIFIED)
        if unified:
            v2.detach_filters(unified)
        # Try every hierarchy even if one is busy, so one failure leaves as
        # little behind as possible; report the first.
        for directory in sorted(set(self._paths.values())):
            try:
                remove_cgroup(directory)
            except CapsaError as err:
                failure = failure or err
        if failure:
            raise failure

    def _unified_root(self) -> str:
        return os.path.join(self._root, UNIFIED)
