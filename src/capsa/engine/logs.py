"""Reading a container's log, which its shim writes in Docker's json-file
format (one {"log", "stream", "time"} object per line) and rotates
(container.log, .1, .2, …): `capsa logs [-f] [--tail N] [-t] [--since]`."""

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

from capsa.errors import InvalidArgument

POLL = 0.05


def files_oldest_first(path: str) -> list[str]:
    rotated = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        rotated.append(f"{path}.{n}")
        n += 1
    return [*reversed(rotated), path] if os.path.exists(path) else list(reversed(rotated))


def entries(path: str) -> Iterator[dict]:
    """Every entry written so far, oldest first; a torn last line is skipped."""
    for name in files_oldest_first(path):
        with open(name, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield json.loads(line)


def follow(path: str, running: Callable[[], bool], from_start: bool = False) -> Iterator[dict]:
    """Entries appended from now on (FROM_START: all of the current file's
    too), across rotations, until RUNNING() says the container is done and
    the file has no more."""
    f, inode = _open(path)
    if f is not None and not from_start:
        f.seek(0, os.SEEK_END)
    pending = b""
    while True:
        line = f.readline() if f is not None else b""
        if line:
            pending += line
            if pending.endswith(b"\n"):
                yield json.loads(pending)
                pending = b""
            continue
        if not running() and (f is None or not _rotated(path, inode)):
            return
        if f is None or _rotated(path, inode):
            if f is not None:  # drain the rotated file's tail, then the new one
                for rest in f:
                    pending += rest
                f.close()
            f, inode = _open(path)
            continue
        time.sleep(POLL)


def _open(path: str):
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None, None
    return f, os.fstat(f.fileno()).st_ino


def _rotated(path: str, inode: int | None) -> bool:
    try:
        return os.stat(path).st_ino != inode
    except FileNotFoundError:
        return False


def select(items: Iterator[dict], tail: int | None, since: float | None) -> Iterator[dict]:
    if since is not None:
        items = (e for e in items if parse_time(e["time"]) >= since)
    if tail is not None:
        items = iter(deque(items, maxlen=tail)) if tail > 0 else iter(())
    return items


def parse_time(text: str) -> float:
    head, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{rest or 0}")


def parse_since(text: str, now: float | None = None) -> float:
    """--since: a Unix time, an RFC 3339 time, or a duration ago (10m, 1h30m)."""
    now = now or time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError:
        pass
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise InvalidArgument(f"invalid value for --since: {text!r}")
    if number or not text:
        raise InvalidArgument(f"invalid value for --since: {text!r}")
    return now - total
