"""`capsa pull` against real registries: what it stores is what skopeo
pushed, unpacked as umoci unpacks it; auth, TLS, platforms; and hostile or
broken images fail cleanly with nothing stored and nothing written outside.
"""

import base64
import json
import os
import re
from contextlib import contextmanager

import pytest

from capsa.images import rootfs
from capsa.linux.mount import umount
from oci_images import (ABSOLUTE_PATH, HOSTILE, host_platform, hostile_layout, multiplatform_layout,
                        platform_string, push, scratch_layout)  # fmt: skip
from trees import compare_trees, umoci_unpack

pytestmark = pytest.mark.root


@contextmanager
def image_rootfs(capsa, name: str, copy: bool = False):
    """The image's rootfs as a container would see it (overlay, or copied)."""
    store = capsa.store()
    image = store.lookup(name)
    base = os.path.join(capsa.dir, "container")
    target, upper, work = (os.path.join(base, d) for d in ("rootfs", "upper", "work"))
    for d in (target, upper, work):
        os.makedirs(d)
    kind = rootfs.mount(store, image, target, upper, work, copy=copy)
    try:
        yield target
    finally:
        if kind == "overlay":
            umount(target)
        store.close()


def stored_state(capsa) -> tuple:
    """What a failed pull must leave unchanged."""
    root = capsa.root
    listing = lambda *p: sorted(os.listdir(os.path.join(root, *p))) if os.path.isdir(os.path.join(root, *p)) else []  # noqa: E731
    return listing("content", "blobs", "sha256"), listing("snapshots"), capsa("images", "-q").stdout


def test_pull_busybox_matches_umoci(capsa, open_registry, busybox_image, work_dir):
    push(busybox_image, open_registry, "pull/busybox")
    result = capsa("pull", f"{open_registry.host}/pull/busybox")
    assert result.stdout.splitlines()[-1] == f"{open_registry.host}/pull/busybox:latest"
    assert f"Digest: {busybox_image.manifest_digest}" in result.stdout
    assert "Status: Downloaded newer image" in result.stdout
    expected = umoci_unpack(busybox_image.layout, "latest", work_dir / "umoci")
    with image_rootfs(capsa, f"{open_registry.host}/pull/busybox") as tree:
        assert compare_trees(expected, tree, ignore_paths={"."}) == []
    again = capsa("pull", f"{open_registry.host}/pull/busybox")
    assert "Status: Image is up to date" in again.stdout and "Already exists" in again.stdout


@pytest.mark.parametrize("copy", [False, True], ids=["overlay", "copy"])
def test_pull_multilayer_matches_umoci(capsa, open_registry, multilayer_image, work_dir, copy):
    """Whiteouts, opaque directories, links, xattrs, owners, modes, a zstd and
    an uncompressed layer: the overlay and the copying fallback both show
    exactly the tree umoci unpacks (from the same layers, all gzip)."""
    push(multilayer_image, open_registry, "pull/multi")
    capsa("pull", "-q", f"{open_registry.host}/pull/multi")
    expected = umoci_unpack(multilayer_image.layout, "gzip", work_dir / "umoci")
    with image_rootfs(capsa, f"{open_registry.host}/pull/multi", copy=copy) as tree:
        assert compare_trees(expected, tree, ignore_paths={"."}) == []
    info = json.loads(capsa("image", "inspect", f"{open_registry.host}/pull/multi").stdout)[0]
    assert info["Id"] == multilayer_image.config_digest
    assert info["RootFS"]["Layers"] == multilayer_image.diff_ids


def test_layers_are_shared_between_images(capsa, open_registry, busybox_image, multilayer_image):
    push(busybox_image, open_registry, "shared/busybox")
    push(multilayer_image, open_registry, "shared/multi")
    capsa("pull", f"{open_registry.host}/shared/busybox")
    second = capsa("pull", f"{open_registry.host}/shared/multi")
    assert second.stdout.count("Already exists") == 1  # busybox's layer is the first of both
    assert len(os.listdir(os.path.join(capsa.root, "snapshots"))) == len(multilayer_image.layers)
    removed = capsa("rmi", f"{open_registry.host}/shared/multi").stdout
    assert f"Deleted: {multilayer_image.config_digest}" in removed
    assert len(os.listdir(os.path.join(capsa.root, "snapshots"))) == 1
    capsa("rmi", f"{open_registry.host}/shared/busybox")
    assert os.listdir(os.path.join(capsa.root, "snapshots")) == []
    assert os.listdir(os.path.join(capsa.root, "content", "blobs", "sha256")) == []


def test_platforms_from_an_index(capsa, open_registry, work_dir):
    index = multiplatform_layout(work_dir / "multi")
    push(index, open_registry, "pull/multiarch")
    name = f"{open_registry.host}/pull/multiarch"
    capsa("pull", "-q", name)
    with image_rootfs(capsa, name) as tree:
        with open(os.path.join(tree, "platform")) as f:
            assert f.read().strip() == platform_string(host_platform())
    digests = json.loads(capsa("image", "inspect", name).stdout)[0]["RepoDigests"]
    assert digests == [f"{name}@{index.index_digest}"]
    assert capsa.fails("pull", "--platform", "linux/s390x", name).endswith(
        "has no manifest for platform linux/s390x (it has: " + ", ".join(
            platform_string(i.platform) for i in index.images) + ")")  # fmt: skip
    other = next(i.platform for i in index.images if i.platform != host_platform())
    capsa("pull", "-q", "--platform", platform_string(other), name)
    info = json.loads(capsa("image", "inspect", name).stdout)[0]
    assert info["Architecture"] == other["architecture"]


def test_pull_by_digest_and_docker_media_types(capsa, open_registry, busybox_image):
    digest = push(busybox_image, open_registry, "pull/docker", docker=True)
    assert digest != busybox_image.manifest_digest  # the same image, Docker's media types
    capsa("pull", "-q", f"{open_registry.host}/pull/docker@{digest}")
    info = json.loads(capsa("image", "inspect", f"{open_registry.host}/pull/docker@{digest}").stdout)[0]
    assert info["RepoTags"] == [] and info["RepoDigests"] == [f"{open_registry.host}/pull/docker@{digest}"]
    assert info["Descriptor"]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    wrong = "sha256:" + "0" * 64
    assert "not found" in capsa.fails("pull", f"{open_registry.host}/pull/docker@{wrong}")


def test_basic_auth_login_and_logout(capsa, htpasswd_registry, busybox_image):
    push(busybox_image, htpasswd_registry, "auth/busybox")
    name = f"{htpasswd_registry.host}/auth/busybox"
    assert "401" in capsa.fails("pull", name) or "unauthorized" in capsa.fails("pull", name)
    assert "unauthorized" in capsa.fails("login", "-u", "capsa", "--password-stdin", htpasswd_registry.host,
                                         input="wrong\n")  # fmt: skip
    assert not os.path.exists(os.path.join(capsa.env["CAPSA_CONFIG"], "config.json"))
    capsa("login", "-u", "capsa", "--password-stdin", htpasswd_registry.host, input="s3cret\n")
    with open(os.path.join(capsa.env["CAPSA_CONFIG"], "config.json")) as f:
        saved = json.load(f)["auths"][htpasswd_registry.host]["auth"]
    assert base64.b64decode(saved) == b"capsa:s3cret"
    capsa("pull", "-q", name)
    assert capsa("logout", htpasswd_registry.host).stdout.startswith("Removing login credentials")
    capsa("rmi", name)
    capsa.fails("pull", name)


def test_token_auth_anonymous_and_with_credentials(capsa, token_registry, busybox_image):
    push(busybox_image, token_registry, "public/busybox")
    push(busybox_image, token_registry, "private/busybox")
    before = token_registry.token_requests
    capsa("pull", "-q", f"{token_registry.host}/public/busybox")
    assert token_registry.token_requests > before
    capsa.fails("pull", f"{token_registry.host}/private/busybox")
    capsa("login", "-u", "capsa", "-p", "s3cret", token_registry.host)
    capsa("pull", "-q", f"{token_registry.host}/private/busybox")


def test_tls_with_certs_d(capsa, tls_registry, busybox_image):
    push(busybox_image, tls_registry, "tls/busybox")
    name = f"{tls_registry.host}/tls/busybox"
    assert "certificate verify failed" in capsa.fails("pull", name)
    tls_registry.write_certs_d(capsa.env["CAPSA_CERTS_D"])
    capsa("pull", "-q", name)


def test_resume_from_an_interrupted_download(capsa, open_registry, work_dir):
    image = scratch_layout(work_dir / "resume", {"big": os.urandom(4 << 20)}, compression=None)
    push(image, open_registry, "pull/resume")
    layer = image.layer_digests[0]
    with open(open_registry.blob_path(layer), "rb") as f:
        head = f.read(1 << 20)
    ingest = os.path.join(capsa.root, "content", "ingest")
    os.makedirs(ingest)
    with open(os.path.join(ingest, layer.partition(":")[2]), "wb") as f:
        f.write(head)
    log_size = os.path.getsize(open_registry.log)
    capsa("pull", "-q", f"{open_registry.host}/pull/resume")
    with open(open_registry.log) as f:
        f.seek(log_size)
        written = [int(n) for n in re.findall(r"http\.response\.written=(\d+)", f.read())]
    total = os.path.getsize(open_registry.blob_path(layer))
    assert total - len(head) in written and total not in written, written


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_layers_are_refused(capsa, open_registry, work_dir, kind):
    image = hostile_layout(work_dir / kind, kind)
    push(image, open_registry, f"hostile/{kind}")
    before = stored_state(capsa)
    # Where each attack would land from <root>/snapshots/<dir>/.
    targets = [ABSOLUTE_PATH, "/tmp/escaped", os.path.join(capsa.root, "escape"),
               os.path.join(capsa.root, "outside"), os.path.join(capsa.root, "snapshots", "link")]  # fmt: skip
    error = capsa.fails("pull", f"{open_registry.host}/hostile/{kind}")
    assert "refusing layer entry" in error, error
    assert [t for t in targets if os.path.lexists(t)] == []
    after = stored_state(capsa)
    assert after[1:] == before[1:]  # no snapshot, no image (blobs: garbage, collected)
    capsa("image", "prune", "-f")
    assert os.listdir(os.path.join(capsa.root, "snapshots")) == []


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_a_damaged_blob_is_never_stored(capsa, fresh_registry, work_dir, damage):
    image = scratch_layout(work_dir / "damaged", {"data": os.urandom(1 << 20)})
    push(image, fresh_registry, "damaged/image")
    layer = image.layer_digests[0]
    path = fresh_registry.blob_path(layer)
    with open(path, "r+b") as f:
        if damage == "corrupt":
            f.seek(1000)
            f.write(b"\0" * 16)
        else:
            f.truncate(os.path.getsize(path) // 2)
    error = capsa.fails("pull", f"{fresh_registry.host}/damaged/image")
    assert layer in error, error
    assert not os.path.exists(os.path.join(capsa.root, "content", "blobs", "sha256", layer.partition(":")[2]))
    assert os.listdir(os.path.join(capsa.root, "snapshots")) == []
    assert capsa("images", "-q").stdout == ""


def test_bad_references_and_unknown_images(capsa):
    assert "invalid reference format" in capsa.fails("pull", "Busybox")
    assert "invalid reference format" in capsa.fails("pull", "busybox:bad tag")
    assert "invalid digest" in capsa.fails("pull", "busybox@sha256:1234")
    assert capsa.fails("rmi", "nothere") == "capsa: no such image: nothere"
    assert capsa.fails("image", "inspect", "nothere") == "capsa: no such image: nothere"
    assert "connection refused" in capsa.fails("pull", "127.0.0.1:1/x")
    assert "unrecognized arguments" in capsa.fails("images", "--bogus")
