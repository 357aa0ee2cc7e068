"""Garbage collection: remove the blobs and snapshots no image needs.

The roots are the images' records: every blob in image_blobs, and the
snapshot chain of every image's top layer. Interrupted work (partial
downloads nobody is writing, unpack directories without a record) goes too.
The caller holds the store's lock.
"""

from capsa.images.store import ImageStore
from capsa.record import record


@record
class Collected:
    blobs: int = 0
    snapshots: int = 0
    bytes: int = 0


def collect(store: ImageStore, partials: bool = False) -> Collected:
    """Remove what no image needs; PARTIALS: also interrupted downloads,
    which a later pull would otherwise resume (`image prune`)."""
    done = Collected()
    needed = {row[0] for row in store.conn.execute("SELECT DISTINCT digest FROM image_blobs")}
    for digest in list(store.content.digests()):
        if digest not in needed:
            done.bytes += store.content.size(digest)
            store.content.delete(digest)
            done.blobs += 1
    kept: set[str] = set()
    for (chain,) in store.conn.execute("SELECT chain FROM images WHERE chain IS NOT NULL").fetchall():
        while chain and chain not in kept and (row := store.snapshots.get(chain)):
            kept.add(chain)
            chain = row["parent"]
    for row in store.conn.execute("SELECT * FROM snapshots").fetchall():
        if row["chain_id"] not in kept:
            done.bytes += row["size"]
            store.snapshots.remove(row)
            done.snapshots += 1
    store.snapshots.sweep()
    if partials:
        store.content.clean_ingests()
    return done
