"""Resolving a path inside a rootfs never leaves it."""

import os

from capsa.rootpath import resolve


def test_symlinks_resolve_inside_the_rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "escape").symlink_to("/etc")
    (root / "up").symlink_to("../../../..")
    assert resolve(str(root), "/bin/sh") == str(root / "usr" / "bin" / "sh")
    assert resolve(str(root), "/escape/passwd") == str(root / "etc" / "passwd")
    assert resolve(str(root), "/up/etc") == str(root / "etc")
    assert resolve(str(root), "../../x") == str(root / "x")
    assert os.path.commonpath([resolve(str(root), "/up/up/../..//bin"), str(root)]) == str(root)
