"""The files the shim leaves in its state directory for the engine to read.

All are JSON, written by temp file + fsync + rename, so a reader (or a crash)
sees the old version or the new one, never half of one:

 shim.json    at start and after every restart:
              {"id", "shim_pid", "shim_start_time", "pid", "init_start_time",
               "started_at", "restart_count", "socket"}
              (start times are /proc/<pid>/stat field 22: a pid plus its start
              time names a process even after pids are reused)
 exit.json    at every exit, before any `delete` or restart; removed when a
              restart has started the container again:
              {"exit_code", "oom_killed", "finished_at", "started_at",
               "restart_count", "error"}
 health.json  after every healthcheck: {"status", "failing_streak", "log"}
 shim.log     the shim's own diagnostics (text lines, as capsa-runtime --log)
 init.pid     the init's pid, as the runtime's --pid-file wrote it
"""

import posix

from capsa import fastjson
from capsa.linux.proc import start_time
from capsa.atomicfile import write_atomic

SHIM = "shim.json"
EXIT = "exit.json"
HEALTH = "health.json"
SOCKET = "shim.sock"
CONSOLE = "console.sock"
LOG = "shim.log"
INIT_PID = "init.pid"
HEALTH_PID = "health.pid"


def write(state_dir: str, name: str, data: dict) -> None:
    write_atomic(f"{state_dir}/{name}", fastjson.dumps(data).encode() + b"\n", 0o644)


def remove(state_dir: str, name: str) -> None:
    try:
        posix.unlink(f"{state_dir}/{name}")
    except FileNotFoundError:
        pass


def shim_record(container_id: str, state_dir: str, pid: int, started_at: str | None,
                restart_count: int) -> dict:  # fmt: skip
    me = posix.getpid()
    return {"id": container_id, "shim_pid": me, "shim_start_time": start_time(me), "pid": pid,
            "init_start_time": start_time(pid) if pid else None, "started_at": started_at,
            "restart_count": restart_count,
            "socket": f"{state_dir}/{SOCKET}"}  # fmt: skip
