"""Containers' records in capsa.db: ids and unique-prefix lookup, names,
state, and the options each was created with.

The shim is the authority on a running container; the engine copies what
it reports (exit code, OOM, times) into the record when it looks, so the
record is what `ps -a` shows even after the shim is gone.
"""

import json
import sqlite3
import time

from capsa.db import Transaction, find
from capsa.errors import AlreadyExists, InvalidArgument, NotFound
from capsa.engine import names
from capsa.record import field, record

@record
class Container:
    id: str
    name: str
    image: str
    image_name: str
    created: float
    state: str
    pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    started_at: str = ""
    finished_at: str = ""
    restart_count: int = 0
    runtime: str = ""
    config: dict = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


def now() -> str:
    """The time as Docker writes it: RFC 3339 in UTC, nanoseconds."""
    seconds = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds // 10**9)) + f".{seconds % 10**9:09d}Z"


class Containers:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def _load(self, row: sqlite3.Row) -> Container:
        values = dict(row)
        values["config"] = json.loads(values["config"])
        values["oom_killed"] = bool(values["oom_killed"])
        return Container(**values)

    def all(self) -> list[Container]:
        return [self._load(r) for r in self.conn.execute("SELECT * FROM containers ORDER BY created DESC")]

    def get(self, container_id: str) -> Container | None:
        row = self.conn.execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
        return self._load(row) if row else None

    def lookup(self, text: str) -> Container:
        """By full id, name, or unique id prefix, as Docker resolves them."""
        rows = find(self.conn, "containers", text, name=text.lstrip("/"))
        if len(rows) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {text}")
        if not rows:
            raise NotFound(f"No such container: {text}")
        return self._load(rows[0])

    def name_taken(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone() is not None

    def add(self, container: Container) -> None:
        try:
            with Transaction(self.conn) as conn:
                conn.execute("INSERT INTO containers (id, name, image, image_name, created, state, runtime, config) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (container.id, container.name, container.image, container.image_name,
                              container.created or time.time(), container.state, container.runtime,
                              json.dumps(container.config)))  # fmt: skip
        except sqlite3.IntegrityError:
            raise AlreadyExists(f'Conflict. The container name "/{container.name}" is already in use. '
                                "You have to remove (or rename) that container to be able to reuse that name.") from None

    def update(self, container_id: str, **fields) -> None:
        if "config" in fields:
            fields["config"] = json.dumps(fields["config"])
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with Transaction(self.conn) as conn:
            conn.execute(f"UPDATE containers SET {assignments} WHERE id = ?", (*fields.values(), container_id))

    def rename(self, container: Container, new_name: str) -> None:
        new_name = names.check(new_name)
        try:
            self.update(container.id, name=new_name)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f'Conflict. The container name "/{new_name}" is already in use.') from None

    def delete(self, container_id: str) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def using_image(self, image_id: str) -> list[Container]:
        rows = self.conn.execute("SELECT * FROM containers WHERE image = ?", (image_id,)).fetchall()
        return [self._load(r) for r in rows]
