"""Paths inside a root filesystem, resolved as a process chrooted there
would see them: symlinks are followed relative to the root and ".." stops
at it, so the result never leaves it. The runtime uses it for mount and
device targets, the engine for `capsa cp`."""

import os
import stat


def resolve(root: str, path: str) -> str:
    """The host path of `path` inside root, following symlinks as if root were /."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 255:
                raise OSError(40, f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)
