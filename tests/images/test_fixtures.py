"""The image-test infrastructure checked against the peers only: every
builder's image pushed with skopeo comes back with the digest it was built
with; each registry kind lets in whom it should (skopeo as the client);
umoci unpacks the multilayer image the way its layers say; compare_trees
sees every kind of difference; and the registries listen on 127.0.0.1 only
and are gone once stopped.
"""

import base64
import gzip
import io
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tarfile

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from oci_images import (ABSOLUTE_PATH, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
                        FIXED_MTIME, HOSTILE, LAYER_TAR, LAYER_ZSTD, busybox_layout, host_platform,
                        hostile_layout, inspect, inspect_refused, multilayer_layout,
                        multiplatform_layout, platform_string, pull, pull_refused, push,
                        push_refused, scratch_layout, sha256_digest, skopeo)  # fmt: skip
from registries import start_registry
from token_server import ISSUER, SERVICE
from trees import compare_trees, umoci_unpack

pytestmark = pytest.mark.root


def _json(data: bytes) -> dict:
    return json.loads(data)


def _layer_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: member for member in tar.getmembers()}


# -- builders and the open registry ------------------------------------------

def test_busybox_pushes_with_its_digests(open_registry, busybox_image):
    assert push(busybox_image, open_registry, "capsa/busybox") == busybox_image.manifest_digest
    info = inspect(open_registry, "capsa/busybox:latest")
    assert info["Digest"] == busybox_image.manifest_digest
    assert info["Layers"] == busybox_image.layer_digests
    assert info["Architecture"] == host_platform()["architecture"]
    raw = inspect(open_registry, "capsa/busybox:latest", raw=True)
    assert sha256_digest(raw) == busybox_image.manifest_digest
    assert _json(raw)["config"]["digest"] == busybox_image.config_digest
    config = inspect(open_registry, "capsa/busybox:latest", config=True)
    assert config["rootfs"]["diff_ids"] == busybox_image.diff_ids
    assert config["config"]["Cmd"] == ["sh"]
    assert os.path.isfile(open_registry.blob_path(busybox_image.layer_digests[0]))


def test_busybox_rootfs_runs_a_shell(busybox_image, work_dir):
    rootfs = umoci_unpack(busybox_image.layout, "latest", work_dir / "bundle")
    assert os.readlink(os.path.join(rootfs, "bin/sh")) == "busybox"
    assert stat.S_IMODE(os.lstat(os.path.join(rootfs, "tmp")).st_mode) == 0o1777
    result = subprocess.run(["chroot", rootfs, "/bin/sh", "-c", "echo hi; id -u; ls /etc"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.stdout.split() == ["hi", "0", "group", "passwd"], result.stderr


def test_layouts_are_deterministic(work_dir):
    for build in (busybox_layout, multilayer_layout, multiplatform_layout):
        first = build(work_dir / "one" / build.__name__)
        second = build(work_dir / "two" / build.__name__)
        assert first.manifest_digest == second.manifest_digest, build.__name__


def test_multilayer_pushes_zstd_and_uncompressed_layers_as_built(open_registry, multilayer_image):
    image = multilayer_image
    assert push(image, open_registry, "capsa/multilayer") == image.manifest_digest
    manifest = _json(inspect(open_registry, "capsa/multilayer:latest", raw=True))
    assert [layer["mediaType"] for layer in manifest["layers"]] == image.layer_media_types
    assert {LAYER_ZSTD, LAYER_TAR} <= set(multilayer_image.layer_media_types)
    assert len(multilayer_image.layers) >= 4
    zstd = multilayer_image.layers[multilayer_image.layer_media_types.index(LAYER_ZSTD)]
    with open(open_registry.blob_path(zstd.digest), "rb") as f:
        assert f.read(4) == b"\x28\xb5\x2f\xfd"  # zstd's magic: skopeo did not recompress it


def test_multiplatform_index_pushes_every_manifest(open_registry, work_dir):
    index = multiplatform_layout(work_dir / "layout")
    assert push(index, open_registry, "capsa/multiplatform") == index.index_digest
    raw = inspect(open_registry, "capsa/multiplatform:latest", raw=True)
    assert sha256_digest(raw) == index.index_digest
    listed = _json(raw)["manifests"]
    assert [m["digest"] for m in listed] == index.manifest_digests
    platforms = [platform_string(m["platform"]) for m in listed]
    assert platforms[0] == platform_string(host_platform()) and "linux/arm/v7" in platforms
    assert len(set(platforms)) == 3
    for image in index.images:
        child = inspect(open_registry, f"capsa/multiplatform@{image.manifest_digest}", raw=True)
        assert sha256_digest(child) == image.manifest_digest
        with open(open_registry.blob_path(image.layer_digests[-1]), "rb") as f:
            marker = _layer_members(f.read())["platform"]
        assert marker.size == len(platform_string(image.platform)) + 1
    # Without a digest, skopeo resolves the tag to this machine's image.
    info = inspect(open_registry, "capsa/multiplatform:latest")
    assert info["Layers"] == index.for_platform(host_platform()).layer_digests


def test_busybox_pushes_as_docker_schema2(open_registry, busybox_image):
    digest = push(busybox_image, open_registry, "capsa/busybox-docker", docker=True)
    assert digest != busybox_image.manifest_digest
    raw = inspect(open_registry, "capsa/busybox-docker:latest", raw=True)
    manifest = _json(raw)
    assert sha256_digest(raw) == digest
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"] == {**manifest["config"], "mediaType": DOCKER_CONFIG,
                                  "digest": busybox_image.config_digest}  # fmt: skip
    assert [layer["digest"] for layer in manifest["layers"]] == busybox_image.layer_digests
    assert {layer["mediaType"] for layer in manifest["layers"]} == {DOCKER_LAYER_GZIP}


def test_docker_schema2_cannot_carry_zstd(open_registry, multilayer_image):
    assert "zstd" in push_refused(multilayer_image, open_registry, "capsa/zstd-docker", docker=True)


HOSTILE_MEMBERS = {
    "traversal": {"../../escape": tarfile.REGTYPE},
    "absolute": {ABSOLUTE_PATH: tarfile.REGTYPE},
    "symlink": {"evil": tarfile.SYMTYPE, "evil/tmp/escaped": tarfile.REGTYPE},
    "hardlink": {"link": tarfile.LNKTYPE},
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_layers_push_as_written(open_registry, work_dir, kind):
    image = hostile_layout(work_dir / "layout", kind)
    assert push(image, open_registry, f"hostile/{kind}") == image.manifest_digest
    with open(open_registry.blob_path(image.layer_digests[0]), "rb") as f:
        members = _layer_members(f.read())
    assert "hello" in members
    for name, kind_of_member in HOSTILE_MEMBERS[kind].items():
        assert members[name].type == kind_of_member
    if kind == "symlink":
        assert members["evil"].linkname == "/"
    if kind == "hardlink":
        assert members["link"].linkname == "../../outside"


def test_corrupted_blob_fails_the_pull(fresh_registry, work_dir):
    image = scratch_layout(work_dir / "layout", {"corrupt-me": str(work_dir).encode() * 64})
    push(image, fresh_registry, "capsa/corrupt")
    pull(fresh_registry, "capsa/corrupt:latest", work_dir / "intact")
    path = fresh_registry.blob_path(image.layer_digests[0])
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        f.seek(0)
        f.write(data)
    stderr = pull_refused(fresh_registry, "capsa/corrupt:latest", work_dir / "broken")
    assert "digest did not match" in stderr.lower()


# -- authentication ----------------------------------------------------------

def test_htpasswd_registry_needs_the_user(htpasswd_registry, busybox_image):
    registry = htpasswd_registry
    assert (registry.username, registry.password) == ("capsa", "s3cret")
    assert "authentication required" in push_refused(busybox_image, registry, "capsa/anonymous",
                                                     creds=False)  # fmt: skip
    assert push(busybox_image, registry, "capsa/busybox") == busybox_image.manifest_digest
    assert inspect(registry, "capsa/busybox:latest")["Digest"] == busybox_image.manifest_digest
    refused = inspect_refused(registry, "capsa/busybox:latest", creds=False)
    assert "authentication required" in refused
    wrong = skopeo("inspect", "--tls-verify=false", "--creds=capsa:wrong",
                   f"docker://{registry.host}/capsa/busybox:latest", check=False)  # fmt: skip
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()


def test_token_registry_lets_anyone_pull_public_and_the_user_push(token_registry, busybox_image):
    registry = token_registry
    before = registry.token_requests
    assert push(busybox_image, registry, "public/busybox") == busybox_image.manifest_digest
    assert push(busybox_image, registry, "private/busybox") == busybox_image.manifest_digest
    assert registry.token_requests > before
    anonymous = inspect(registry, "public/busybox:latest", creds=False)
    assert anonymous["Digest"] == busybox_image.manifest_digest
    assert "denied" in inspect_refused(registry, "private/busybox:latest", creds=False)
    assert "denied" in push_refused(busybox_image, registry, "public/anonymous", creds=False)
    answered = registry.token_server.requests[before:]
    assert {r.account for r in answered} == {"capsa", None}
    for request in answered:
        if request.account is None:
            assert all(grant["actions"] in ([], ["pull"]) for grant in request.granted)
            assert all(grant["name"].startswith("public/") for grant in request.granted
                       if grant["actions"])  # fmt: skip


def test_token_server_speaks_the_token_protocol(token_registry):
    server = token_registry.token_server
    before = token_registry.token_requests
    answer = httpx.get(server.realm, auth=("capsa", "s3cret"),
                       params={"service": SERVICE, "scope": ["repository:private/x:pull,push",
                                                             "registry:catalog:*"]})  # fmt: skip
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"]
    header = jwt.get_unverified_header(body["token"])
    signer = server.signing_key.cert
    assert header["alg"] == "RS256"
    der = signer.public_bytes(serialization.Encoding.DER)
    assert header["x5c"] == [base64.b64encode(der).decode()]
    claims = jwt.decode(body["token"], signer.public_key(), algorithms=["RS256"],
                        audience=SERVICE, issuer=ISSUER)  # fmt: skip
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= claims.keys()
    assert claims["sub"] == "capsa"
    assert claims["access"] == [
        {"type": "repository", "name": "private/x", "actions": ["pull", "push"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]}]
    catalog = httpx.get(f"{token_registry.url}/v2/_catalog",
                        headers={"Authorization": f"Bearer {body['token']}"})  # fmt: skip
    assert catalog.status_code == 200

    def access(scope: str, **kwargs) -> list:
        token = httpx.get(server.realm, params={"service": SERVICE, "scope": scope}, **kwargs)
        return jwt.decode(token.json()["token"], options={"verify_signature": False})["access"]

    assert access("repository:public/x:pull,push")[0]["actions"] == ["pull"]
    assert access("repository:private/x:pull")[0]["actions"] == []
    wrong = httpx.get(server.realm, auth=("capsa", "nope"),
                      params={"service": SERVICE, "scope": "repository:public/x:pull"})  # fmt: skip
    assert wrong.status_code == 401
    assert httpx.get(server.realm, params={"service": "elsewhere"}).status_code == 400
    oauth = httpx.post(server.realm, data={"grant_type": "password", "username": "capsa",
                                           "password": "s3cret", "service": SERVICE,
                                           "scope": "repository:a:pull repository:b:push",
                                           "client_id": "capsa-tests"})  # fmt: skip
    assert oauth.status_code == 200
    claims = jwt.decode(oauth.json()["access_token"], options={"verify_signature": False})
    assert [grant["name"] for grant in claims["access"]] == ["a", "b"]
    assert token_registry.token_requests == before + 6


def test_tls_registry_trusts_its_ca(tls_registry, busybox_image, work_dir):
    registry = tls_registry
    assert registry.url.startswith("https://") and registry.ca
    assert push(busybox_image, registry, "capsa/busybox") == busybox_image.manifest_digest
    certs_d = registry.write_certs_d(str(work_dir / "certs.d"))
    per_host = os.path.join(certs_d, registry.host)
    assert os.listdir(per_host) == ["ca.crt"]
    reference = f"docker://{registry.host}/capsa/busybox:latest"
    found = skopeo("inspect", f"--cert-dir={per_host}", reference)
    assert _json(found.stdout.encode())["Digest"] == busybox_image.manifest_digest
    empty = work_dir / "empty"
    empty.mkdir()
    untrusted = skopeo("inspect", f"--cert-dir={empty}", "--retry-times=0",
                       f"docker://{registry.host}/capsa/busybox:latest", check=False)  # fmt: skip
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
    port = registry.host.rsplit(":", 1)[1]
    trusting = ssl.create_default_context(cafile=registry.ca)
    assert httpx.get(f"https://localhost:{port}/v2/", verify=trusting).status_code == 200


# -- unpacking and comparing trees ---------------------------------------------

def _build_expected_data(root) -> None:
    """What the multilayer image's data/ and home/ must unpack to."""
    def write(path, data, mode=0o644, owner=(0, 0)):
        full = os.path.join(root, path)
        with open(full, "wb") as f:
            f.write(data)
        os.chown(full, *owner)  # before chmod: chown clears setuid
        os.chmod(full, mode)

    for path, mode in (("data", 0o755), ("data/opaque", 0o755), ("data/hard", 0o755),
                       ("data/private", 0o700), ("home", 0o755), ("home/user", 0o755)):
        os.makedirs(os.path.join(root, path))
        os.chmod(os.path.join(root, path), mode)
    write("data/keep", b"kept\n")
    write("data/replaced", b"new content\n")
    write("data/opaque/new", b"new\n")
    write("data/hard/one", b"linked\n")
    os.link(os.path.join(root, "data/hard/one"), os.path.join(root, "data/hard/two"))
    write("data/xattr", b"has an xattr\n")
    os.setxattr(os.path.join(root, "data/xattr"), "user.capsa", b"yes")
    write("data/setuid", b"setuid\n", 0o4755)
    os.mkfifo(os.path.join(root, "data/fifo"), 0o600)
    os.chmod(os.path.join(root, "data/fifo"), 0o600)
    os.symlink("keep", os.path.join(root, "data/link"))
    os.symlink("/data/keep", os.path.join(root, "data/abslink"))
    write("home/user/owned", b"mine\n", 0o640, (1000, 1000))
    os.chown(os.path.join(root, "home/user"), 1000, 1000)
    for directory, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames + ["."]:
            path = os.path.join(directory, name)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


def test_umoci_unpacks_multilayer_as_its_layers_say(multilayer_image, work_dir):
    rootfs = umoci_unpack(multilayer_image.layout, "gzip", work_dir / "bundle")
    data = os.path.join(rootfs, "data")
    assert not os.path.lexists(os.path.join(data, "gone"))
    assert not os.path.lexists(os.path.join(data, "dir"))
    assert os.listdir(os.path.join(data, "opaque")) == ["new"]
    assert os.listdir(os.path.join(data, "private")) == []
    assert os.getxattr(os.path.join(data, "xattr"), "user.capsa") == b"yes"
    one, two = (os.stat(os.path.join(data, "hard", name)) for name in ("one", "two"))
    assert one.st_ino == two.st_ino
    owned = os.stat(os.path.join(rootfs, "home/user/owned"))
    assert (owned.st_uid, owned.st_gid) == (1000, 1000)
    for directory, dirnames, filenames in os.walk(rootfs):
        assert not [name for name in dirnames + filenames if name.startswith(".wh.")], directory
    expected = work_dir / "expected"
    _build_expected_data(expected)
    for top in ("data", "home"):
        assert compare_trees(os.path.join(rootfs, top), expected / top) == []


def test_umoci_unpacks_the_same_tree_twice(busybox_image, work_dir):
    first = umoci_unpack(busybox_image.layout, "latest", work_dir / "one")
    second = umoci_unpack(busybox_image.layout, "latest", work_dir / "two")
    assert compare_trees(first, second) == []


def test_compare_trees_sees_every_difference(work_dir):
    a = work_dir / "a"
    (a / "dir").mkdir(parents=True)
    for name in ("mode", "owner", "content", "xattr", "mtime", "linked", "gone", "kind"):
        (a / name).write_bytes(b"same size\n")
    os.link(a / "linked", a / "linked2")
    os.symlink("mode", a / "link")
    os.mknod(a / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(a / "fifo")
    os.setxattr(a / "xattr", "user.capsa", b"one")
    b = work_dir / "b"
    subprocess.run(["cp", "-a", str(a), str(b)], check=True)
    assert compare_trees(a, b) == []

    os.chmod(b / "mode", 0o4755)
    os.chown(b / "owner", 1000, 1000)
    (b / "content").write_bytes(b"same SIZE\n")
    os.setxattr(b / "xattr", "user.capsa", b"two")
    os.utime(b / "mtime", (FIXED_MTIME, FIXED_MTIME))
    os.unlink(b / "linked2")
    shutil.copy2(b / "linked", b / "linked2")
    os.unlink(b / "link")
    os.symlink("owner", b / "link")
    os.unlink(b / "device")
    os.mknod(b / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    os.unlink(b / "gone")
    (b / "new").write_bytes(b"")
    os.unlink(b / "kind")
    (b / "kind").mkdir()
    os.setxattr(b / "dir", "trusted.overlay.opaque", b"y")  # the storage's, not the image's
    for directory, dirnames, filenames in os.walk(b):  # only "mtime" is to differ in time
        for name in dirnames + filenames + ["."]:
            path = os.path.join(directory, name)
            twin = os.path.join(a, os.path.relpath(path, b))
            if os.path.lexists(twin):
                os.utime(path, ns=(0, os.lstat(twin).st_mtime_ns), follow_symlinks=False)
    os.utime(b / "mtime", (FIXED_MTIME, FIXED_MTIME))

    found = compare_trees(a, b)
    expected = ["mode: mode '0o644' != '0o4755'", "owner: owner '0:0' != '1000:1000'",
                "content: sha256", "xattr: xattrs", "mtime: mtime",
                "link: target 'mode' != 'owner'", "device: device '1:3' != '1:5'",
                f"gone: only in {a}", f"new: only in {b}", "kind: type 'file' != 'directory'",
                "linked, linked2: one inode in"]  # fmt: skip
    for line in expected:
        assert [f for f in found if f.startswith(line)], (line, found)
    assert not [f for f in found if f.startswith("dir:")], found
    assert len(found) == len(expected), found
    everything = {"mode", "owner", "sha256", "size", "xattrs", "mtime", "target", "device", "type",
                  "hardlinks"}  # fmt: skip
    assert compare_trees(a, b, ignore=everything, ignore_paths={"gone", "new"}) == []


# -- processes and sockets -------------------------------------------------------

def _listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (local address as /proc/net/tcp* write it, port) of
    every TCP socket listening on this machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] == "0A":
                    found[int(fields[9])] = (address, int(port, 16))
    return found


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[len("socket:["):-1]))
    return found


LOOPBACK = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def test_everything_listens_on_loopback_only(open_registry, htpasswd_registry, token_registry,
                                             tls_registry):  # fmt: skip
    listening = _listening()
    for registry in (open_registry, htpasswd_registry, token_registry, tls_registry):
        sockets = [listening[inode] for inode in _socket_inodes(registry.pid) if inode in listening]
        assert sockets == [(LOOPBACK, registry.port)], registry.kind
    token_port = token_registry.token_server.port
    assert [address for address, port in listening.values() if port == token_port] == [LOOPBACK]


def test_a_stopped_registry_is_gone(images_session):
    registry = start_registry("open", os.path.join(images_session, "stopped"))
    pid, port = registry.pid, registry.port
    registry.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert port not in {listened for _, listened in _listening().values()}
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    shutil.rmtree(registry.dir)
