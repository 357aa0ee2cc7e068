"""Step 3, cgroups (2007): a memory limit, an allocator that asks for more
and is OOM-killed, the kernel's counters; the same allocator outside."""

import os
import secrets
import signal

from capsa.errors import Unsupported
from capsa.runtime import cgroups as drivers
from capsa.runtime.cgroups import read_keyed, read_optional

TITLE, YEAR = "cgroups", "2007"
SUMMARY = "a memory limit, an allocator OOM-killed inside it and fine outside"
MiB = 1 << 20
LIMIT_MIB = 16
ASK_MIB = 64


def run(voice) -> dict:
    voice.explain(f"""
        Namespaces hide; control groups limit. In 2006-2007 engineers at
        Google (Paul Menage, Rohit Seth) built "process containers", renamed
        control groups and merged in Linux 2.6.24 (January 2008): a group of
        processes whose CPU, memory, I/O and pid counts the kernel accounts
        for and caps. Version 2, one unified tree, arrived in 2016 (4.5).
        Here: a {LIMIT_MIB} MiB memory limit, and an allocator in it that asks
        for {ASK_MIB} MiB, 1 MiB at a time.""")
    mode = drivers.host_mode()
    name = f"capsa-tour-{secrets.token_hex(4)}"
    manager = drivers.new_manager(f"/{name}", name)
    try:
        directory = _memory_directory(manager, mode)
        kind = "cgroup v2" if mode == "v2" else "cgroup v1"
        voice.run(f"mkdir {directory}   ({kind}, the host is {mode})")
        if mode == "v2":
            voice.run(f"echo {LIMIT_MIB}M > memory.max; echo 0 > memory.swap.max")
        else:
            voice.run(f"echo {LIMIT_MIB}M > memory.limit_in_bytes (and memory.memsw.limit_in_bytes)")
        voice.run("fork(); echo <pid> > cgroup.procs; then allocate")

        def into_cgroup(pid: int) -> None:
            manager.apply(pid)
            _limit(manager, LIMIT_MIB * MiB)

        inside_mib, inside_status = allocate(ASK_MIB, before_start=into_cgroup)
        killed = os.WIFSIGNALED(inside_status) and os.WTERMSIG(inside_status) == signal.SIGKILL
        counters = _counters(directory, mode)
        oom_kills = manager.oom_kill_count()
        how = "killed by SIGKILL (the OOM killer)" if killed else f"ended: {_status(inside_status)}"
        voice.result(f"inside: got {inside_mib} of {ASK_MIB} MiB, then {how}")
        voice.show(f"{file}: {value}" for file, value in counters)
    finally:
        manager.destroy()
    voice.run("fork(); allocate   (in the tour's own cgroup: no such limit)")
    outside_mib, outside_status = allocate(ASK_MIB)
    voice.result(f"outside: got {outside_mib} of {ASK_MIB} MiB, {_status(outside_status)}")
    voice.explain("""
        Every container runtime writes these same files: `capsa run -m 256m`
        or `docker run -m` ends as one number in memory.limit_in_bytes or
        memory.max.""")
    return {"step": 3, "mode": mode, "limit_mib": LIMIT_MIB, "inside_mib": inside_mib, "oom_killed": killed,
            "oom_kill_count": oom_kills, "counters": dict(counters), "outside_mib": outside_mib,
            "outside_ok": os.WIFEXITED(outside_status) and os.WEXITSTATUS(outside_status) == 0}  # fmt: skip


def _memory_directory(manager, mode: str) -> str:
    paths = manager.paths()
    directory = paths.get("unified" if mode == "v2" else "memory")
    if not directory:
        raise Unsupported("failed to find the memory cgroup: the memory controller is not mounted")
    return directory


def _limit(manager, limit: int) -> None:
    """LIMIT for memory, and for memory+swap where the kernel accounts swap
    (else the allocator would be swapped out instead of killed)."""
    try:
        manager.set({"memory": {"limit": limit, "swap": limit}})
    except Unsupported:  # v1 without swap accounting
        manager.set({"memory": {"limit": limit}})


def allocate(mib: int, before_start=None) -> tuple[int, int]:
    """Fork a child that allocates (and writes) MIB MiB, 1 MiB at a time;
    return (MiB it got, its wait status). BEFORE_START(pid) runs first."""
    progress_r, progress_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(progress_r)
            os.close(go_w)
            if os.read(go_r, 2) == b"go":
                held = []
                for _ in range(mib):
                    held.append(b"\x01" * MiB)  # written, so really charged
                    os.write(progress_w, b".")
                code = 0
        finally:
            os._exit(code)
    os.close(progress_w)
    os.close(go_r)
    try:
        if before_start is not None:
            before_start(pid)
        os.write(go_w, b"go")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(go_w)
        got = 0
        with os.fdopen(progress_r, "rb") as progress:
            while chunk := progress.read(64):
                got += len(chunk)
        _, status = os.waitpid(pid, 0)
    return got, status


def _counters(directory: str, mode: str) -> list[tuple[str, str]]:
    if mode == "v2":
        events = read_keyed(directory, "memory.events")
        return [("memory.max", _bytes(read_optional(directory, "memory.max"))),
                ("memory.peak", _bytes(read_optional(directory, "memory.peak") or "?")),
                ("memory.events", (f"max {events.get('max', 0)}, oom {events.get('oom', 0)}, "
                                   f"oom_kill {events.get('oom_kill', 0)}"))]  # fmt: skip
    oom = read_keyed(directory, "memory.oom_control")
    found = [(name, _bytes(read_optional(directory, name)))
             for name in ("memory.limit_in_bytes", "memory.max_usage_in_bytes")]
    for name in ("memory.failcnt", "memory.memsw.failcnt"):  # memsw: where swap is accounted
        value = read_optional(directory, name)
        if value is not None:
            found.append((name, value.strip()))
    found.append(("memory.oom_control", (f"oom_kill_disable {oom.get('oom_kill_disable', 0)}, "
                                         f"oom_kill {oom.get('oom_kill', 0)}")))
    return found


def _bytes(text: str | None) -> str:
    text = (text or "").strip()
    if not text.isdigit() or int(text) >= 1 << 62:
        return text
    return f"{text}   ({int(text) / MiB:g} MiB)"


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.waitstatus_to_exitcode(status)
    return "exited 0: success" if code == 0 else f"exited {code}"



