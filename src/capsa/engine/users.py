"""Who a container's process runs as: `--user` (or the image's User) looked
up in the container's own /etc/passwd and /etc/group, by runc's rules
(libcontainer/user.GetExecUser) and with Docker's supplementary groups.

The rootfs comes from an image and is not trusted. Its files are opened by
walking from a directory fd, one component at a time with O_NOFOLLOW, and
every symlink met on the way is resolved as if the rootfs were `/` (an
absolute target starts again at the rootfs, ".." stops there): an
/etc/passwd pointing at /etc/shadow reads the image's shadow, never the
host's. A missing file reads as empty; anything but a regular file is refused.
"""

import errno
import os
import re
import stat

from capsa.errors import InvalidArgument
from capsa.record import record

MAX_ID = 2**31 - 1  # runc's range for uids and gids
_MAX_SYMLINKS = 40  # the kernel's own limit for one lookup
_MAX_SIZE = 16 << 20  # a passwd file is small; refuse to read a huge one into memory


@record(frozen=True)
class User:
    """The process's identity. additional_gids is Docker's list: the primary
    gid, the user's groups from /etc/group, then --group-add."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


@record(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@record(frozen=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def resolve(rootfs: str, spec: str = "", group_add=()) -> User:
    """SPEC is "", "name", "uid", "name:group" or "uid:gid" ("" is root, as
    Docker). Names must be in the rootfs's files; numbers need no entry."""
    user_arg, _, group_arg = spec.partition(":")
    group_arg = group_arg.partition(":")[0]
    passwd = parse_passwd(read_rootfs_file(rootfs, "/etc/passwd"))
    groups = parse_group(read_rootfs_file(rootfs, "/etc/group"))
    uid, gid, home, name = _find_user(user_arg, passwd)
    sgids: list[int] = []
    if group_arg:
        gid = _find_group(group_arg, groups)
    elif name:
        sgids = [g.gid for g in groups if name in g.members]
    extra = additional_groups(group_add, groups) if group_add else []
    return User(uid, gid, tuple(dict.fromkeys([gid, *sgids, *extra])), home)


def _find_user(arg: str, passwd: list[_PasswdEntry]) -> tuple[int, int, str, str]:
    """(uid, gid, home, matched name); a numeric ARG is always a uid."""
    number = _number(arg)
    if arg == "":
        number = 0
    for entry in passwd:
        if (entry.uid == number) if number is not None else (entry.name == arg):
            return entry.uid, entry.gid, entry.home, entry.name
    if number is None:
        raise InvalidArgument(f"unable to find user {arg}: no matching entries in passwd file")
    return _in_range(number), 0, "/", ""


def _find_group(arg: str, groups: list[_GroupEntry]) -> int:
    number = _number(arg)
    for entry in groups:
        if (entry.gid == number) if number is not None else (entry.name == arg):
            return entry.gid
    if number is None:
        raise InvalidArgument(f"unable to find group {arg}: no matching entries in group file")
    return _in_range(number)


def additional_groups(names, groups: list[_GroupEntry]) -> list[int]:
    """--group-add: group names or gids; a gid needs no entry."""
    gids = []
    for wanted in names:
        match = next((g.gid for g in groups if g.name == wanted or str(g.gid) == wanted), None)
        if match is None:
            number = _number(wanted)
            if number is None:
                raise InvalidArgument(f"unable to find group {wanted}: no matching entries in group file")
            match = _in_range(number)
        gids.append(match)
    return list(dict.fromkeys(gids))


def _number(text: str) -> int | None:
    """Go's strconv.Atoi, which runc uses to tell ids from names."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None


def _in_range(number: int) -> int:
    if not 0 <= number <= MAX_ID:
        raise InvalidArgument(f"uids and gids must be in range 0-{MAX_ID}")
    return number


# -- the files


def parse_passwd(data: bytes) -> list[_PasswdEntry]:
    """name:password:uid:gid:gecos:home:shell lines; malformed ones are skipped."""
    entries = []
    for fields in _records(data):
        fields += [""] * (7 - len(fields))
        uid, gid = _number(fields[2]), _number(fields[3])
        if fields[0] and uid is not None and gid is not None:
            entries.append(_PasswdEntry(fields[0], uid, gid, fields[5] or "/"))
    return entries


def parse_group(data: bytes) -> list[_GroupEntry]:
    """name:password:gid:member,member lines; malformed ones are skipped."""
    entries = []
    for fields in _records(data):
        fields += [""] * (4 - len(fields))
        gid = _number(fields[2])
        if fields[0] and gid is not None:
            members = tuple(m for m in fields[3].split(",") if m)
            entries.append(_GroupEntry(fields[0], gid, members))
    return entries


def _records(data: bytes) -> list[list[str]]:
    lines = data.decode("utf-8", "surrogateescape").splitlines()
    return [line.strip().split(":") for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_rootfs_file(rootfs: str, path: str) -> bytes:
    """The content of PATH inside ROOTFS, symlinks resolved inside it; b""
    when it does not exist."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    dirs = [root]  # the walk so far; dirs[0] is the rootfs, ".." never pops it
    todo = _components(path)
    hops = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(dirs) > 1:
                    os.close(dirs.pop())
                continue
            target = _readlink(name, dirs[-1])
            if target is not None:
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise InvalidArgument(f"failed to read {path} in {rootfs}: too many levels of symbolic links")
                if target.startswith("/"):
                    while len(dirs) > 1:
                        os.close(dirs.pop())
                todo[:0] = _components(target)
            elif todo:
                fd = _open_dir(name, dirs[-1])
                if fd is None:
                    return b""
                dirs.append(fd)
            else:
                return _read_regular(name, dirs[-1], path, rootfs)
        return b""  # PATH named the rootfs itself
    finally:
        for fd in dirs:
            os.close(fd)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _readlink(name: str, dir_fd: int) -> str | None:
    """The symlink's target, or None when NAME is not a symlink (or missing)."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def _open_dir(name: str, dir_fd: int) -> int | None:
    try:  # O_NOFOLLOW: a symlink swapped in since _readlink fails here (ENOTDIR)
        return os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_regular(name: str, dir_fd: int, path: str, rootfs: str) -> bytes:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return b""
    if not stat.S_ISREG(st.st_mode):  # opening a fifo would block, a device could act
        raise InvalidArgument(f"failed to read {path} in {rootfs}: not a regular file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as err:
        raise InvalidArgument(f"failed to read {path} in {rootfs}: {os.strerror(err.errno)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_SIZE:
            raise InvalidArgument(f"failed to read {path} in {rootfs}: not a regular file of at most 16 MiB")
        data = b""
        while (chunk := os.read(fd, 1 << 16)) and len(data) <= _MAX_SIZE:
            data += chunk
        return data[:_MAX_SIZE]
    finally:
        os.close(fd)
