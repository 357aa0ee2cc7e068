"""A container's state directory, `<root>/<id>/`, and its status from facts.

state.json is written once the container is created (temp file + fsync +
rename); status is never stored but derived when asked: the init is alive
(pid plus start time, so a reused pid is not mistaken for it), the exec fifo
is present (created), the freezer says frozen (paused, whatever the fifo says).
"""

import os
import time

from capsa import fastjson as json
from capsa.atomicfile import write_atomic
from capsa.errors import FailedPrecondition, InvalidArgument, NotFound
from capsa.linux.proc import is_alive

DEFAULT_ROOT = "/run/capsa-runtime"
FIFO = "exec.fifo"
STATE_FILE = "state.json"

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+.-")


def check_id(container_id: str) -> None:
    """Refuse ids that would escape the root directory or be ambiguous."""
    if not container_id or not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id {container_id!r}")


class State:
    """What `create` recorded about one container, and its live status."""

    def __init__(self, root: str, container_id: str, data: dict):
        self.root = root
        self.id = container_id
        self.data = data

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.id)

    @property
    def pid(self) -> int:
        return self.data.get("pid", 0)

    @property
    def bundle(self) -> str:
        return self.data.get("bundle", "")

    @property
    def config(self) -> dict:
        return self.data.get("config", {})

    def alive(self) -> bool:
        return is_alive(self.pid, self.data.get("start_time", -1))

    def creating(self) -> bool:
        """state.json is missing or still the record `create` writes before
        it forks (no init pid yet)."""
        return "pid" not in self.data

    def status(self) -> str:
        if self.creating():
            # A `create` that was killed will never finish: what it left
            # behind is stopped, and `delete` may remove it.
            creator = self.data.get("creator")
            if creator and not is_alive(creator, self.data.get("creator_start", -1)):
                return "stopped"
            return "creating"
        if not self.alive():
            return "stopped"
        # Frozen wins over the fifo, as in runc: a created container can be paused too.
        if self.data.get("cgroup_paths") and self.cgroup().frozen():
            return "paused"
        if os.path.exists(os.path.join(self.dir, FIFO)):
            return "created"
        return "running"

    def cgroup(self):
        from capsa.runtime.cgroups import load_manager

        return load_manager(self.data.get("cgroup_paths", {}))

    def oci(self, status: str | None = None) -> dict:
        """The runtime-spec's state object."""
        status = status or self.status()
        return {
            "ociVersion": self.config.get("ociVersion", "1.2.0"),
            "id": self.id,
            "status": status,
            "pid": self.pid if status in ("created", "running", "paused") else 0,
            "bundle": self.bundle,
            "annotations": self.config.get("annotations", {}),
        }

    def save(self) -> None:
        write_atomic(os.path.join(self.dir, STATE_FILE), json.dumps(self.data).encode())


def load(root: str, container_id: str) -> State:
    """The state of container_id, or NotFound (FailedPrecondition if unreadable)."""
    check_id(container_id)
    directory = os.path.join(root, container_id)
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        if not os.path.isdir(directory):
            raise NotFound(f"container {container_id} does not exist") from None
        data = {}  # being created: the directory exists, state.json not yet
    except ValueError as err:  # not JSON, or not UTF-8
        raise FailedPrecondition(f"failed to load state of container {container_id}: "
                                 f"{path}: {err}") from None  # fmt: skip
    if not isinstance(data, dict):
        raise FailedPrecondition(f"failed to load state of container {container_id}: "
                                 f"{path}: not a JSON object")  # fmt: skip
    return State(root, container_id, data)


def list_ids(root: str) -> list[str]:
    try:
        return sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    except FileNotFoundError:
        return []


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def remove_dir(path: str) -> None:
    """Remove a state directory and what it holds (shutil costs 18 ms to import)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_dir(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
