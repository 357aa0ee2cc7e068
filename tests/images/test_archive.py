"""`capsa import`, `capsa save` and `capsa load` as root, against stores
under tmp_path: a tree with every kind of file goes in by import_rootfs,
out through both archive formats and back into a fresh store unchanged;
skopeo and podman read what capsa writes and capsa reads what they write;
hostile and broken archives are refused with one line and record nothing.

Self-contained: no fixture of this directory's conftest is used.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading

import pytest
import zstandard

from capsa.errors import InvalidArgument, NotFound
from capsa.images import archive, importer, reference
from capsa.images.manifest import Platform, host
from capsa.images.store import ImageStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, devices)")

TOOL_TIMEOUT = 120
NAME = "docker.io/capsa-test/tree:1"
FIXED_MTIME = 1704067200
# Keep skopeo away from credentials stored on this machine.
AUTH_FILE = "/nonexistent/capsa-tests/auth.json"


# -- helpers


def make_tree(root) -> str:
    """A small rootfs: a file, a symlink, a hardlink, a fifo, a device, a
    file of uid 1000 with an xattr, a setuid file, an empty directory."""
    root = str(root)
    for directory in ("bin", "etc", "home/user", "dev", "empty"):
        os.makedirs(os.path.join(root, directory))
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    os.chmod(os.path.join(root, "bin/busybox"), 0o4755)
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    os.link(os.path.join(root, "etc/passwd"), os.path.join(root, "etc/passwd-"))
    os.symlink("busybox", os.path.join(root, "bin/sh"))
    os.mkfifo(os.path.join(root, "dev/fifo"))
    os.mknod(os.path.join(root, "dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    owned = os.path.join(root, "home/user/notes")
    with open(owned, "w") as f:
        f.write("mine\n")
    os.chown(owned, 1000, 1000)
    os.chown(os.path.join(root, "home/user"), 1000, 1000)
    os.setxattr(owned, "user.capsa", b"\x00binary\xff")
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + [""]:
            os.utime(os.path.join(directory, name), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    return root


def describe_tree(root: str) -> dict:
    """Relative path -> what a layer must keep of it (and hardlink groups)."""
    found, inodes = {}, {}
    for directory, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = {"mode": oct(st.st_mode), "owner": (st.st_uid, st.st_gid), "mtime": int(st.st_mtime)}
            if stat.S_ISREG(st.st_mode):
                entry["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
                del entry["mode"]
            elif stat.S_ISCHR(st.st_mode):
                entry["device"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            keys = [key for key in os.listxattr(path, follow_symlinks=False) if key.startswith("user.")]
            entry["xattrs"] = {key: os.getxattr(path, key, follow_symlinks=False) for key in keys}
            found[rel] = entry
    found["hardlinks"] = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    return found


def snapshot_of(store: ImageStore, image) -> str:
    [top] = store.snapshots.lowerdirs(image.chain)  # one layer
    return top


def config_of(store: ImageStore, image) -> dict:
    return json.loads(store.content.read(image.id))


def manifest_of(store: ImageStore, image) -> dict:
    return json.loads(store.content.read(image.manifest))


def names_in(store: ImageStore) -> set[str]:
    return {row[0] for row in store.conn.execute("SELECT name FROM image_names")}


def save_to(store: ImageStore, names: list[str], path, fmt: str) -> str:
    with open(path, "wb") as out:
        archive.save(store, names, out, fmt)
    return str(path)


def load_from(store: ImageStore, path) -> list[str]:
    with open(path, "rb") as source:
        return archive.load(store, source)


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("text", True)
    result = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stderr!s}")
    return result


def gnu_tar(tree: str) -> bytes:
    """`tar -c .` of TREE, user.* xattrs included (GNU tar's pax records)."""
    return run("tar", "--xattrs", "--xattrs-include=user.*", "-C", tree, "-c", ".", text=False).stdout


def skopeo(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    return run("skopeo", "--insecure-policy", *args)


def write_tar(path, members: dict, links: dict = ()) -> str:
    """A tar of MEMBERS (name -> bytes) and symlinks LINKS (name -> target)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return str(path)


def layer_tar(files: dict) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def docker_archive_members(layer: bytes, diff_id: str | None = None, layer_path: str = "l1/layer.tar") -> dict:
    diff_ids = [diff_id or "sha256:" + hashlib.sha256(layer).hexdigest()]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()  # fmt: skip
    manifest = [{"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": [layer_path]}]
    return {"manifest.json": json.dumps(manifest).encode(), "config.json": config, "l1/layer.tar": layer}


# -- fixtures


@pytest.fixture
def store(tmp_path):
    store = ImageStore(str(tmp_path / "root"))
    yield store
    store.close()


@pytest.fixture
def fresh(tmp_path):
    store = ImageStore(str(tmp_path / "fresh"))
    yield store
    store.close()


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


@pytest.fixture
def image(store, tree):
    return importer.import_rootfs(store, tree, reference.parse(NAME), host(), "a test tree",
                                  ['CMD ["/bin/sh"]', "ENV PATH=/bin", "WORKDIR /home/user", "USER 1000"])  # fmt: skip


# -- import


def test_import_keeps_every_kind_of_file(store, tree, image):
    assert image.tags == [NAME]
    assert describe_tree(snapshot_of(store, image)) == describe_tree(tree)
    config = config_of(store, image)
    assert config["config"] == {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/home/user", "User": "1000"}
    assert config["history"][0]["created_by"] == "capsa import"
    assert config["history"][0]["comment"] == "a test tree"
    assert (config["os"], config["architecture"]) == (host().os, host().architecture)
    manifest = manifest_of(store, image)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert hashlib.sha256(gzip.decompress(store.content.read(layer["digest"]))).hexdigest() == \
        config["rootfs"]["diff_ids"][0].partition(":")[2]  # fmt: skip


def test_the_same_tree_gives_the_same_layer(store, tree, image):
    again = importer.import_rootfs(store, tree, None, host())
    assert again.tags == [] and again.id != image.id  # "created" differs
    assert config_of(store, again)["rootfs"] == config_of(store, image)["rootfs"]
    assert manifest_of(store, again)["layers"] == manifest_of(store, image)["layers"]


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_import_a_tarball_as_the_layer(store, tree, tmp_path, compression):
    plain = gnu_tar(tree)
    data = {None: lambda d: d, "gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}[compression](plain)
    path = tmp_path / "rootfs.tar"
    path.write_bytes(data)
    image = importer.import_rootfs(store, str(path), reference.parse("tarball"), Platform("linux", "arm64", "v8"))
    assert image.tags == ["docker.io/library/tarball:latest"]
    assert image.platform == "linux/arm64/v8"
    assert config_of(store, image)["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(plain).hexdigest()]
    assert describe_tree(snapshot_of(store, image)) == describe_tree(tree)


def test_import_from_stdin(store, tree, monkeypatch):
    plain = gnu_tar(tree)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, gzip.compress(plain)), os.close(write_end)))
    writer.start()
    with open(read_end, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stdin))
        image = importer.import_rootfs(store, "-", None, host(), changes=["ENTRYPOINT /bin/sh"])
    writer.join()
    assert config_of(store, image)["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(plain).hexdigest()]
    assert config_of(store, image)["config"] == {"Entrypoint": ["/bin/sh", "-c", "/bin/sh"]}


def test_import_refusals_change_nothing(store, tree, tmp_path):
    not_a_tar = tmp_path / "not-a-tar"
    not_a_tar.write_bytes(b"this is not a tar archive\n" * 100)
    for source, changes, error, why in [
        (tree, ["RUN rm -rf /"], InvalidArgument, "RUN is not a valid change command"),
        (str(tmp_path / "missing"), [], NotFound, "no such file or directory"),
        (str(not_a_tar), [], InvalidArgument, f"failed to import {not_a_tar}: "),
    ]:
        with pytest.raises(error, match=why) as err:
            importer.import_rootfs(store, source, reference.parse("x:1"), host(), changes=changes)
        assert "\n" not in str(err.value)
    assert store.list() == [] and names_in(store) == set()


# -- save and load


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_round_trip_into_a_fresh_store(store, fresh, image, tmp_path, fmt):
    path = save_to(store, [NAME], tmp_path / "image.tar", fmt)
    assert load_from(fresh, path) == [NAME]
    [loaded] = fresh.list()
    assert loaded.id == image.id and loaded.tags == [NAME]
    assert describe_tree(snapshot_of(fresh, loaded)) == describe_tree(snapshot_of(store, image))
    assert config_of(fresh, loaded) == config_of(store, image)
    if fmt == archive.OCI_ARCHIVE:  # blobs as stored: every digest survives
        assert loaded.manifest == image.manifest
    else:  # a Docker schema 2 manifest of gzip layers, the same every time
        manifest = manifest_of(fresh, loaded)
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert manifest["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        again = ImageStore(str(tmp_path / "again"))
        load_from(again, path)
        assert again.list()[0].manifest == loaded.manifest
        again.close()
    assert load_from(fresh, path) == [NAME]  # loading twice changes nothing
    assert [i.id for i in fresh.list()] == [image.id]


def test_docker_archive_layout(store, image, tmp_path):
    path = save_to(store, [NAME], tmp_path / "image.tar", archive.DOCKER_ARCHIVE)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        repositories = json.load(tar.extractfile("repositories"))
        [entry] = manifest
        layer = tar.extractfile(entry["Layers"][0]).read()
        config = tar.extractfile(entry["Config"]).read()
    assert names[:2] == ["manifest.json", "repositories"]  # metadata first
    assert entry["RepoTags"] == [NAME] and entry["Config"] == image.id.partition(":")[2] + ".json"
    assert config == store.content.read(image.id)
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == config_of(store, image)["rootfs"]["diff_ids"][0]
    assert repositories == {"docker.io/capsa-test/tree": {"1": entry["Layers"][0].partition("/")[0]}}
    again = save_to(store, [NAME], tmp_path / "again.tar", archive.DOCKER_ARCHIVE)
    assert open(again, "rb").read() == open(path, "rb").read()  # reproducible


def test_oci_archive_layout(store, image, tmp_path):
    path = save_to(store, [NAME], tmp_path / "image.tar", archive.OCI_ARCHIVE)
    with tarfile.open(path) as tar:
        index = json.load(tar.extractfile("index.json"))
        layout = json.load(tar.extractfile("oci-layout"))
        blobs = {name.rpartition("/")[2] for name in tar.getnames() if name.startswith("blobs/sha256/")}
    assert layout == {"imageLayoutVersion": "1.0.0"}
    [desc] = index["manifests"]
    assert desc["digest"] == image.manifest
    assert desc["annotations"] == {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "1"}
    manifest = manifest_of(store, image)
    wanted = [image.manifest, manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    assert blobs == {digest.partition(":")[2] for digest in wanted}


def test_save_by_repository_id_and_untagged(store, image, tree, tmp_path, fresh):
    store.tag(image, "docker.io/capsa-test/tree:2")
    dangling = importer.import_rootfs(store, tree, None, host(), changes=["CMD other"])
    path = save_to(store, ["capsa-test/tree", dangling.id[7:19]], tmp_path / "two.tar", archive.DOCKER_ARCHIVE)
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert [entry["RepoTags"] for entry in manifest] == [[NAME, "docker.io/capsa-test/tree:2"], None]
    assert manifest[0]["Layers"] == manifest[1]["Layers"]  # one layer, stored once
    assert sum(name.endswith("layer.tar") for name in tarfile.open(path).getnames()) == 1
    assert sorted(load_from(fresh, path)) == sorted([NAME, "docker.io/capsa-test/tree:2", dangling.id])
    assert {i.id for i in fresh.list()} == {image.id, dangling.id}


def test_save_an_unknown_name_writes_nothing(store, image):
    out = io.BytesIO()
    with pytest.raises(NotFound, match="no such image: nothing:here"):
        archive.save(store, [NAME, "nothing:here"], out, archive.OCI_ARCHIVE)
    assert out.getvalue() == b""
    with pytest.raises(InvalidArgument, match="unknown archive format"):
        archive.save(store, [NAME], out, "tarball")


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_save_through_a_pipe_into_load(store, fresh, image, fmt):
    """Neither side can seek: save streams, load spools."""
    read_end, write_end = os.pipe()
    failures = []

    def save_into_pipe():
        with open(write_end, "wb") as out:
            try:
                archive.save(store, [NAME], out, fmt)
            except BaseException as err:  # noqa: BLE001 - reported by the test
                failures.append(err)

    writer = threading.Thread(target=save_into_pipe)
    writer.start()
    with open(read_end, "rb") as source:
        assert archive.load(fresh, source) == [NAME]
    writer.join()
    assert failures == [] and fresh.list()[0].id == image.id
    assert os.listdir(fresh.content.ingests) == []


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.ZstdCompressor().compress], ids=["gzip", "zstd"])
def test_load_a_compressed_archive(store, fresh, image, tmp_path, compress):
    path = save_to(store, [NAME], tmp_path / "image.tar", archive.DOCKER_ARCHIVE)
    compressed = tmp_path / "image.tar.z"
    compressed.write_bytes(compress(open(path, "rb").read()))
    assert load_from(fresh, compressed) == [NAME]


# -- interoperability


def test_skopeo_reads_our_oci_archive(store, image, tmp_path):
    path = save_to(store, [NAME], tmp_path / "image.tar", archive.OCI_ARCHIVE)
    inspected = json.loads(skopeo("inspect", f"oci-archive:{path}").stdout)
    assert inspected["Digest"] == image.manifest
    assert inspected["Layers"] == [layer["digest"] for layer in manifest_of(store, image)["layers"]]
    skopeo("copy", f"oci-archive:{path}", f"oci:{tmp_path / 'layout'}:copied")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.manifest]
    assert (tmp_path / "layout" / "blobs" / "sha256" / image.id.partition(":")[2]).exists()


def test_skopeo_reads_our_docker_archive(store, image, tmp_path):
    path = save_to(store, [NAME], tmp_path / "image.tar", archive.DOCKER_ARCHIVE)
    inspected = json.loads(skopeo("inspect", f"docker-archive:{path}").stdout)
    assert inspected["Layers"] == config_of(store, image)["rootfs"]["diff_ids"]  # layers stored uncompressed
    skopeo("copy", f"docker-archive:{path}", f"oci:{tmp_path / 'layout'}:copied")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    manifest = json.loads((tmp_path / "layout/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((tmp_path / "layout/blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["rootfs"] == config_of(store, image)["rootfs"]  # the layers read back byte for byte


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_load_what_skopeo_writes(store, fresh, image, tmp_path, fmt):
    layout = tmp_path / "layout"
    skopeo("copy", f"oci-archive:{save_to(store, [NAME], tmp_path / 'ours.tar', archive.OCI_ARCHIVE)}",
           f"oci:{layout}:src")  # fmt: skip
    theirs = tmp_path / "theirs.tar"
    skopeo("copy", f"oci:{layout}:src", f"{fmt}:{theirs}:localhost:5000/from/skopeo:v1")
    assert load_from(fresh, theirs) == ["localhost:5000/from/skopeo:v1"]
    [loaded] = fresh.list()
    assert loaded.id == image.id
    if fmt == archive.OCI_ARCHIVE:
        assert loaded.manifest == image.manifest
    assert describe_tree(snapshot_of(fresh, loaded)) == describe_tree(snapshot_of(store, image))


def test_load_a_skopeo_oci_archive_without_a_name(store, fresh, image, tmp_path):
    layout = tmp_path / "layout"
    skopeo("copy", f"oci-archive:{save_to(store, [NAME], tmp_path / 'ours.tar', archive.OCI_ARCHIVE)}",
           f"oci:{layout}:latest")  # fmt: skip
    unnamed = tmp_path / "unnamed.tar"
    skopeo("copy", f"oci:{layout}:latest", f"oci-archive:{unnamed}")
    assert load_from(fresh, unnamed) == [image.id]
    assert fresh.list()[0].tags == []


class Podman:
    """podman with its own storage (vfs: nothing to unmount), locks and
    configuration under BASE; reset() removes all it stored. It runs in
    BASE with the run root given relative to it: podman refuses a run root
    longer than 50 characters, and pytest's tmp_path is longer."""

    def __init__(self, base):
        self.base = str(base)
        self.root, self.runroot, self.tmp = os.path.join(self.base, "root"), "run", os.path.join(self.base, "tmp")
        for path in (self.root, os.path.join(self.base, self.runroot), self.tmp):
            os.makedirs(path)
        self._write("containers.conf", f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n'
                                       f'tmp_dir = "{self.tmp}"\nlock_type = "file"\n')  # fmt: skip
        self._write("storage.conf", f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\n'
                                    f'runroot = "{self.runroot}"\n')  # fmt: skip
        self._write("registries.conf", "unqualified-search-registries = []\n")
        self.env = dict(os.environ, CONTAINERS_CONF=os.path.join(self.base, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(self.base, "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=os.path.join(self.base, "registries.conf"))  # fmt: skip

    def _write(self, name: str, text: str) -> None:
        with open(os.path.join(self.base, name), "w") as f:
            f.write(text)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return run(*self.argv(*args), env=self.env, cwd=self.base)

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", self.root, "--runroot", self.runroot, "--tmpdir", self.tmp,
                "--storage-driver", "vfs", *args]  # fmt: skip

    def reset(self) -> None:
        subprocess.run(self.argv("system", "reset", "--force"), env=self.env, cwd=self.base, capture_output=True,
                       timeout=TOOL_TIMEOUT)  # fmt: skip
        overlay = os.path.join(self.root, "overlay")
        if os.path.ismount(overlay):
            subprocess.run(["umount", overlay], check=False)


@pytest.fixture
def podman(tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    podman = Podman(tmp_path / "podman")
    yield podman
    podman.reset()


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_load_what_podman_saves(podman, fresh, tree, tmp_path, fmt):
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(gnu_tar(tree))
    podman_id = podman("import", "-q", str(rootfs), "localhost/from/podman:1").stdout.strip()
    saved = tmp_path / "podman.tar"
    podman("save", "-q", "--format", fmt, "-o", str(saved), "localhost/from/podman:1")
    assert load_from(fresh, saved) == ["localhost/from/podman:1"]
    [loaded] = fresh.list()
    assert loaded.id == "sha256:" + podman_id.removeprefix("sha256:")
    assert describe_tree(snapshot_of(fresh, loaded)) == describe_tree(tree)


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_podman_loads_what_we_save(podman, store, image, tmp_path, fmt):
    path = save_to(store, [NAME], tmp_path / "image.tar", fmt)
    podman("load", "-q", "-i", path)
    inspected = json.loads(podman("image", "inspect", NAME).stdout)[0]
    assert inspected["Id"] == image.id.partition(":")[2]
    assert inspected["RepoTags"] == [NAME]


# -- broken and hostile archives


def assert_refused(store: ImageStore, path, why: str) -> None:
    before = (store.list(), names_in(store))
    with pytest.raises(InvalidArgument) as err:
        load_from(store, path)
    message = str(err.value)
    assert message.startswith("failed to load images: ") and "\n" not in message
    assert why in message, message
    assert (store.list(), names_in(store)) == before


def test_hostile_layer_paths_read_nothing_outside(store, image, tmp_path):
    passwd = open("/etc/passwd", "rb").read()
    layer = layer_tar({"ok": b"ok"})
    members = docker_archive_members(layer, layer_path="../../etc/passwd")
    assert_refused(store, write_tar(tmp_path / "climb.tar", members), "'../../etc/passwd' is not a path inside")
    members = docker_archive_members(layer, layer_path="/etc/passwd")
    assert_refused(store, write_tar(tmp_path / "absolute.tar", members), "'/etc/passwd' is not a path inside")
    # A layer.tar that is a symlink out of the archive, or to a file that is not there.
    members = docker_archive_members(layer, layer_path="link/layer.tar")
    path = write_tar(tmp_path / "symlink.tar", members, {"link/layer.tar": "../../../../etc/passwd"})
    assert_refused(store, path, "is not a path inside the archive")
    path = write_tar(tmp_path / "absolute-link.tar", members, {"link/layer.tar": "/etc/passwd"})
    assert_refused(store, path, "is not a path inside the archive")
    path = write_tar(tmp_path / "dangling-link.tar", members, {"link/layer.tar": "../nothing.tar"})
    assert_refused(store, path, "layer 'link/layer.tar' is missing from the archive")
    path = write_tar(tmp_path / "loop.tar", members, {"link/layer.tar": "layer.tar"})
    assert_refused(store, path, "a chain of more than 16 links")
    assert open("/etc/passwd", "rb").read() == passwd


def test_hostile_member_names_are_never_written(store, tmp_path):
    target = tmp_path / "escaped"
    layer = layer_tar({"ok": b"ok"})
    members = {**docker_archive_members(layer), f"../../../../{target}": b"owned", str(target): b"owned"}
    assert load_from(store, write_tar(tmp_path / "names.tar", members)) == ["docker.io/library/hostile:1"]
    assert not target.exists()


def test_a_compressed_layer_tar_is_read_as_docker_does(store, tmp_path):
    layer = layer_tar({"a": b"a"})
    members = {**docker_archive_members(layer), "l1/layer.tar": gzip.compress(layer)}
    assert load_from(store, write_tar(tmp_path / "gz-layer.tar", members)) == ["docker.io/library/hostile:1"]
    [loaded] = store.list()
    assert config_of(store, loaded)["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def test_a_layer_that_does_not_match_its_diff_id(store, image, tmp_path):
    members = docker_archive_members(layer_tar({"a": b"a"}), diff_id="sha256:" + "0" * 64)
    assert_refused(store, write_tar(tmp_path / "mismatch.tar", members), "failed verification: its content has diff ID")


def test_a_layer_that_writes_outside_its_rootfs(store, image, tmp_path):
    members = docker_archive_members(layer_tar({"../../escape": b"x"}))
    assert_refused(store, write_tar(tmp_path / "escape.tar", members), "escape")
    assert not os.path.exists(os.path.join(store.root, "..", "escape"))


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_truncated_archives(store, image, tmp_path, fmt):
    path = save_to(store, [NAME], tmp_path / "image.tar", fmt)
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 10240 - 700, 700):
        truncated = tmp_path / f"cut-{cut}.tar"
        truncated.write_bytes(data[:cut])
        fresh = ImageStore(str(tmp_path / f"fresh-{cut}"))
        with pytest.raises(InvalidArgument) as err:
            load_from(fresh, truncated)
        assert "\n" not in str(err.value)
        assert fresh.list() == [] and names_in(fresh) == set()
        fresh.close()


def test_not_an_image_archive(store, image, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(4096))
    assert_refused(store, garbage, "the input is not a tar archive")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert_refused(store, empty, "the input is not a tar archive")
    other = write_tar(tmp_path / "other.tar", {"README": b"hello"})
    assert_refused(store, other, "neither manifest.json nor oci-layout")
    broken_gzip = tmp_path / "broken.tar.gz"
    broken_gzip.write_bytes(gzip.compress(open(other, "rb").read())[:-20])
    assert_refused(store, broken_gzip, "gzip")


def test_broken_docker_archives(store, image, tmp_path):
    layer = layer_tar({"a": b"a"})
    good = docker_archive_members(layer)
    cases = {
        "no-config": ({k: v for k, v in good.items() if k != "config.json"}, "config 'config.json' is missing"),
        "no-layer": ({k: v for k, v in good.items() if k != "l1/layer.tar"}, "layer 'l1/layer.tar' is missing"),
        "bad-json": ({**good, "manifest.json": b"[{"}, "failed to parse manifest.json"),
        "bad-config": ({**good, "config.json": b"{\"rootfs\": 1}"}, "rootfs must be of type layers"),
        "counts": ({**good, "config.json": json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()},
                   "has 1 layers, its config 0 diff IDs"),
    }  # fmt: skip
    for name, (members, why) in cases.items():
        assert_refused(store, write_tar(tmp_path / f"{name}.tar", members), why)


def oci_members(store: ImageStore, image, tmp_path) -> dict:
    path = save_to(store, [NAME], tmp_path / "good-oci.tar", archive.OCI_ARCHIVE)
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def test_broken_oci_archives(store, fresh, image, tmp_path):
    good = oci_members(store, image, tmp_path)
    manifest = manifest_of(store, image)
    layer = f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"
    config = f"blobs/sha256/{image.id[7:]}"
    flipped = bytearray(good[layer])
    flipped[len(flipped) // 2] ^= 0xFF
    cases = {
        "missing-layer": ({k: v for k, v in good.items() if k != layer}, f"blob '{layer}' is missing"),
        "corrupt-layer": ({**good, layer: bytes(flipped)}, "failed verification"),
        "corrupt-config": ({**good, config: good[config].replace(b"capsa import", b"capsa-import")},
                           "failed verification"),
        "bad-index": ({**good, "index.json": b"{\"manifests\": 3}"}, "no manifests list"),
        "no-index": ({k: v for k, v in good.items() if k != "index.json"}, "file 'index.json' is missing"),
        "bad-layout": ({**good, "oci-layout": b"[]"}, "failed to parse oci-layout"),
    }  # fmt: skip
    for name, (members, why) in cases.items():
        assert_refused(fresh, write_tar(tmp_path / f"{name}.tar", members), why)
    assert fresh.list() == []
    # The same archive, unbroken, loads.
    assert load_from(fresh, write_tar(tmp_path / "good.tar", good)) == [NAME]


def test_docker_25_archives_are_read_as_their_oci_layout(store, fresh, image, tmp_path):
    """`docker save` from Docker 25 on writes both formats in one tar."""
    members = {**oci_members(store, image, tmp_path),
               "manifest.json": json.dumps([{"Config": "gone.json", "Layers": []}]).encode()}  # fmt: skip
    assert load_from(fresh, write_tar(tmp_path / "both.tar", members)) == [NAME]
    assert fresh.list()[0].manifest == image.manifest


def test_a_nested_index_loads_the_host_platform(store, fresh, image, tmp_path):
    members = oci_members(store, image, tmp_path)
    [desc] = json.loads(members["index.json"])["manifests"]
    other = {**desc, "digest": "sha256:" + "0" * 64, "platform": {"os": "linux", "architecture": "s390x-not"}}
    mine = {**desc, "platform": {"os": host().os, "architecture": host().architecture}}
    del mine["annotations"], other["annotations"]
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [other, mine]}).encode()  # fmt: skip
    nested_digest = "sha256:" + hashlib.sha256(nested).hexdigest()
    members[f"blobs/sha256/{nested_digest[7:]}"] = nested
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nested_digest, "size": len(nested),
           "annotations": {"org.opencontainers.image.ref.name": "localhost/multi:1"}}  # fmt: skip
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    assert load_from(fresh, write_tar(tmp_path / "nested.tar", members)) == ["localhost/multi:1"]
    [loaded] = fresh.list()
    assert loaded.manifest == image.manifest
    assert nested_digest in fresh.blobs_of(loaded.id)
