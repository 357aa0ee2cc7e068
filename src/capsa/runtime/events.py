"""`events`: a container's statistics and OOM notices as JSON lines, as `runc events`.

Each line is one event, `{"type":"stats","id":…,"data":{…}}` or
`{"type":"oom","id":…}`, encoded as Go's encoding/json encodes runc's
types.Event: fields in runc's order, compact, `omitempty` fields left out
when zero (so `"throttling":{}` for a container never throttled).

`--stats` prints one stats event and exits. Otherwise a stats event comes
every --interval and an oom event whenever the kernel OOM-kills in (or, with
the OOM killer disabled, stalls) the container's memory cgroup; the command
exits once the container's init has exited. No thread is started: one
poll(2) waits at once for the interval, the init's pidfd (readable when it
exits) and the memory cgroup's notification (a v1 eventfd on
memory.oom_control, or POLLPRI on v2's memory.events); the OOM-kill count
read at every wake-up is the fact, the notification only makes it prompt.
"""

import os
import select
import sys
import time

from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument

# Go's time.ParseDuration units, in nanoseconds.
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as "5s", "100ms", "1m30s" or "1.5h"."""
    rest = text[1:] if text[:1] in "+-" else text
    negative = text[:1] == "-"
    if rest == "0":
        return 0.0
    if not rest:
        raise InvalidArgument(f"invalid duration {text!r}")
    total = 0.0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == ".") and rest[i].isascii():
            i += 1
        number, rest = rest[:i], rest[i:]
        j = 0
        while j < len(rest) and not (rest[j].isdigit() or rest[j] == "."):
            j += 1
        unit, rest = rest[:j], rest[j:]
        if number in ("", ".") or number.count(".") > 1:
            raise InvalidArgument(f"invalid duration {text!r}")
        if unit not in _DURATION_UNITS:
            detail = "missing unit" if not unit else f"unknown unit {unit!r}"
            raise InvalidArgument(f"invalid duration {text!r}: {detail}")
        total += float(number) * _DURATION_UNITS[unit]
    return -total / 1e9 if negative else total / 1e9


# ---- runc's types.Stats, as encoding/json writes it -------------------------


def _omit_zero(pairs) -> dict:
    """Go's `omitempty`: keep a field unless it is 0, empty or absent."""
    return {key: value for key, value in pairs if value not in (0, None, [], {}, "")}


def _memory_entry(entry: dict) -> dict:
    # MemoryEntry: limit and failcnt always, usage and max omitempty.
    out = {"limit": entry.get("limit", 0)}
    out.update(_omit_zero([("usage", entry.get("usage", 0)), ("max", entry.get("max", 0))]))
    out["failcnt"] = entry.get("failcnt", 0)
    return out


def _blkio_entries(entries: list) -> list:
    return [_omit_zero([(key, entry.get(key)) for key in ("major", "minor", "op", "value")])
            for entry in entries or []]


def runc_stats(stats: dict) -> dict:
    """The cgroup manager's stats() in the shape and field order of runc's types.Stats."""
    cpu, memory = stats.get("cpu", {}), stats.get("memory", {})
    usage = cpu.get("usage", {})
    out = {
        "cpu": {
            "usage": {**_omit_zero([(key, usage.get(key)) for key in
                                    ("total", "percpu", "percpu_kernel", "percpu_user")]),
                      "kernel": usage.get("kernel", 0), "user": usage.get("user", 0)},
            "throttling": _omit_zero(cpu.get("throttling", {}).items()),
        },
    }
    cpuset = stats.get("cpuset")
    if cpuset is not None:
        out["cpuset"] = _cpuset(cpuset)
    out["memory"] = {
        **_omit_zero([("cache", memory.get("cache", 0))]),
        **{key: _memory_entry(memory.get(key, {}))
           for key in ("usage", "swap", "kernel", "kernelTCP")},
        **_omit_zero([("raw", dict(sorted(memory.get("raw", {}).items())))]),
    }
    out["pids"] = _omit_zero(stats.get("pids", {}).items())
    blkio = stats.get("blkio", {})
    out["blkio"] = _omit_zero([(key, _blkio_entries(blkio.get(key)))
                               for key in ("ioServiceBytesRecursive", "ioServicedRecursive")])
    out["hugetlb"] = {size: {**_omit_zero([("usage", entry.get("usage", 0)),
                                           ("max", entry.get("max", 0))]),
                             "failcnt": entry.get("failcnt", 0)}
                      for size, entry in sorted(stats.get("hugetlb", {}).items())}
    out["intel_rdt"] = {}
    out["network_interfaces"] = None
    return out


def _cpuset(cpuset: dict) -> dict:
    out = _omit_zero([("cpus", cpuset.get("cpus"))])
    out["cpu_exclusive"] = cpuset.get("cpu_exclusive", 0)
    out.update(_omit_zero([("mems", cpuset.get("mems"))]))
    for key in ("mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                "memory_spread_slab", "memory_pressure", "sched_load_balance",
                "sched_relax_domain_level"):
        out[key] = cpuset.get(key, 0)
    return out


def encode(event: dict) -> str:
    """One event as Go's json.Encoder writes it: compact, <>& escaped."""
    import json

    text = json.dumps(event, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def stats_event(container_id: str, cgroup) -> dict:
    return {"type": "stats", "id": container_id, "data": runc_stats(cgroup.stats())}


# ---- the stream ---------------------------------------------------------------


class OomWatch:
    """Wakes poll(2) when the memory cgroup reports an OOM; counts the kills.

    v1: an eventfd registered on memory.oom_control through
    cgroup.event_control (it also fires when the cgroup is removed);
    v2: memory.events, which the kernel marks with POLLPRI when it changes.
    Without either (no memory controller) there is nothing to watch.
    """

    def __init__(self, cgroup):
        self.cgroup = cgroup
        self.fd = -1
        self.kind = ""
        paths = cgroup.paths()
        try:
            if "memory" in paths:
                self._register_v1(paths["memory"])
            elif set(paths) == {"unified"}:
                self.fd = os.open(os.path.join(paths["unified"], "memory.events"),
                                  os.O_RDONLY | os.O_CLOEXEC)
                self.kind = "v2"
        except OSError:
            self.close()  # no notification: the interval's poll still counts kills
        self.count = self.kills() or 0

    def _register_v1(self, directory: str) -> None:
        control = os.open(os.path.join(directory, "memory.oom_control"),
                          os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            with open(os.path.join(directory, "cgroup.event_control"), "w") as file:
                file.write(f"{self.fd} {control}")
            self.kind = "v1"
        finally:
            os.close(control)  # the kernel holds its own reference

    def kills(self) -> int | None:
        try:
            return self.cgroup.oom_kill_count()
        except (CapsaError, OSError, ValueError):
            return None  # no memory controller, or the cgroup is gone

    def register(self, poller) -> None:
        if self.kind == "v1":
            poller.register(self.fd, select.POLLIN)
        elif self.kind == "v2":
            poller.register(self.fd, select.POLLPRI)

    def events(self, fired: bool) -> int:
        """How many oom events to report now (fired: poll said our fd is ready)."""
        notices = 0
        if fired and self.kind == "v1":
            try:
                notices = int.from_bytes(os.read(self.fd, 8), sys.byteorder)
            except BlockingIOError:
                pass
            if not self.cgroup.exists():
                notices = 0  # the eventfd also fires when the cgroup is removed
        elif fired and self.kind == "v2":
            os.pread(self.fd, 4096, 0)  # a read re-arms POLLPRI
        kills = self.kills()
        if kills is None:
            return notices
        new_kills, self.count = max(kills - self.count, 0), kills
        # A notice without a kill is an OOM that a disabled OOM killer left
        # stalled (v1's under_oom): runc reports it too.
        return max(new_kills, notices)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.kind = -1, ""


def stream(st, interval: float, write, warn) -> None:
    """Write stats every interval and oom events as they happen, until the init exits."""
    cgroup = st.cgroup()
    pidfd = _pidfd(st)
    watch = OomWatch(cgroup)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    watch.register(poller)
    try:
        deadline = time.monotonic() + interval
        while True:
            timeout = max(deadline - time.monotonic(), 0)
            ready = dict(poller.poll(timeout * 1000))
            exited = pidfd in ready
            for _ in range(watch.events(watch.fd >= 0 and watch.fd in ready)):
                write({"type": "oom", "id": st.id})
            if exited:
                return
            if time.monotonic() >= deadline:
                deadline += interval
                try:
                    write(stats_event(st.id, cgroup))
                except CapsaError as err:
                    warn(f"failed to read stats of container {st.id}: {err}")
    finally:
        watch.close()
        os.close(pidfd)


def _pidfd(st) -> int:
    """A pidfd of the init, checked against its start time (pid reuse)."""
    try:
        pidfd = os.pidfd_open(st.pid)
    except ProcessLookupError:
        raise FailedPrecondition(f"failed to get events of container {st.id}: it is not "
                                 "running") from None
    if not st.alive():
        os.close(pidfd)
        raise FailedPrecondition(f"failed to get events of container {st.id}: it is not "
                                 "running")
    return pidfd


def events(root: str, container_id: str, interval: float, stats_only: bool, warn) -> None:
    """`capsa-runtime events`: one stats line with stats_only, else the stream."""
    from capsa.runtime import state

    if interval <= 0:
        raise InvalidArgument("failed to get events: the interval must be greater than 0")
    st = state.load(root, container_id)
    status = st.status()
    if status in ("stopped", "creating"):
        raise FailedPrecondition(f"failed to get events of container {container_id}: it is "
                                 f"not running ({status})")

    def write(event: dict) -> None:
        sys.stdout.write(encode(event) + "\n")
        sys.stdout.flush()

    if stats_only:
        write(stats_event(container_id, st.cgroup()))
        return
    stream(st, interval, write, warn)
