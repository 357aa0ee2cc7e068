"""The image store: content, snapshots and the images' records in capsa.db,
under one root (`--root`, CAPSA_ROOT, default /var/lib/capsa).

An image is its config's digest (Docker's image ID) plus the manifest it came
with; names point at images: tags ("docker.io/library/busybox:latest") and
repository digests ("docker.io/library/busybox@sha256:…", what a registry
served for the name). An image no tag names is "dangling", as in Docker.
Changes that touch blobs or snapshots (pull, load, import, removal, garbage
collection) hold the store's lock, so garbage collection never takes what a
pull is about to use.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager

from capsa import db
from capsa.db import Transaction
from capsa.errors import FailedPrecondition, InvalidArgument, NotFound
from capsa.images import reference
from capsa.images.content import ContentStore
from capsa.images.snapshots import Snapshots
from capsa.record import field, record

DEFAULT_ROOT = "/var/lib/capsa"
LOCK = "images.lock"
_HEX = frozenset("0123456789abcdef")


def default_root() -> str:
    return os.environ.get("CAPSA_ROOT") or DEFAULT_ROOT


@record
class Image:
    id: str
    manifest: str
    manifest_type: str
    platform: str
    chain: str | None
    size: int
    created: str
    added: float
    tags: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id.partition(":")[2][:12]


class ImageStore:
    def __init__(self, root: str | None = None):
        self.root = root or default_root()
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        self.conn = db.connect(self.root)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshots = Snapshots(os.path.join(self.root, "snapshots"), self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def lock(self):
        fd = os.open(os.path.join(self.root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading

    def _image(self, row: sqlite3.Row) -> Image:
        image = Image(**{key: row[key] for key in row.keys()})
        for name, kind in self.conn.execute(
                "SELECT name, kind FROM image_names WHERE image = ? ORDER BY name", (image.id,)):  # fmt: skip
            (image.tags if kind == "tag" else image.digests).append(name)
        return image

    def get(self, image_id: str) -> Image | None:
        row = self.conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return self._image(row) if row else None

    def list(self) -> list[Image]:
        rows = self.conn.execute("SELECT * FROM images ORDER BY added DESC").fetchall()
        return [self._image(row) for row in rows]

    def lookup(self, text: str) -> Image:
        """The image TEXT names: a name (busybox, busybox:1, x@sha256:…), a
        full image ID (sha256:…) or an unambiguous prefix of one, as Docker."""
        image_id = self._by_name(text) or self._by_id(text)
        if image_id is None:
            raise NotFound(f"no such image: {text}")
        return self.get(image_id)

    def _by_name(self, text: str) -> str | None:
        try:
            ref = reference.parse(text)
        except InvalidArgument:
            return None
        row = self.conn.execute("SELECT image FROM image_names WHERE name = ?", (str(ref),)).fetchone()
        return row[0] if row else None

    def _by_id(self, text: str) -> str | None:
        prefix = text.removeprefix("sha256:")
        if not prefix or not _HEX.issuperset(prefix):
            return None
        found = [row[0] for row in self.conn.execute(
            "SELECT id FROM images WHERE id >= ? AND id < ?", (f"sha256:{prefix}", f"sha256:{prefix}g"))]  # fmt: skip
        if len(found) > 1:
            raise InvalidArgument(f"image ID prefix {text!r} is ambiguous: it matches {len(found)} images")
        return found[0] if found else None

    def blobs_of(self, image_id: str) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT digest FROM image_blobs WHERE image = ?", (image_id,))]

    # -- writing

    def add(self, image: Image, blobs: list[str], names: list[tuple[str, str]]) -> None:
        """Record IMAGE, the blobs it needs and NAMES ((name, "tag"|"digest")),
        moving a name that pointed elsewhere; one transaction."""
        with Transaction(self.conn) as conn:
            conn.execute("INSERT OR IGNORE INTO images (id, manifest, manifest_type, platform, chain, size, "
                         "created, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (image.id, image.manifest, image.manifest_type, image.platform, image.chain,
                          image.size, image.created, image.added or time.time()))  # fmt: skip
            conn.executemany("INSERT OR IGNORE INTO image_blobs (image, digest) VALUES (?, ?)",
                             [(image.id, blob) for blob in blobs])  # fmt: skip
            conn.executemany("INSERT OR REPLACE INTO image_names (name, image, kind) VALUES (?, ?, ?)",
                             [(name, image.id, kind) for name, kind in names])  # fmt: skip

    def tag(self, image: Image, name: str) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("INSERT OR REPLACE INTO image_names (name, image, kind) VALUES (?, ?, 'tag')",
                         (name, image.id))  # fmt: skip

    def untag(self, name: str) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM image_names WHERE name = ?", (name,))

    def delete(self, image_id: str) -> None:
        """Forget IMAGE_ID and its names (garbage collection frees its data)."""
        with Transaction(self.conn) as conn:
            if conn.execute("DELETE FROM images WHERE id = ?", (image_id,)).rowcount == 0:
                raise FailedPrecondition(f"image {image_id} was removed meanwhile")
