"""`update`: change a live container's cgroup limits, as `runc update`.

The new limits come from `--resources FILE|-` (a linux.resources object;
fields left out keep their value) or from runc's single-value flags. They
are validated, merged into the resources saved in state.json, written as a
whole through the container's cgroup manager (limits depend on each other:
memory and memory+swap, cpu quota and period), and saved back into
state.json so that a later `update`, `state` or `delete` sees them. If the
kernel refuses a value half-way, the previous resources are written back.

Device rules are not updated (as runc: a device list given here is ignored
with a warning), nor is Intel RDT, which capsa does not implement.
"""

import fcntl
import os

from capsa import fastjson
from capsa.errors import FailedPrecondition, InvalidArgument, Unsupported
from capsa.runtime import state

# go-units' binary multipliers: RAMInBytes("1k") == 1024.
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def parse_ram_in_bytes(text: str) -> int:
    """A size as docker's go-units RAMInBytes reads it: "1024", "256m", "1.5 GiB", "10kb".

    Units are binary and case-insensitive, may be followed by "b" or "ib" and
    preceded by one space; the number is a float, truncated to whole bytes.
    """
    import re

    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)*) ?([kmgtp])?i?b?", text, re.IGNORECASE)
    try:
        size = float(match.group(1)) if match else None
    except ValueError:  # "1.2.3" matches the pattern, as in go-units, but is no number
        size = None
    if size is None:
        raise InvalidArgument(f"invalid size: {text!r}")
    value = int(size * _UNITS[(match.group(2) or "").lower()])
    if value > _INT64_MAX:
        raise InvalidArgument(f"invalid size: {text!r} is out of range")
    return value


def _parse_int(text: str, name: str, low: int, high: int) -> int:
    """A decimal integer flag, as Go's strconv.ParseInt/ParseUint read it."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise InvalidArgument(f"invalid value for --{name}: {text!r} is not an integer")
    value = int(text)
    if not low <= value <= high:
        raise InvalidArgument(f"invalid value for --{name}: {text!r} is out of range")
    return value


# flag -> (section, key, parser)
_UINT = ("uint", 0, _UINT64_MAX)
_INT = ("int", -(2**63), _INT64_MAX)
FLAG_FIELDS = {
    "blkio-weight": ("blockIO", "weight", ("int", 0, 65535)),
    "cpu-period": ("cpu", "period", _UINT),
    "cpu-quota": ("cpu", "quota", _INT),
    "cpu-burst": ("cpu", "burst", _UINT),
    "cpu-share": ("cpu", "shares", _UINT),
    "cpu-rt-period": ("cpu", "realtimePeriod", _UINT),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", _INT),
    "cpu-idle": ("cpu", "idle", _INT),
    "cpuset-cpus": ("cpu", "cpus", ("text",)),
    "cpuset-mems": ("cpu", "mems", ("text",)),
    "memory": ("memory", "limit", ("size",)),
    "memory-reservation": ("memory", "reservation", ("size",)),
    "memory-swap": ("memory", "swap", ("size",)),
    "kernel-memory": ("memory", "kernel", ("size",)),
    "kernel-memory-tcp": ("memory", "kernelTCP", ("size",)),
    "pids-limit": ("pids", "limit", _INT),
}
RDT_FLAGS = ("l3-cache-schema", "mem-bw-schema")


def resources_from_flags(values: dict[str, str | None]) -> dict:
    """linux.resources from runc's flags (flag name -> text, None when absent).

    As runc: 0 for --blkio-weight and --pids-limit means "unchanged", and
    "-1" for a memory size means unlimited.
    """
    resources: dict = {}
    for flag, (section, key, (kind, *bounds)) in FLAG_FIELDS.items():
        text = values.get(flag)
        if text is None or text == "":
            continue
        if kind == "text":
            value = text
        elif kind == "size":
            value = -1 if text == "-1" else _size(text, flag)
        else:
            value = _parse_int(text, flag, *bounds)
            if flag in ("blkio-weight", "pids-limit") and value == 0:
                continue
        resources.setdefault(section, {})[key] = value
    return resources


def _size(text: str, flag: str) -> int:
    try:
        return parse_ram_in_bytes(text)
    except InvalidArgument as err:
        raise InvalidArgument(f"invalid value for --{flag}: {err}") from None


def resources_from_json(source: str, stdin=None) -> dict:
    """The linux.resources object in FILE, or on stdin for "-"."""
    where = "standard input" if source == "-" else source
    try:
        if source == "-":
            data = (stdin or _stdin()).read()
        else:
            with open(source, "rb") as file:
                data = file.read()
    except OSError as err:
        raise InvalidArgument(f"failed to read resources from {where}: "
                              f"{(err.strerror or str(err)).lower()}") from None
    try:
        resources = fastjson.loads(data)
    except ValueError as err:  # not JSON, or not UTF-8
        raise InvalidArgument(f"failed to parse resources from {where}: {err}") from None
    if not isinstance(resources, dict):
        raise InvalidArgument(f"failed to parse resources from {where}: not a JSON object")
    return resources


def _stdin():
    import sys

    return sys.stdin.buffer


# Sections merged key by key; everything else (lists, scalars) is replaced.
_MERGED = ("memory", "cpu", "pids", "blockIO", "network", "unified", "rdma")


def merge(old: dict, new: dict) -> dict:
    """old resources with what new sets; a null or absent field keeps its value."""
    merged = dict(old)
    for key, value in new.items():
        if value is None:
            continue
        if key in _MERGED and isinstance(value, dict) and isinstance(old.get(key), dict):
            section = dict(old[key])
            section.update({k: v for k, v in value.items() if v is not None})
            merged[key] = section
        else:
            merged[key] = value
    memory = new.get("memory") or {}
    if memory.get("limit") == -1 and memory.get("swap") is None:
        # runc: unlimited memory without a swap value means unlimited swap too.
        merged["memory"] = {**merged.get("memory", {}), "swap": -1}
    return merged


# What a new cgroup starts with, written back for fields an update set that
# the container's config did not have, if the update fails half-way.
KERNEL_DEFAULTS = {
    "memory": {"limit": -1, "reservation": -1, "swap": -1, "kernel": -1, "kernelTCP": -1},
    "cpu": {"shares": 1024, "quota": -1, "period": 100000, "realtimePeriod": 1000000,
            "realtimeRuntime": 0, "burst": 0, "idle": 0},
    "pids": {"limit": -1},
}
# Kernel bounds (kernel/sched: MIN_SHARES..MAX_SHARES, 1 ms..1 s CFS periods):
# checked first, as v1 clamps shares silently and a later refusal would
# leave earlier writes in place.
_CPU_BOUNDS = {"shares": (2, 1 << 18), "period": (1000, 1_000_000),
               "realtimePeriod": (1, 1_000_000_000)}


def check_bounds(resources: dict) -> None:
    """Refuse values the kernel would refuse or clamp, before any write."""
    cpu = resources.get("cpu") or {}
    for key, (low, high) in _CPU_BOUNDS.items():
        value = cpu.get(key)
        if value and not low <= value <= high:
            raise InvalidArgument(f"cpu.{key} {value} is out of the kernel's range "
                                  f"[{low}, {high}]")
    quota = cpu.get("quota")
    if quota and 0 < quota < 1000:
        raise InvalidArgument(f"cpu.quota {quota} is below the kernel's minimum of 1000")
    weight = (resources.get("blockIO") or {}).get("weight")
    if weight and not 10 <= weight <= 1000:
        raise InvalidArgument(f"blockIO.weight {weight} is out of range [10, 1000]")


def update(root: str, container_id: str, new: dict, warn) -> dict:
    """Apply new (partial) resources to a live container; return the merged ones."""
    from capsa.runtime.cgroups import validate_resources

    try:
        if not isinstance(new, dict):
            raise InvalidArgument("resources are not a JSON object")
        validate_resources(new)
        check_bounds(new)
    except InvalidArgument as err:
        raise InvalidArgument(f"failed to update container {container_id}: {err}") from None
    if new.get("devices") is not None:
        warn("linux.resources.devices cannot be updated: ignored")
        new = {key: value for key, value in new.items() if key != "devices"}
    st = state.load(root, container_id)
    lock = _lock(st.dir)
    try:
        st = state.load(root, container_id)  # as it is now that we hold the lock
        status = st.status()
        if status not in ("running", "created", "paused"):
            raise FailedPrecondition(f"failed to update container {container_id}: it is "
                                     f"not running ({status})")
        linux = st.config.setdefault("linux", {})
        old = linux.get("resources") or {}
        merged = merge(old, new)
        try:
            validate_resources(merged)
        except InvalidArgument as err:
            raise InvalidArgument(f"failed to update container {container_id}: {err}") from None
        _apply(st.cgroup(), restore_values(old, new), merged, warn)
        linux["resources"] = merged
        st.save()
    finally:
        os.close(lock)
    return merged


def restore_values(old: dict, new: dict) -> dict:
    """The resources that undo new: old, plus kernel defaults for what only new sets."""
    restore = {key: dict(value) if isinstance(value, dict) else value
               for key, value in old.items()}
    for section, defaults in KERNEL_DEFAULTS.items():
        for key in (new.get(section) or {}):
            if key in defaults and (old.get(section) or {}).get(key) is None:
                restore.setdefault(section, {})[key] = defaults[key]
    return restore


def _apply(cgroup, old: dict, merged: dict, warn) -> None:
    """Write merged; if the kernel refuses part of it, write old back."""
    without_devices = {key: value for key, value in merged.items() if key != "devices"}
    try:
        cgroup.set(without_devices)
    except BaseException:
        try:
            cgroup.set({key: value for key, value in old.items() if key != "devices"})
        except Exception as err:
            warn(f"failed to restore the previous resources: {err}; state.json and the "
                 "cgroup may disagree")
        raise


def _lock(directory: str) -> int:
    """Serialise updates of one container: each reads, merges and saves state.json."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def refuse_rdt(values: dict[str, str | None]) -> None:
    """--l3-cache-schema and --mem-bw-schema need Intel RDT, which capsa lacks."""
    for flag in RDT_FLAGS:
        if values.get(flag):
            raise Unsupported(f"failed to set --{flag}: intel rdt is not supported by "
                              "capsa-runtime")
