"""Helpers for tests that act on a running container: ps, pause, update, events."""

import json
import os
import subprocess

from waiting import wait_for


def read(path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def shared(bundle, tmp_path):
    """Bind-mount a fresh host directory on the container's /tmp; return it."""
    host = tmp_path / "shared"
    host.mkdir()
    host.chmod(0o777)
    bundle.config["mounts"].append({"destination": "/tmp", "type": "bind",
                                    "source": str(host), "options": ["rbind", "rw"]})  # fmt: skip
    bundle.write()
    return host


def create(runtime, bundle, container_id: str, *args) -> int:
    """Create a container running args with stdio on /dev/null; return the init pid."""
    if args:
        bundle.args(*args)
    subprocess.run(runtime.argv("create", "--bundle", str(bundle), container_id), check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)  # fmt: skip
    return runtime.state(container_id)["pid"]


def start(runtime, bundle, container_id: str, *args) -> int:
    """Create and start a container running args; return the init's host pid."""
    pid = create(runtime, bundle, container_id, *args)
    runtime("start", container_id)
    return pid


def status(runtime, container_id: str) -> str:
    return runtime.state(container_id)["status"]


def wait_status(runtime, container_id: str, wanted: str, timeout: float = 5.0) -> None:
    wait_for(lambda: status(runtime, container_id) == wanted, timeout,
             f"{container_id} to be {wanted}")  # fmt: skip


def saved_state(runtime, container_id: str) -> dict:
    with open(os.path.join(runtime.root, container_id, "state.json")) as f:
        return json.load(f)


def cgroup_dir(runtime, container_id: str, hierarchy: str) -> str:
    """The container's directory in one cgroup hierarchy, as state.json records it."""
    return saved_state(runtime, container_id)["cgroup_paths"][hierarchy]


def cgroup_pids(runtime, container_id: str) -> list[int]:
    pids = set()
    for top, _, _ in os.walk(cgroup_dir(runtime, container_id, "pids")):
        with open(os.path.join(top, "cgroup.procs")) as f:
            pids.update(int(line) for line in f if line.strip())
    return sorted(pids)


def gone(pid: int) -> bool:
    """pid has exited (or is a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def one_line_error(result) -> str:
    """Assert the command failed with exactly one line on stderr; return it."""
    assert result.returncode != 0, result
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
