"""Snapshots: one extracted directory per layer chain ID, snapshots/<n>.

A layer is unpacked once, in overlay form (whiteouts as 0:0 devices, opaque
directories marked by xattr), into snapshots/ingest-<random>, and becomes
snapshots/<n> in the same transaction that records its chain ID; every
image whose layers share that chain uses the same directory as an overlay
lowerdir. <n> is a small never-reused number, which keeps the overlay mount
options short (see mount_overlay). Where overlayfs is unavailable, a
container's rootfs is built by applying the layers' blobs in order instead.
"""

import errno
import os
import shutil
import sqlite3
import tempfile
import time

from capsa.db import Transaction
from capsa.errors import FailedPrecondition
from capsa.linux import mount as mounts

INGEST_PREFIX = "ingest-"
# The kernel copies mount options into one page, NUL included.
MOUNT_DATA_MAX = os.sysconf("SC_PAGE_SIZE") - 1


class Snapshots:
    def __init__(self, root: str, conn: sqlite3.Connection):
        self.root = root
        self.conn = conn
        os.makedirs(root, mode=0o700, exist_ok=True)

    def path(self, snapshot_id: int) -> str:
        return os.path.join(self.root, str(snapshot_id))

    def get(self, chain_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM snapshots WHERE chain_id = ?", (chain_id,)).fetchone()

    def new_dir(self) -> str:
        """A directory of its own to unpack one layer into (0755, as a
        layer's root is unless its tar says otherwise)."""
        path = tempfile.mkdtemp(prefix=INGEST_PREFIX, dir=self.root)
        os.chmod(path, 0o755)
        return path

    def commit(self, unpacked_dir: str, chain_id: str, parent: str | None, diff_id: str,
               size: int) -> sqlite3.Row:  # fmt: skip
        """Record UNPACKED_DIR as CHAIN_ID's snapshot; if a concurrent pull
        recorded it first, keep theirs and drop this copy."""
        with Transaction(self.conn) as conn:
            if (found := self.get(chain_id)) is None:
                cursor = conn.execute("INSERT INTO snapshots (chain_id, parent, diff_id, size, added) "
                                      "VALUES (?, ?, ?, ?, ?)", (chain_id, parent, diff_id, size, time.time()))  # fmt: skip
                os.rename(unpacked_dir, self.path(cursor.lastrowid))
                return self.get(chain_id)
        remove_tree(unpacked_dir)
        return found

    def chain(self, chain_id: str) -> list[sqlite3.Row]:
        """The snapshots of CHAIN_ID and its parents, top layer first."""
        rows = []
        while chain_id:
            row = self.get(chain_id)
            if row is None:
                raise FailedPrecondition(f"snapshot {chain_id} is missing; pull the image again")
            rows.append(row)
            chain_id = row["parent"]
        return rows

    def lowerdirs(self, chain_id: str) -> list[str]:
        return [self.path(row["id"]) for row in self.chain(chain_id)]

    def remove(self, row: sqlite3.Row) -> None:
        with Transaction(self.conn) as conn:
            conn.execute("DELETE FROM snapshots WHERE id = ?", (row["id"],))
        remove_tree(self.path(row["id"]))

    def sweep(self) -> list[str]:
        """Remove directories no snapshot row names (an interrupted unpack);
        the caller holds the store's lock, so none is being written."""
        known = {str(row[0]) for row in self.conn.execute("SELECT id FROM snapshots")}
        removed = []
        for name in os.listdir(self.root):
            if name not in known:
                remove_tree(os.path.join(self.root, name))
                removed.append(name)
        return removed


def remove_tree(path: str) -> None:
    """Remove PATH whatever its modes (root needs no write bits); what
    cannot go now, sweep() takes later."""
    shutil.rmtree(path, ignore_errors=True)


def overlay_available() -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == "overlay" for line in f if line.strip())


def mount_overlay(lowerdirs: list[str], upper: str, work: str, target: str,
                  volatile: bool = False) -> None:  # fmt: skip
    """Mount an overlay of LOWERDIRS (top first) with UPPER/WORK at TARGET.
    VOLATILE: UPPER is never synced to disk (what a container removed at
    its exit writes): unmounting it then costs no sync of the filesystem.

    With many layers the absolute lowerdir paths outgrow the one page of
    mount options, so, as containerd does, the mount is made from a child
    that has changed into the snapshots directory and names layers relative
    to it ("12:11:7" instead of full paths)."""
    extra = ",volatile" if volatile else ""
    options = f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work},index=off{extra}"
    if len(options) <= MOUNT_DATA_MAX:
        try:
            mounts.mount("overlay", target, "overlay", 0, options)
        except OSError as err:
            if not volatile or err.errno != errno.EINVAL:
                raise
            mount_overlay(lowerdirs, upper, work, target)  # a kernel before 5.10 has no volatile
        return
    parent = os.path.commonpath(lowerdirs)
    relative = ":".join(os.path.relpath(d, parent) for d in lowerdirs)
    options = f"lowerdir={relative},upperdir={upper},workdir={work},index=off{extra}"
    if len(options) > MOUNT_DATA_MAX:
        raise FailedPrecondition(f"failed to mount the rootfs at {target}: {len(lowerdirs)} layers "
                                 "are more than an overlay mount can name")  # fmt: skip
    _mount_from(parent, target, options)


def _mount_from(directory: str, target: str, options: str) -> None:
    # chdir is process-wide: do it in a child so other threads are unaffected.
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(directory)
            mounts.mount("overlay", target, "overlay", 0, options)
            os._exit(0)
        except OSError as err:
            os._exit(err.errno or 1)
    _, status = os.waitpid(pid, 0)
    errno = os.waitstatus_to_exitcode(status)
    if errno:
        raise OSError(errno, f"failed to mount overlay at {target}: {os.strerror(errno)}")
