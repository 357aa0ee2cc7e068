"""capsa.engine.users: --user resolved as runc and Docker do, and the rootfs's
files read without ever leaving the rootfs."""

import os

import pytest

from capsa.engine import users
from capsa.engine.users import User
from capsa.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment line
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
app:x:1000:1000:App,,,:/home/app:/bin/sh
nohome:x:1001:1001::
broken:x:notanumber:1:::
1234:x:5000:5000::/home/numeric:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
www-data:x:33:app
app:x:1000:
audio:x:29:app,www-data
video:x:44:app
users:x:100:
staff:x:50:other
"""


@pytest.fixture
def rootfs(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize("spec,group_add,expected", [
    ("", (), User(0, 0, (0,), "/root")),
    ("root", (), User(0, 0, (0,), "/root")),
    ("0", (), User(0, 0, (0,), "/root")),
    ("app", (), User(1000, 1000, (1000, 33, 29, 44), "/home/app")),
    ("1000", (), User(1000, 1000, (1000, 33, 29, 44), "/home/app")),
    ("www-data", (), User(33, 33, (33, 29), "/var/www")),
    # An explicit group replaces the primary one; no supplementary groups then (runc).
    ("app:users", (), User(1000, 100, (100,), "/home/app")),
    ("app:0", (), User(1000, 0, (0,), "/home/app")),
    ("app:4242", (), User(1000, 4242, (4242,), "/home/app")),
    ("1000:1000", (), User(1000, 1000, (1000,), "/home/app")),
    # Numbers need no entry.
    ("4242", (), User(4242, 0, (0,), "/")),
    ("4242:4343", (), User(4242, 4343, (4343,), "/")),
    # A numeric spec is always a uid, even where a user has that name.
    ("1234", (), User(1234, 0, (0,), "/")),
    ("nohome", (), User(1001, 1001, (1001,), "/")),
    ("daemon", ("audio", "100", "7777", "video"), User(1, 1, (1, 29, 100, 7777, 44), "/usr/sbin")),
    ("app", ("video", "44"), User(1000, 1000, (1000, 33, 29, 44), "/home/app")),
])  # fmt: skip
def test_resolve(rootfs, spec, group_add, expected):
    assert users.resolve(rootfs, spec, group_add) == expected


@pytest.mark.parametrize("spec,group_add,message", [
    ("nobody", (), "unable to find user nobody: no matching entries in passwd file"),
    ("broken", (), "unable to find user broken: no matching entries in passwd file"),
    ("app:nogroup", (), "unable to find group nogroup: no matching entries in group file"),
    ("app", ("nogroup",), "unable to find group nogroup: no matching entries in group file"),
    ("2147483648", (), "uids and gids must be in range 0-2147483647"),
    ("0:2147483648", (), "uids and gids must be in range 0-2147483647"),
    ("-1", (), "uids and gids must be in range 0-2147483647"),
    ("0", ("-5",), "uids and gids must be in range 0-2147483647"),
])  # fmt: skip
def test_resolve_refuses(rootfs, spec, group_add, message):
    with pytest.raises(InvalidArgument) as caught:
        users.resolve(rootfs, spec, group_add)
    assert str(caught.value) == message


def test_missing_files_read_as_empty(tmp_path):
    assert users.resolve(str(tmp_path), "") == User(0, 0, (0,), "/")
    assert users.resolve(str(tmp_path), "1000:1000", ["20"]) == User(1000, 1000, (1000, 20), "/")
    with pytest.raises(InvalidArgument, match="^unable to find user app: no matching entries in passwd file$"):
        users.resolve(str(tmp_path), "app")
    with pytest.raises(InvalidArgument, match="^unable to find group staff: no matching entries in group file$"):
        users.resolve(str(tmp_path), "0:staff")


def test_symlinks_resolve_inside_the_rootfs(tmp_path):
    """An image's /etc/passwd -> /etc/real/passwd means the rootfs's file, and
    ../../.. cannot climb out of the rootfs."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text("hostuser:x:7:7::/host:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc/real").mkdir(parents=True)
    (root / "etc/real/passwd").write_text("imageuser:x:8:8::/image:/bin/sh\n")
    (root / "etc/passwd").symlink_to("/etc/real/passwd")
    assert users.resolve(str(root), "imageuser") == User(8, 8, (8,), "/image")
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to(str(host / "passwd"))  # absolute: looked up in the rootfs
    with pytest.raises(InvalidArgument, match="unable to find user hostuser"):
        users.resolve(str(root), "hostuser")
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to("../../../../../../" + os.path.relpath(host / "passwd", "/"))
    with pytest.raises(InvalidArgument, match="unable to find user hostuser"):
        users.resolve(str(root), "hostuser")


def test_a_symlinked_etc_is_followed_inside(tmp_path):
    root = tmp_path / "rootfs"
    (root / "private/etc").mkdir(parents=True)
    (root / "private/etc/passwd").write_text("u:x:9:9::/u:/bin/sh\n")
    (root / "etc").symlink_to("private/etc")
    assert users.read_rootfs_file(str(root), "/etc/passwd") == b"u:x:9:9::/u:/bin/sh\n"
    (root / "etc").unlink()
    (root / "etc").symlink_to(str(tmp_path))  # an absolute link to the host dir: no such file inside
    assert users.read_rootfs_file(str(root), "/etc/passwd") == b""


def test_symlink_loops_are_refused(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        users.resolve(str(tmp_path), "root")


def test_only_regular_files_are_read(tmp_path):
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/passwd")  # opening it would block the engine
    with pytest.raises(InvalidArgument, match="not a regular file"):
        users.resolve(str(tmp_path), "root")
    os.unlink(tmp_path / "etc/passwd")
    (tmp_path / "etc/passwd").mkdir()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        users.resolve(str(tmp_path), "root")


def test_dangling_and_odd_paths(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").symlink_to("/nowhere/passwd")
    assert users.read_rootfs_file(str(tmp_path), "/etc/passwd") == b""
    (tmp_path / "file").write_text("x")
    assert users.read_rootfs_file(str(tmp_path), "/file/passwd") == b""
    assert users.read_rootfs_file(str(tmp_path), "/") == b""
    assert users.read_rootfs_file(str(tmp_path), "/./etc/../file") == b"x"


def test_parse_files():
    passwd = users.parse_passwd(PASSWD.encode())
    assert [e.name for e in passwd] == ["root", "daemon", "www-data", "app", "nohome", "1234"]
    groups = users.parse_group(GROUP.encode())
    assert [(g.name, g.members) for g in groups if g.members] == [
        ("www-data", ("app",)), ("audio", ("app", "www-data")), ("video", ("app",)), ("staff", ("other",))]
