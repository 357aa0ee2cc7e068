"""Volumes: directories the engine owns under <root>/volumes/<name>/_data,
recorded in capsa.db, mounted into containers by name (`-v data:/srv`),
anonymously (`-v /srv`, or the image's VOLUME), as Docker does. A new,
empty volume is first filled with what the image has at its mount point."""

import json
import os
import re
import shutil
import sqlite3

from capsa.db import Transaction
from capsa.engine.paths import new_id
from capsa.engine.records import now
from capsa.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class Volumes:
    def __init__(self, root: str, conn: sqlite3.Connection):
        self.dir = os.path.join(root, "volumes")
        self.conn = conn

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name, "_data")

    def get(self, name: str) -> dict:
        row = self.conn.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no such volume: {name}")
        return self._describe(row)

    def _describe(self, row) -> dict:
        return {"CreatedAt": row["created"], "Driver": "local", "Labels": json.loads(row["labels"]),
                "Mountpoint": self.path(row["name"]), "Name": row["name"], "Options": {}, "Scope": "local"}  # fmt: skip

    def all(self) -> list[dict]:
        return [self._describe(r) for r in self.conn.execute("SELECT * FROM volumes ORDER BY name")]

    def create(self, name: str | None = None, labels: dict | None = None, exist_ok: bool = True) -> str:
        """Create NAME (a random one if None); an existing one is reused."""
        anonymous = name is None
        name = name or new_id()
        if not _NAME.match(name):
            raise InvalidArgument(f'create {name}: "{name}" includes invalid characters for a local volume '
                                  "name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed")  # fmt: skip
        with Transaction(self.conn) as conn:
            if conn.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                if not exist_ok:
                    raise AlreadyExists(f"volume {name} already exists")
                return name
            os.makedirs(self.path(name), mode=0o755, exist_ok=True)
            conn.execute("INSERT INTO volumes (name, created, labels, anonymous) VALUES (?, ?, ?, ?)",
                         (name, now(), json.dumps(labels or {}), int(anonymous)))  # fmt: skip
        return name

    def users(self, name: str) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT container FROM container_volumes WHERE volume = ?", (name,))]

    def attach(self, container_id: str, name: str) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("INSERT OR IGNORE INTO container_volumes (container, volume) VALUES (?, ?)",
                         (container_id, name))  # fmt: skip

    def anonymous_of(self, container_id: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT v.name FROM volumes v JOIN container_volumes c ON c.volume = v.name "
            "WHERE c.container = ? AND v.anonymous = 1", (container_id,))]  # fmt: skip

    def remove(self, name: str, force: bool = False) -> None:
        self.get(name)
        users = self.users(name)
        if users:
            raise FailedPrecondition(f"remove {name}: volume is in use - [{', '.join(users)}]")
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
        shutil.rmtree(os.path.dirname(self.path(name)), ignore_errors=True)

    def prune(self, everything: bool = False) -> list[str]:
        """Remove unused volumes: anonymous ones, or with EVERYTHING all."""
        removed = []
        for row in self.conn.execute("SELECT name, anonymous FROM volumes").fetchall():
            if (everything or row["anonymous"]) and not self.users(row["name"]):
                self.remove(row["name"])
                removed.append(row["name"])
        return removed


def copy_up(rootfs: str, target: str, volume_dir: str) -> None:
    """Fill an empty new volume with the image's files at TARGET. The rootfs
    is the image's to shape: a path with a symlink anywhere is skipped, so
    the copy never leaves it."""
    source = rootfs
    for part in [p for p in target.split("/") if p]:
        source = os.path.join(source, part)
        if os.path.islink(source) or not os.path.isdir(source):
            return
    if os.listdir(volume_dir):
        return
    shutil.copytree(source, volume_dir, symlinks=True, dirs_exist_ok=True)
    shutil.copystat(source, volume_dir)


def resolve_mounts(engine, container_id: str, options, image_config: dict, rootfs: str) -> list:
    """The container's mounts with host paths for sources: -v, --mount and
    --tmpfs, plus an anonymous volume for each of the image's VOLUMEs the
    user did not mount over. Volumes are created as needed and recorded as
    the container's."""
    from capsa.engine import options as opts
    from capsa.record import replace

    wanted = [opts.parse_volume(spec) for spec in options.volumes]
    wanted += [opts.parse_mount(spec) for spec in options.mounts]
    wanted += [opts.parse_tmpfs(spec) for spec in options.tmpfs]
    targets = {mount.target for mount in wanted}
    wanted += [opts.Mount("volume", "", path) for path in image_config.get("Volumes") or {} if path not in targets]
    resolved = []
    for mount in wanted:
        if mount.kind == "volume":
            existed = bool(mount.source) and _exists(engine.volumes, mount.source)
            name = engine.volumes.create(mount.source or None)
            engine.volumes.attach(container_id, name)
            if not existed and not mount.nocopy:
                copy_up(rootfs, mount.target, engine.volumes.path(name))
            mount = replace(mount, kind="bind", source=engine.volumes.path(name))
        elif mount.kind == "bind" and not os.path.exists(mount.source):
            os.makedirs(mount.source, mode=0o755)  # as -v does; --mount refused it when parsed
        resolved.append(mount)
    return resolved


def _exists(volumes: Volumes, name: str) -> bool:
    try:
        volumes.get(name)
        return True
    except NotFound:
        return False
