"""top, stats, cp, system df / prune / info on real containers."""

import json
import os

import pytest

pytestmark = pytest.mark.root


def test_top_and_stats(capsa):
    capsa("run", "-d", "--name", "watched", "-m", "64m", "busybox", "sleep", "100")
    assert "sleep 100" in capsa("top", "watched").stdout
    row = json.loads(capsa("stats", "--no-stream", "--format", "json", "watched").stdout)
    assert row["Name"] == "watched" and row["PIDs"] == "1" and row["MemUsage"].endswith("/ 64MiB")


def test_cp_both_ways_stays_inside(capsa, tmp_path):
    capsa("run", "-d", "--name", "files", "busybox", "sh", "-c", "echo inside > /tmp/f; ln -s / /tmp/root; sleep 100")
    capsa("exec", "files", "true")
    capsa("cp", "files:/tmp/f", str(tmp_path / "out"))
    assert (tmp_path / "out").read_text() == "inside\n"
    (tmp_path / "in").write_text("from host\n")
    capsa("cp", str(tmp_path / "in"), "files:/tmp/root/etc/copied")  # the symlink resolves in the container
    assert capsa("exec", "files", "cat", "/etc/copied").stdout == "from host\n"
    assert not os.path.exists("/etc/copied")
    assert "Could not find" in capsa.fails("cp", "files:/nope", str(tmp_path))


def test_system_df_info_prune(capsa):
    capsa("create", "--name", "idle", "busybox", "true")
    df = capsa("system", "df").stdout.splitlines()
    assert df[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE"] and df[2].split()[:2] == ["Containers", "1"]
    assert "Storage Driver: overlay" in capsa("system", "info").stdout
    out = capsa("system", "prune", "-f").stdout
    assert "Deleted Containers" in out and capsa("ps", "-aq").stdout == ""
    assert capsa("images", "-q", "busybox").stdout != ""  # tagged images stay
