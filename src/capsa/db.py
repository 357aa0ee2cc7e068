"""capsa.db: the SQLite database that is the single source of truth for the
engine's metadata: images, their names and snapshots, containers, volumes
and networks.

WAL mode lets readers run beside one writer; every multi-step change is one
transaction (`with Transaction(conn):`). The schema is built by MIGRATIONS,
applied in order on open; `PRAGMA user_version` counts those applied.
"""

import _thread
import os
import sqlite3

FILE = "capsa.db"

IMAGES = """
CREATE TABLE images (
    id TEXT PRIMARY KEY,              -- the config's digest: Docker's image ID
    manifest TEXT NOT NULL,           -- digest of the platform's manifest
    manifest_type TEXT NOT NULL,
    platform TEXT NOT NULL,           -- os/architecture[/variant]
    chain TEXT,                       -- chain ID of the top layer (NULL: no layers)
    size INTEGER NOT NULL,            -- unpacked bytes of all layers
    created TEXT NOT NULL,            -- the config's "created" (may be "")
    added REAL NOT NULL               -- when this store got it
);
CREATE TABLE image_names (
    name TEXT PRIMARY KEY,            -- docker.io/library/busybox:latest or name@sha256:...
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
);
CREATE INDEX image_names_image ON image_names(image);
CREATE TABLE image_blobs (            -- every blob an image needs: GC roots
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (image, digest)
);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- names snapshots/<id>, never reused
    chain_id TEXT UNIQUE NOT NULL,
    parent TEXT,                      -- the parent layer's chain ID
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    added REAL NOT NULL
);
"""

CONTAINERS = """
CREATE TABLE containers (
    id TEXT PRIMARY KEY,              -- 64 hex digits
    name TEXT UNIQUE NOT NULL,
    image TEXT NOT NULL REFERENCES images(id),
    image_name TEXT NOT NULL,         -- as the user named it
    created REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('created', 'running', 'paused', 'exited', 'dead')),
    pid INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    oom_killed INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    runtime TEXT NOT NULL,
    config TEXT NOT NULL              -- JSON: the options it was created with
);
CREATE INDEX containers_image ON containers(image);
CREATE TABLE volumes (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',   -- JSON
    anonymous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE container_volumes (
    container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    volume TEXT NOT NULL REFERENCES volumes(name),
    PRIMARY KEY (container, volume)
);
"""

NETWORKS = """
CREATE TABLE networks (
    id TEXT PRIMARY KEY,              -- 64 hex digits
    name TEXT UNIQUE NOT NULL,
    driver TEXT NOT NULL,             -- bridge
    bridge TEXT UNIQUE NOT NULL,      -- the host's bridge interface
    subnet TEXT UNIQUE NOT NULL,      -- IPv4 CIDR
    gateway TEXT NOT NULL,
    internal INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',   -- JSON
    created TEXT NOT NULL
);
CREATE TABLE endpoints (              -- a container's place on a network
    container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    network TEXT NOT NULL REFERENCES networks(id),
    ifname TEXT NOT NULL,             -- eth0, eth1, ... in the container
    aliases TEXT NOT NULL DEFAULT '[]',  -- JSON: names besides the container's
    result TEXT,                      -- JSON: the CNI result while attached
    PRIMARY KEY (container, network)
);
CREATE INDEX endpoints_network ON endpoints(network);
"""

# Each entry moves the schema one version up; never edit one that shipped.
MIGRATIONS = (IMAGES, CONTAINERS, NETWORKS)
VERSION = len(MIGRATIONS)


class Connection(sqlite3.Connection):
    """A connection threads may share (a pull unpacks layers in several):
    its transactions take turns."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = _thread.RLock()  # threading's, without threading's imports


_HEX = frozenset("0123456789abcdef")


def find(conn: sqlite3.Connection, table: str, text: str, name: str | None = None) -> list[sqlite3.Row]:
    """Docker's lookup of an object by full id, NAME (default TEXT) or id
    prefix: the one row with that id or name, else every row whose 64-hex
    id starts with TEXT (more than one: ambiguous, for the caller to say)."""
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ? OR name = ?", (text, name or text)).fetchone()
    if row is not None:
        return [row]
    if not text or not _HEX.issuperset(text):
        return []
    return conn.execute(f"SELECT * FROM {table} WHERE id >= ? AND id < ?", (text, text + "g")).fetchall()


def connect(root: str) -> Connection:
    """Open (creating if needed) ROOT/capsa.db."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    conn = sqlite3.connect(os.path.join(root, FILE), timeout=30, isolation_level=None,
                           check_same_thread=False, factory=Connection)  # fmt: skip
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    _migrate(conn)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] >= VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for schema in MIGRATIONS[version:]:
            # executescript() would commit midway: run the statements one by one.
            for statement in schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class Transaction:
    """`with Transaction(conn):` — BEGIN IMMEDIATE ... COMMIT, or ROLLBACK
    on an exception (autocommit mode otherwise)."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def __enter__(self) -> Connection:
        self.conn.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.conn.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.conn.lock.release()
