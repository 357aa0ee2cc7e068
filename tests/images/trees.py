"""Comparing two unpacked root filesystems, and umoci as the reference unpacker.

    rootfs = umoci_unpack(layout, "latest", tmp_path / "umoci")   # DEST/rootfs
    assert compare_trees(rootfs, capsa_rootfs) == []

compare_trees() walks both trees without following symlinks and reports,
per relative path, what differs: presence, type, mode (with setuid, setgid
and sticky bits), uid/gid, size and sha256 of regular files, symlink
targets, device major/minor, extended attributes (but trusted.overlay.*
and security.*, which the storage and the host's LSM add), mtime to the
second, and hardlink groups (paths sharing an inode in one tree must share
one in the other).
"""

import hashlib
import os
import stat
import subprocess

UMOCI_TIMEOUT = 300
IGNORED_XATTR_PREFIXES = ("trusted.overlay.", "security.")
ATTRIBUTES = ("type", "mode", "owner", "size", "sha256", "target", "device", "xattrs", "mtime")
_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFCHR: "char device", stat.S_IFBLK: "block device",
          stat.S_IFSOCK: "socket"}  # fmt: skip


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in names:
        if name.startswith(IGNORED_XATTR_PREFIXES):
            continue
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return found


def describe(path: str) -> tuple[dict, tuple[int, int]]:
    """PATH's attributes (those ATTRIBUTES that apply to its type) and its inode."""
    st = os.lstat(path)
    kind = _TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
    found = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)),
             "owner": f"{st.st_uid}:{st.st_gid}", "xattrs": _xattrs(path),
             "mtime": int(st.st_mtime)}  # fmt: skip
    if kind == "file":
        found["size"] = st.st_size
        found["sha256"] = _sha256(path)
    elif kind == "symlink":
        found["target"] = os.readlink(path)
        del found["mode"]  # always 0777 on Linux, and not settable
    elif kind in ("char device", "block device"):
        found["device"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return found, (st.st_dev, st.st_ino)


def walk(root: str) -> dict[str, tuple[dict, tuple[int, int]]]:
    """Every path under ROOT (relative, "." for ROOT) -> describe(path)."""
    found = {".": describe(root)}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = describe(path)
    return found


def _hardlink_groups(tree: dict) -> list[set[str]]:
    by_inode: dict[tuple[int, int], set[str]] = {}
    for path, (attributes, inode) in tree.items():
        if attributes["type"] != "directory":
            by_inode.setdefault(inode, set()).add(path)
    return [paths for paths in by_inode.values() if len(paths) > 1]


def _hardlink_differences(name_a: str, tree_a: dict, name_b: str, tree_b: dict) -> list[str]:
    found = []
    for group in _hardlink_groups(tree_a):
        present = sorted(path for path in group if path in tree_b)
        if len({tree_b[path][1] for path in present}) > 1:
            found.append(f"{', '.join(present)}: one inode in {name_a}, several in {name_b}")
    return found


def compare_trees(a, b, ignore: frozenset[str] | set[str] = frozenset(),
                  ignore_paths: frozenset[str] | set[str] = frozenset()) -> list[str]:  # fmt: skip
    """What differs between trees A and B, one line per difference (empty:
    the same). IGNORE: attribute names (of ATTRIBUTES, or "hardlinks") not
    to compare; IGNORE_PATHS: relative paths not to compare (nor what is
    under them)."""
    unknown = set(ignore) - set(ATTRIBUTES) - {"hardlinks"}
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}")
    a, b = str(a), str(b)

    def kept(tree: dict) -> dict:
        return {path: value for path, value in tree.items()
                if not any(path == skip or path.startswith(skip.rstrip("/") + "/")
                           for skip in ignore_paths)}  # fmt: skip

    tree_a, tree_b = kept(walk(a)), kept(walk(b))
    differences = []
    for path in sorted(tree_a.keys() | tree_b.keys()):
        if path not in tree_b:
            differences.append(f"{path}: only in {a}")
            continue
        if path not in tree_a:
            differences.append(f"{path}: only in {b}")
            continue
        attrs_a, attrs_b = tree_a[path][0], tree_b[path][0]
        for name in ATTRIBUTES:
            if name in ignore:
                continue
            if attrs_a.get(name) != attrs_b.get(name):
                differences.append(f"{path}: {name} {attrs_a.get(name)!r} != {attrs_b.get(name)!r}")
            if name == "type" and attrs_a["type"] != attrs_b["type"]:
                break  # the rest would only repeat it
    if "hardlinks" not in ignore:
        differences += _hardlink_differences(a, tree_a, b, tree_b)
        differences += _hardlink_differences(b, tree_b, a, tree_a)
    return differences


def umoci_unpack(layout_dir, tag: str, dest) -> str:
    """`umoci unpack --image LAYOUT_DIR:TAG DEST` (as root: owners are
    real); returns DEST/rootfs."""
    argv = ["umoci", "unpack", "--image", f"{layout_dir}:{tag}", str(dest)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=UMOCI_TIMEOUT,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stderr}")
    return os.path.join(str(dest), "rootfs")
