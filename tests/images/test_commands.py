"""The image commands' behaviour as Docker users know it: images / image ls
and their formats, tag, rmi's untag-then-delete rule, image prune, and
bad input answered in one line without changing the store."""

import json
import os

import pytest

pytestmark = pytest.mark.root


def import_tree(capsa, name: str, content: str) -> str:
    tree = os.path.join(capsa.dir, f"tree-{content}")
    os.makedirs(os.path.join(tree, "etc"))
    with open(os.path.join(tree, "etc", "content"), "w") as f:
        f.write(content)
    return capsa("import", tree, name).stdout.strip()


def test_images_lists_names_ids_and_digests(capsa):
    image_id = import_tree(capsa, "app:1", "one")
    capsa("tag", "app:1", "registry.example:5000/team/app:2")
    table = capsa("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = sorted(line.split()[:3] for line in table[1:])
    assert rows == [["app", "1", image_id[7:19]], ["registry.example:5000/team/app", "2", image_id[7:19]]]
    assert capsa("images", "-q").stdout.split() == [image_id[7:19]]
    assert capsa("images", "-q", "--no-trunc").stdout.split() == [image_id]
    assert [r["Tag"] for r in map(json.loads, capsa("images", "--format", "json", "app").stdout.splitlines())] == ["1"]
    assert capsa("images", "--digests").stdout.splitlines()[0].split()[2] == "DIGEST"
    assert capsa("image", "ls", "-q", "nothing").stdout == ""


def test_rmi_untags_then_deletes(capsa):
    image_id = import_tree(capsa, "app:1", "one")
    capsa("tag", "app:1", "app:2")
    assert capsa("rmi", "app:1").stdout.splitlines() == ["Untagged: app:1"]
    assert capsa("rmi", "app:2").stdout.splitlines() == ["Untagged: app:2", f"Deleted: {image_id}"]
    assert capsa("images", "-q").stdout == ""
    assert os.listdir(os.path.join(capsa.root, "snapshots")) == []


def test_rmi_by_id_needs_force_across_repositories(capsa):
    image_id = import_tree(capsa, "app:1", "one")
    capsa("tag", "app:1", "other:1")
    assert "must be forced" in capsa.fails("rmi", image_id[7:19])
    assert capsa("images", "-q").stdout.split() == [image_id[7:19]]
    assert capsa("rmi", "-f", image_id[7:19]).stdout.splitlines()[-1] == f"Deleted: {image_id}"


def test_a_moved_tag_leaves_a_dangling_image_that_prune_removes(capsa):
    old = import_tree(capsa, "app:1", "old")
    new = import_tree(capsa, "app:1", "new")
    rows = [line.split() for line in capsa("images").stdout.splitlines()[1:]]
    assert ["<none>", "<none>", old[7:19]] in [row[:3] for row in rows]
    out = capsa("image", "prune", "-f").stdout
    assert f"deleted: {old}" in out and new not in out
    assert capsa("images", "-q", "--no-trunc").stdout.split() == [new]
    assert "deleted: " + new in capsa("image", "prune", "-a", "-f").stdout
    assert os.listdir(os.path.join(capsa.root, "content", "blobs", "sha256")) == []


def test_prune_asks_first(capsa):
    import_tree(capsa, "app:1", "one")
    capsa("image", "prune", "-a", input="n\n")
    assert capsa("images", "-q").stdout != ""


def test_bad_input_changes_nothing(capsa):
    image_id = import_tree(capsa, "app:1", "one")
    assert "invalid reference format" in capsa.fails("tag", "app:1", "Bad:Name")
    assert "digest" in capsa.fails("tag", "app:1", "app@sha256:" + "a" * 64)
    assert capsa.fails("tag", "absent", "x") == "capsa: no such image: absent"
    assert "invalid platform" in capsa.fails("pull", "--platform", "linux", "app:1")
    os.makedirs(capsa.env["CAPSA_CONFIG"])
    with open(os.path.join(capsa.env["CAPSA_CONFIG"], "config.json"), "w") as f:
        f.write("{broken")
    assert "config.json" in capsa.fails("login", "-u", "u", "--password-stdin", "127.0.0.1:1",
                                         input="p\n")  # fmt: skip
    assert capsa("images", "-q", "--no-trunc").stdout.split() == [image_id]
