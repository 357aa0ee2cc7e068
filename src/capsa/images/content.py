"""The content store: blobs by digest under content/blobs/sha256/<hex>.

A blob enters only through an Ingest: bytes go to content/ingest/<hex>,
are hashed as they arrive, and the file is renamed into blobs/ only when
the digest (and size, when known) match. A blob whose digest does not match
is never stored. An interrupted ingest keeps its partial file, so the next
attempt resumes from its length (an HTTP Range request, in the registry
client); a flock on the partial file keeps two pulls from writing it at once.
"""

import fcntl
import io
import os
from collections.abc import Iterator

from capsa.errors import InvalidArgument, NotFound
from capsa.images import digest as digests

CHUNK = 1 << 20


class ContentStore:
    def __init__(self, root: str):
        self.root = root
        self.blobs = os.path.join(root, "blobs", digests.ALGORITHM)
        self.ingests = os.path.join(root, "ingest")
        os.makedirs(self.blobs, exist_ok=True)
        os.makedirs(self.ingests, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.blobs, digests.hex_of(digest))

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def open(self, digest: str) -> io.BufferedReader:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store DATA (a manifest, a config); return its digest."""
        digest = expected or digests.of_bytes(data)
        if self.has(digest):
            if digests.of_bytes(data) != digest:
                raise InvalidArgument(f"content does not match digest {digest}")
            return digest
        with self.ingest(digest, len(data)) as ingest:
            ingest.restart()
            ingest.write(data)
            ingest.commit()
        return digest

    def ingest(self, digest: str, size: int | None = None) -> "Ingest":
        return Ingest(self, digest, size)

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self.path(digest))
            return True
        except FileNotFoundError:
            return False

    def digests(self) -> Iterator[str]:
        for name in os.listdir(self.blobs):
            yield f"{digests.ALGORITHM}:{name}"

    def clean_ingests(self) -> None:
        """Drop partial downloads nobody is writing (garbage collection)."""
        for name in os.listdir(self.ingests):
            path = os.path.join(self.ingests, name)
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)


class Ingest:
    """One blob being written; a context manager that holds the partial
    file's lock. `offset` is how many verified-so-far bytes it already has."""

    def __init__(self, store: ContentStore, digest: str, size: int | None):
        self.store = store
        self.digest = digests.validate(digest)
        self.expected_size = size
        self.partial = os.path.join(store.ingests, digests.hex_of(digest))
        self.hash = _sha256()
        self.offset = 0
        self.file: io.BufferedRandom | None = None

    def __enter__(self) -> "Ingest":
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another pull of the same blob finishes first
        self.file = os.fdopen(fd, "r+b")
        self._rehash_partial()
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    @property
    def done(self) -> bool:
        """The blob was stored meanwhile (by a concurrent pull)."""
        return self.store.has(self.digest)

    def _rehash_partial(self) -> None:
        # Hashing what is there lets the download continue where it stopped.
        while chunk := self.file.read(CHUNK):
            self.hash.update(chunk)
            self.offset += len(chunk)
        if self.expected_size is not None and self.offset > self.expected_size:
            self.restart()

    def restart(self) -> None:
        """Throw away the partial bytes (the server ignored a Range request)."""
        self.file.seek(0)
        self.file.truncate()
        self.hash = _sha256()
        self.offset = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.offset += len(chunk)
        if self.expected_size is not None and self.offset > self.expected_size:
            self.restart()
            raise InvalidArgument(f"blob {self.digest} is longer than its {self.expected_size} bytes")

    def commit(self) -> None:
        """Verify and move the blob into the store, durably; a mismatch
        discards the partial file and raises."""
        actual = f"{digests.ALGORITHM}:{self.hash.hexdigest()}"
        if self.expected_size is not None and self.offset != self.expected_size:
            raise InvalidArgument(f"blob {self.digest} is {self.offset} bytes, "
                                  f"its descriptor says {self.expected_size}")  # fmt: skip
        if actual != self.digest:
            self.restart()
            raise InvalidArgument(f"blob {self.digest} failed verification: its content has digest {actual}")
        self.file.flush()
        os.fsync(self.file.fileno())
        os.rename(self.partial, self.store.path(self.digest))
        fsync_dir(self.store.blobs)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256():
    import hashlib  # 5 ms (OpenSSL): only for writing blobs

    return hashlib.sha256()
