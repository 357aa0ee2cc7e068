"""The container's log in Docker's json-file format, with size-based rotation.

One JSON object per line, as dockerd's json-file driver writes it:

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}

Output is split at newlines, each entry keeping its "\\n"; a line still
unfinished after 16 KiB is written as an entry of its own without one, and
what is left unfinished when a stream ends (or the container exits) too, as
Docker's log copier does. `docker logs`, `capsa logs` and anything that reads
Docker's files can read these.

Rotation: before an entry would take the file past max_size, log -> log.1,
log.1 -> log.2, ..., keeping max_files files in all (max_files 1 truncates
instead), and writing goes on in a new file. max_size 0 never rotates.
"""

import posix
import time
from _json import encode_basestring

PARTIAL_MAX = 16 * 1024  # Docker's bufio size in the log copier
DEFAULT_MAX_SIZE = 10 << 20
DEFAULT_MAX_FILES = 3

_second_cache = [-1, ""]


def rfc3339nano(ns: int | None = None) -> str:
    """UTC time as Go's RFC3339Nano prints it (trailing zeros of the fraction dropped)."""
    if ns is None:
        ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    if _second_cache[0] != seconds:  # strftime is the costly part; lines come in bursts
        _second_cache[0] = seconds
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        return f"{_second_cache[1]}.{fraction:09d}".rstrip("0") + "Z"
    return _second_cache[1] + "Z"


def encode_entry(data: bytes, stream: str, timestamp: str) -> bytes:
    """One json-file line; bytes that are not UTF-8 become U+FFFD, as in Docker."""
    text = encode_basestring(data.decode("utf-8", "replace"))
    return f'{{"log":{text},"stream":"{stream}","time":"{timestamp}"}}\n'.encode()


def split_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """(complete entries, what stays pending) after data arrives on a stream."""
    buffer = pending + data
    entries = []
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            break
        line = buffer[start : end + 1]
        start = end + 1
        while len(line) > PARTIAL_MAX:  # no entry is longer than the copier's buffer
            line = _cut(line, entries)
        entries.append(line)
    rest = buffer[start:]
    while len(rest) >= PARTIAL_MAX:
        rest = _cut(rest, entries)
    return entries, rest


def _cut(data: bytes, entries: list[bytes]) -> bytes:
    """Append the first PARTIAL_MAX bytes (at most) of data to entries; return the rest."""
    cut = _utf8_boundary(data, PARTIAL_MAX)
    entries.append(data[:cut])
    return data[cut:]


def _utf8_boundary(data: bytes, limit: int) -> int:
    """limit, moved back so that a multi-byte character is not cut in two."""
    for back in range(min(3, limit - 1) + 1):
        if data[limit - back] & 0xC0 != 0x80:  # not a continuation byte
            return limit - back
    return limit


class JsonFileLog:
    """The log file of one container, shared by all its runs (restarts append)."""

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE,
                 max_files: int = DEFAULT_MAX_FILES, clock=rfc3339nano):  # fmt: skip
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self.clock = clock
        self.pending = {"stdout": b"", "stderr": b""}
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self) -> None:
        self.fd = posix.open(self.path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o640)
        self.size = posix.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        """Output read from the container's stream ("stdout" or "stderr")."""
        entries, self.pending[stream] = split_lines(self.pending[stream], data)
        if entries:
            self._write_entries(stream, entries)

    def flush(self, stream: str | None = None) -> None:
        """Write what is pending without a newline: the stream ended."""
        for name in (stream,) if stream else tuple(self.pending):
            if self.pending[name]:
                entry, self.pending[name] = self.pending[name], b""
                self._write_entries(name, [entry])

    def _write_entries(self, stream: str, entries: list[bytes]) -> None:
        timestamp = self.clock()
        batch = []
        batch_size = 0
        for entry in entries:
            line = encode_entry(entry, stream, timestamp)
            if self.max_size and self.size + batch_size + len(line) > self.max_size and \
                    self.size + batch_size > 0:  # fmt: skip
                self._append(b"".join(batch))
                batch, batch_size = [], 0
                self.rotate()
            batch.append(line)
            batch_size += len(line)
        self._append(b"".join(batch))

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = posix.write(self.fd, view)
            self.size += written
            view = view[written:]

    def rotate(self) -> None:
        """log -> log.1 -> ... -> log.<max_files - 1>, then a new, empty log."""
        posix.close(self.fd)
        if self.max_files == 1:
            posix.truncate(self.path, 0)
        else:
            for number in range(self.max_files - 1, 1, -1):
                try:
                    posix.rename(f"{self.path}.{number - 1}", f"{self.path}.{number}")
                except FileNotFoundError:
                    pass
            posix.rename(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            posix.close(self.fd)
            self.fd = -1
