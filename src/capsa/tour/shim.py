"""Step 5, containerd and the shim (2015-2017): a container started through
the engine, the engine killed, the container still running under its shim
with its output still captured, and the engine back and seeing it."""

import json
import os
import re
import signal
import subprocess
import time

from capsa.errors import FailedPrecondition
from capsa.tour.scratch import Scratch
from capsa.tour.store import CapsaStore

TITLE, YEAR = "containerd and the shim", "2015-2017"
SUMMARY = "the engine killed; the container lives on under its shim, still logged"
NAME = "tour-ticker"
TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"


def run(voice) -> dict:
    voice.explain("""
        Docker (2013) began as one daemon that was the parent of every
        container: restarting or upgrading dockerd took them all down. From
        2015 Docker split the daemon up: runC runs a container and exits, and
        containerd (announced 2015, 1.0 and given to the CNCF in 2017) manages
        them, with a small shim per container between the two. The shim is
        the container's parent: it holds its stdio, writes its log, reaps it
        and records its exit, so the daemon above may die and come back.""")
    voice.explain("""
        capsa has no daemon: its engine runs inside each capsa command, as
        podman's does (its shim is conmon). So "killing the engine" is killing
        a `capsa run` while it streams a container's output.""")
    with Scratch(5) as scratch, CapsaStore(scratch) as capsa:
        capsa.import_busybox()
        voice.run(f"capsa run --name {NAME} --network none busybox sh -c '{TICKER}'")
        cli = capsa.popen("run", "--name", NAME, "--network", "none", "busybox", "sh", "-c", TICKER,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            seen = [cli.stdout.readline().decode().strip() for _ in range(3)]
            voice.show(seen)
            tree = _process_tree(capsa)
            voice.result("processes: " + "  →  ".join(f"{name} ({pid})" for pid, name in tree))
            voice.note("the shim left `capsa run` at once (a double fork): its parent is pid 1, not the engine")
            voice.run(f"kill -KILL {cli.pid}   (the capsa run holding the engine)")
            cli.kill()
            cli.wait()
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
            cli.stdout.close()
        last_seen = _tick(seen[-1])
        voice.result(f"capsa run is gone ({_signal_of(cli.returncode)}); the last line it printed: {seen[-1]!r}")
        time.sleep(1.5)
        voice.run("capsa ps   (a new engine, reading the store and asking the shim)")
        ps = capsa("ps").stdout.splitlines()
        voice.show(ps)
        running = any(NAME in line and " Up " in f" {line} " for line in ps[1:])
        voice.run(f"capsa logs --tail 3 {NAME}")
        logs = capsa("logs", "--tail", "3", NAME).stdout.split("\n")
        logs = [line for line in logs if line]
        voice.show(logs)
        last_logged = _tick(logs[-1]) if logs else 0
        survived = running and last_logged > last_seen
        if survived:
            voice.result(f"still running under its shim, and its output still captured "
                         f"(tick {last_logged} > tick {last_seen})")
        else:
            voice.result("the container did not survive the engine")
        voice.run(f"capsa rm -f {NAME}")
        capsa("rm", "-f", NAME)
    return {"step": 5, "process_tree": [name for _, name in tree], "engine_killed": cli.returncode == -signal.SIGKILL,
            "container_survived": survived, "still_running": running, "last_seen": last_seen,
            "last_logged": last_logged}  # fmt: skip


def _process_tree(capsa) -> list[tuple[int, str]]:
    """The container's init, its parent (the shim) and the shim's parent."""
    deadline = time.monotonic() + 10
    while True:
        info = json.loads(capsa("inspect", NAME).stdout)[0]
        pid = info["State"]["Pid"]
        if pid or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not pid:
        raise FailedPrecondition(f"failed to find {NAME}'s process: it is not running")
    chain = [pid]
    for _ in range(2):
        chain.append(_parent(chain[-1]))
    return [(p, _name(p)) for p in reversed(chain)]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [os.path.basename(a.decode(errors="replace")) for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if argv and argv[0].startswith("python"):  # an interpreter: name the script or module
        argv = [a for a in argv[1:] if not a.startswith("-")] or argv
    return argv[0] if argv else "?"


def _tick(line: str) -> int:
    found = re.search(r"tick (\d+)", line)
    return int(found.group(1)) if found else 0


def _signal_of(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
