"""The image store's pieces that need no registry: digests and chain IDs,
manifest parsing and platform choice, the content store, the metadata
records and garbage collection."""

import hashlib
import os

import pytest

from capsa.errors import InvalidArgument, NotFound, Unsupported
from capsa.fastjson import dumps
from capsa.images import digest as digests
from capsa.images import gc, mediatypes
from capsa.images import manifest as manifests
from capsa.images.content import ContentStore
from capsa.images.store import Image, ImageStore


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- digests


def test_digest_validation():
    assert digests.validate(sha(b"x")) == sha(b"x")
    for bad in ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "sha256:" + "A" * 64, "", "sha256"]:
        with pytest.raises(InvalidArgument):
            digests.validate(bad)


def test_chain_ids_follow_the_image_spec():
    a, b, c = sha(b"a"), sha(b"b"), sha(b"c")
    ab = sha(f"{a} {b}".encode())
    assert digests.chain_ids([a, b, c]) == [a, ab, sha(f"{ab} {c}".encode())]
    assert digests.chain_ids([]) == []


# -- manifests and platforms


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data), **extra}


def test_platform_selection_prefers_exact_and_defaults_arm64_variant():
    amd64 = descriptor(mediatypes.OCI_MANIFEST, b"1", platform={"os": "linux", "architecture": "amd64"})
    arm64 = descriptor(mediatypes.OCI_MANIFEST, b"2", platform={"os": "linux", "architecture": "arm64"})
    armv7 = descriptor(mediatypes.OCI_MANIFEST, b"3",
                       platform={"os": "linux", "architecture": "arm", "variant": "v7"})  # fmt: skip
    index = manifests.parse_index(dumps({"schemaVersion": 2, "manifests": [amd64, arm64, armv7]}).encode(), "i")
    pick = lambda p: manifests.select(index, manifests.parse_platform(p), "x").digest  # noqa: E731
    assert pick("linux/amd64") == sha(b"1")
    assert pick("linux/arm64/v8") == sha(b"2")
    assert pick("linux/arm/v7") == sha(b"3")
    with pytest.raises(NotFound, match="no manifest for platform linux/arm/v6"):
        pick("linux/arm/v6")
    with pytest.raises(InvalidArgument):
        manifests.parse_platform("linux")


def test_manifest_and_config_are_checked():
    config = dumps({"architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [sha(b"l")]}}).encode()  # fmt: skip
    body = dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                  "config": descriptor(mediatypes.OCI_CONFIG, config),
                  "layers": [descriptor(mediatypes.OCI_LAYER_GZIP, b"l")]}).encode()  # fmt: skip
    parsed = manifests.parse_manifest(body, "m")
    assert parsed.config.digest == sha(config) and len(parsed.layers) == 1
    assert manifests.parse_config(config, "c").diff_ids == [sha(b"l")]
    for broken in [b"{", b"[]", dumps({"layers": [{"mediaType": "x", "digest": "sha256:1", "size": 1}]}).encode(),
                   dumps({"layers": [{"mediaType": "x", "digest": sha(b"x"), "size": -1}]}).encode()]:  # fmt: skip
        with pytest.raises(InvalidArgument):
            manifests.parse_manifest(broken, "m")
    with pytest.raises(InvalidArgument, match="diff_ids"):
        manifests.parse_config(b'{"rootfs": {"type": "layers"}}', "c")
    with pytest.raises(Unsupported, match="schema 1"):
        manifests.media_type_of(b'{"schemaVersion": 1, "fsLayers": []}', "", "m")


# -- the content store


def test_content_store_verifies_before_storing(tmp_path):
    store = ContentStore(str(tmp_path))
    digest = store.put(b"hello")
    assert store.read(digest) == b"hello" and store.size(digest) == 5
    with pytest.raises(InvalidArgument, match="failed verification"):
        store.put(b"evil", expected=sha(b"good"))
    assert not store.has(sha(b"good"))
    with pytest.raises(NotFound):
        store.read(sha(b"absent"))


def test_content_ingest_resumes_from_partial(tmp_path):
    store = ContentStore(str(tmp_path))
    data = os.urandom(3 << 20)
    digest = sha(data)
    with store.ingest(digest, len(data)) as ingest:
        ingest.write(data[:1000])  # interrupted here
    with store.ingest(digest, len(data)) as ingest:
        assert ingest.offset == 1000
        ingest.write(data[1000:])
        ingest.commit()
    assert store.read(digest) == data
    assert os.listdir(store.ingests) == []


def test_content_ingest_refuses_wrong_size_and_digest(tmp_path):
    store = ContentStore(str(tmp_path))
    digest = sha(b"abc")
    with store.ingest(digest, 3) as ingest:
        with pytest.raises(InvalidArgument, match="longer"):
            ingest.write(b"abcd")
    with store.ingest(digest, 3) as ingest:
        ingest.write(b"abd")
        with pytest.raises(InvalidArgument, match="failed verification"):
            ingest.commit()
    assert not store.has(digest)


# -- records and garbage collection


def add_image(store: ImageStore, config: bytes, names: list[tuple[str, str]]) -> Image:
    image_id = store.content.put(config)
    manifest = store.content.put(config + b"-manifest")
    image = Image(id=image_id, manifest=manifest, manifest_type=mediatypes.OCI_MANIFEST, platform="linux/amd64",
                  chain=None, size=0, created="", added=0)  # fmt: skip
    store.add(image, [image_id, manifest], names)
    return store.get(image_id)


def test_lookup_by_name_id_and_prefix(tmp_path):
    store = ImageStore(str(tmp_path))
    image = add_image(store, b"one", [("docker.io/library/busybox:latest", "tag")])
    assert store.lookup("busybox").id == image.id
    assert store.lookup("docker.io/library/busybox:latest").id == image.id
    assert store.lookup(image.id).id == image.id
    assert store.lookup(image.short_id).id == image.id
    with pytest.raises(NotFound, match="no such image: alpine"):
        store.lookup("alpine")


def test_a_tag_moves_and_leaves_the_old_image_dangling(tmp_path):
    store = ImageStore(str(tmp_path))
    old = add_image(store, b"old", [("docker.io/library/app:1", "tag")])
    new = add_image(store, b"new", [("docker.io/library/app:1", "tag")])
    assert store.get(old.id).tags == [] and store.get(new.id).tags == ["docker.io/library/app:1"]


def test_gc_removes_only_unneeded_blobs(tmp_path):
    store = ImageStore(str(tmp_path))
    kept = add_image(store, b"kept", [("docker.io/library/a:1", "tag")])
    gone = add_image(store, b"gone", [("docker.io/library/b:1", "tag")])
    stray = store.content.put(b"stray")
    store.delete(gone.id)
    with store.lock():
        freed = gc.collect(store)
    assert freed.blobs == 3
    assert store.content.has(kept.id) and store.content.has(kept.manifest)
    assert not store.content.has(gone.id) and not store.content.has(stray)
    assert store.list()[0].id == kept.id
