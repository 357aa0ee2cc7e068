"""Paths inside a container's rootfs, resolved as the container would see
them: symlinks are followed relative to the rootfs, and ".." stops at its
root, so the result never leaves it (Docker's FollowSymlinkInScope)."""

import os

from capsa.errors import InvalidArgument

MAX_SYMLINKS = 40


def resolve(rootfs: str, path: str) -> str:
    """The host path of PATH in ROOTFS, every symlink on the way followed
    within ROOTFS; the last component is followed too unless it is missing."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    followed = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved[:-1]
            continue
        host = os.path.join(rootfs, *resolved, part)
        if os.path.islink(host):
            followed += 1
            if followed > MAX_SYMLINKS:
                raise InvalidArgument(f"too many levels of symbolic links in {path!r}")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return os.path.join(rootfs, *resolved)
