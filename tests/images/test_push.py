"""`capsa push` to real registries: skopeo sees exactly the manifest and
blobs capsa holds, blobs the registry has are not sent again, blobs in a
repository the image came from are mounted across, and pushing needs the
registry's credentials."""

import json
import os

import pytest

from oci_images import inspect, pull, push, sha256_digest

pytestmark = pytest.mark.root


def test_push_then_skopeo_reads_the_same_digests(capsa, open_registry, multilayer_image, work_dir):
    push(multilayer_image, open_registry, "push/source")
    capsa("pull", "-q", f"{open_registry.host}/push/source")
    capsa("tag", f"{open_registry.host}/push/source", f"{open_registry.host}/push/copy:v1")
    out = capsa("push", f"{open_registry.host}/push/copy:v1").stdout
    assert f"The push refers to repository [{open_registry.host}/push/copy]" in out
    assert out.count("Mounted from push/source") == len(multilayer_image.layers) + 1  # and the config
    assert f"v1: digest: {multilayer_image.manifest_digest}" in out
    info = inspect(open_registry, "push/copy:v1")
    assert info["Digest"] == multilayer_image.manifest_digest
    assert sha256_digest(inspect(open_registry, "push/copy:v1", raw=True)) == multilayer_image.manifest_digest
    pull(open_registry, "push/copy:v1", work_dir / "back", "v1")
    with open(work_dir / "back" / "index.json") as f:
        assert json.load(f)["manifests"][0]["digest"] == multilayer_image.manifest_digest
    again = capsa("push", f"{open_registry.host}/push/copy:v1").stdout
    assert again.count("Layer already exists") == len(multilayer_image.layers) + 1


def test_push_uploads_what_the_registry_lacks(capsa, fresh_registry, open_registry, busybox_image):
    push(busybox_image, open_registry, "push/busybox")
    capsa("pull", "-q", f"{open_registry.host}/push/busybox")
    capsa("tag", f"{open_registry.host}/push/busybox", f"{fresh_registry.host}/elsewhere/busybox")
    out = capsa("push", f"{fresh_registry.host}/elsewhere/busybox").stdout
    assert out.count("Pushed") == 2, out
    assert inspect(fresh_registry, "elsewhere/busybox:latest")["Digest"] == busybox_image.manifest_digest
    digests = json.loads(capsa("image", "inspect", f"{fresh_registry.host}/elsewhere/busybox").stdout)[0]
    assert f"{fresh_registry.host}/elsewhere/busybox@{busybox_image.manifest_digest}" in digests["RepoDigests"]


def test_push_needs_credentials(capsa, htpasswd_registry, token_registry, open_registry, busybox_image):
    push(busybox_image, open_registry, "push/auth")
    capsa("pull", "-q", f"{open_registry.host}/push/auth")
    for registry in (htpasswd_registry, token_registry):
        name = f"{registry.host}/private/pushed"
        capsa("tag", f"{open_registry.host}/push/auth", name)
        capsa.fails("push", name)
        capsa("login", "-u", "capsa", "--password-stdin", registry.host, input="s3cret\n")
        capsa("push", "-q", name)
        assert inspect(registry, "private/pushed:latest")["Digest"] == busybox_image.manifest_digest


def test_push_refuses_unknown_images_and_digests(capsa, open_registry):
    assert "does not exist locally" in capsa.fails("push", f"{open_registry.host}/push/absent")
    capsa("import", "-", f"{open_registry.host}/push/empty", input="")
    assert "push a tag" in capsa.fails("push", f"{open_registry.host}/push/empty@sha256:" + "a" * 64)
    assert os.path.isdir(capsa.root)
