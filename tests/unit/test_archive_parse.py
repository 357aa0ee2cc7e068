"""The parts of `capsa save/load/import` that need no root: `docker import
-c` changes, the imported config, a docker-archive's manifest.json, member
paths, OCI layout names, the layer tar and its gzip blob, compressed input."""

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile

import pytest
import zstandard

from capsa import fastjson as json
from capsa.errors import InvalidArgument
from capsa.images import archive, importer
from capsa.images.manifest import Platform
from capsa.images.store import ImageStore

DIFF_ID = "sha256:" + "a" * 64


# -- changes (docker import -c)


def test_cmd_and_entrypoint_take_exec_and_shell_forms():
    config = importer.apply_changes({}, ['CMD ["/bin/sh", "-c", "echo hi"]', "entrypoint /init --quiet"])
    assert config == {"Cmd": ["/bin/sh", "-c", "echo hi"], "Entrypoint": ["/bin/sh", "-c", "/init --quiet"]}
    assert importer.apply_changes({}, ["CMD [not json"])["Cmd"] == ["/bin/sh", "-c", "[not json"]


def test_env_pairs_quotes_legacy_form_and_override():
    config = importer.apply_changes({}, ['ENV A=1 B="two words"', "ENV C three words", "ENV A=3"])
    assert config["Env"] == ["B=two words", "C=three words", "A=3"]


def test_label_user_workdir_expose_volume_stopsignal():
    config = importer.apply_changes({}, ['LABEL a=b "c d"=e', "USER 1000:1000", "WORKDIR /srv", "WORKDIR app",
                                         "EXPOSE 80 53/udp", 'VOLUME ["/data", "/logs"]', "VOLUME /cache",
                                         "STOPSIGNAL SIGINT"])  # fmt: skip
    assert config == {"Labels": {"a": "b", "c d": "e"}, "User": "1000:1000", "WorkingDir": "/srv/app",
                      "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                      "Volumes": {"/data": {}, "/logs": {}, "/cache": {}}, "StopSignal": "SIGINT"}  # fmt: skip


def test_apply_changes_does_not_modify_its_input():
    base = {"Env": ["A=1"]}
    assert importer.apply_changes(base, ["ENV B=2"])["Env"] == ["A=1", "B=2"]
    assert base == {"Env": ["A=1"]}


@pytest.mark.parametrize("change", ["RUN echo hi", "FROM scratch", "ADD a b", "", "CMD", "ENV", "ENV A",
                                    "LABEL =x", "EXPOSE http", "EXPOSE 70000", "EXPOSE 80/icmp", "USER",
                                    "WORKDIR", "ENV A='unterminated", "VOLUME [broken"])  # fmt: skip
def test_bad_changes_are_refused(change):
    with pytest.raises(InvalidArgument, match="invalid change"):
        importer.apply_changes({}, [change])


def test_unknown_instruction_names_the_valid_ones():
    with pytest.raises(InvalidArgument) as err:
        importer.apply_changes({}, ["HEALTHCHECK NONE"])
    assert "HEALTHCHECK is not a valid change command" in str(err.value)
    assert "\n" not in str(err.value) and str(err.value)[0].islower()


def test_image_config_of_an_import():
    config = importer.image_config(Platform("linux", "arm64", "v8"), [DIFF_ID], "2024-01-01T00:00:00Z",
                                   "from a tarball", ["CMD [\"sh\"]"])  # fmt: skip
    assert config == {
        "architecture": "arm64", "os": "linux", "variant": "v8", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [DIFF_ID]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "capsa import", "comment": "from a tarball"}],
    }  # fmt: skip
    plain = importer.image_config(Platform("linux", "amd64"), [DIFF_ID], "2024-01-01T00:00:00Z")
    assert "variant" not in plain and "comment" not in plain["history"][0] and plain["config"] == {}


def test_created_is_rfc3339_utc():
    created = importer.now_rfc3339()
    assert created.endswith("Z") and created[10] == "T"
    assert archive._epoch(created) > 1_700_000_000
    assert archive._epoch("2024-01-01T00:00:00.123456789+00:00") == 1704067200
    assert archive._epoch("yesterday") == 0


# -- docker-archive manifest.json


def manifest_json(**entry) -> bytes:
    base = {"Config": "abc.json", "RepoTags": ["busybox:latest"], "Layers": ["1/layer.tar", "./2.tar"]}
    return json.dumps([{**base, **entry}]).encode()


def test_docker_manifest_is_parsed_and_normalised():
    [entry] = archive.parse_docker_manifest(manifest_json())
    assert entry == archive.DockerEntry("abc.json", ["docker.io/library/busybox:latest"], ["1/layer.tar", "2.tar"])
    [entry] = archive.parse_docker_manifest(manifest_json(RepoTags=None))
    assert entry.repo_tags == []
    [entry] = archive.parse_docker_manifest(manifest_json(RepoTags=["localhost:5000/a/b:1", "x"]))
    assert entry.repo_tags == ["localhost:5000/a/b:1", "docker.io/library/x:latest"]


@pytest.mark.parametrize("body, why", [
    (b"not json", "failed to parse manifest.json"),
    (b"{}", "not a non-empty list"),
    (b"[]", "not a non-empty list"),
    (b"[1]", "is not an object"),
    (manifest_json(Layers=["../../etc/passwd"]), "'../../etc/passwd' is not a path inside the archive"),
    (manifest_json(Layers=["/etc/passwd"]), "'/etc/passwd' is not a path inside the archive"),
    (manifest_json(Layers=["a/../../b"]), "not a path inside the archive"),
    (manifest_json(Layers="1/layer.tar"), "needs a Layers list"),
    (manifest_json(Layers=[7]), "7 is not a path"),
    (manifest_json(Config=None), "config None is not a path"),
    (manifest_json(Config="../x.json"), "config '../x.json'"),
    (manifest_json(RepoTags=["Upper:case"]), "invalid reference format"),
    (manifest_json(RepoTags=["busybox@sha256:" + "a" * 64]), "which is not NAME:TAG"),
    (manifest_json(RepoTags="busybox"), "RepoTags, if any, as a list"),
])  # fmt: skip
def test_bad_docker_manifests_are_refused(body, why):
    with pytest.raises(InvalidArgument, match=why.replace("(", r"\(").replace(")", r"\)")):
        archive.parse_docker_manifest(body)


@pytest.mark.parametrize("text, name", [("manifest.json", "manifest.json"), ("./a//b/./c.tar", "a/b/c.tar"),
                                        ("a/../b", "b"), ("../a", None), ("..", None), (".", None), ("/a", None),
                                        ("", None), ("a\0b", None)])  # fmt: skip
def test_member_paths_stay_inside_the_archive(text, name):
    if name is None:
        with pytest.raises(InvalidArgument, match="is not a path inside the archive"):
            archive.member_path(text, "layer")
    else:
        assert archive.member_path(text, "layer") == name


# -- OCI layout names


@pytest.mark.parametrize("annotations, name", [
    ({}, None),
    ({archive.REF_NAME: "latest"}, None),  # a bare tag: no repository
    ({archive.REF_NAME: "v1.0"}, None),
    ({archive.REF_NAME: "busybox:1"}, "docker.io/library/busybox:1"),
    ({archive.REF_NAME: "localhost/pi:1"}, "localhost/pi:1"),
    ({archive.REF_NAME: "quay.io/a/b"}, "quay.io/a/b:latest"),
    ({archive.REF_NAME: "latest", archive.CONTAINERD_NAME: "docker.io/library/busybox:latest"},
     "docker.io/library/busybox:latest"),
    ({archive.CONTAINERD_NAME: "app"}, "docker.io/library/app:latest"),
    ({archive.REF_NAME: "busybox@sha256:" + "b" * 64}, None),
])  # fmt: skip
def test_names_from_oci_annotations(annotations, name):
    assert archive.name_from_annotations(annotations) == name


def test_an_invalid_oci_name_is_refused():
    with pytest.raises(InvalidArgument, match="index.json names an image 'Bad/Name:1'"):
        archive.name_from_annotations({archive.REF_NAME: "Bad/Name:1"})


# -- the layer tar and its blob


def test_tree_is_written_like_tar_c_dot(tmp_path):
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    os.link(root / "etc" / "passwd", root / "etc" / "passwd-")
    os.symlink("../etc/passwd", root / "link")
    os.mkfifo(root / "fifo")
    long_name = "d" * 120
    (root / long_name).write_bytes(b"x" * 5000)
    os.utime(root / "etc" / "passwd", (1704067200.5, 1704067200.5))
    out = io.BytesIO()
    importer.write_tree(str(root), out)
    members = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getmembers()
    assert [m.name for m in members] == [".", f"./{long_name}", "./etc", "./etc/passwd", "./etc/passwd-",
                                         "./fifo", "./link"]  # fmt: skip
    by_name = {m.name: m for m in members}
    assert by_name["./etc/passwd"].isreg() and by_name["./etc/passwd"].mtime == 1704067200
    assert by_name["./etc/passwd-"].islnk() and by_name["./etc/passwd-"].linkname == "./etc/passwd"
    assert by_name["./link"].issym() and by_name["./link"].linkname == "../etc/passwd"
    assert by_name["./fifo"].isfifo() and by_name[f"./{long_name}"].size == 5000
    assert all(m.uname == "" and m.gname == "" and m.uid == os.getuid() for m in members)
    again = io.BytesIO()
    importer.write_tree(str(root), again)
    assert again.getvalue() == out.getvalue()  # deterministic


def test_gzip_layer_hashes_the_tar_and_stores_a_reproducible_blob(tmp_path):
    store = ImageStore(str(tmp_path / "root"))
    data = os.urandom(3 << 20)
    digests = []
    for _ in range(2):
        layer = importer.GzipLayer(store)
        layer.write(data[:100])
        layer.write(data[100:])
        desc = layer.store(store, importer.mediatypes.OCI_LAYER_GZIP)
        layer.close()
        assert layer.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
        assert gzip.decompress(store.content.read(desc.digest)) == data
        assert desc.size == store.content.size(desc.digest)
        digests.append(desc.digest)
    assert digests[0] == digests[1]
    assert os.listdir(store.content.ingests) == []


class Pipe(io.RawIOBase):
    """A non-seekable stream that hands out at most 3 bytes a read."""

    def __init__(self, data: bytes):
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), 3, len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


@pytest.mark.parametrize("compress", [lambda d: d, gzip.compress, bz2.compress, lzma.compress,
                                      lambda d: zstandard.ZstdCompressor().compress(d)],
                         ids=["plain", "gzip", "bzip2", "xz", "zstd"])  # fmt: skip
def test_open_compressed_detects_the_compression_of_a_pipe(compress):
    data = b"tar bytes " * 10000
    with importer.open_compressed(Pipe(compress(data))) as f:
        assert f.read() == data


def test_tar_stream_writes_a_tar_readers_accept():
    out = io.BytesIO()
    with archive._TarStream(out, 1704067200) as tar:
        tar.add_bytes("manifest.json", b"[]")
        tar.add_directory("abc")
        tar.add_stream("abc/layer.tar", io.BytesIO(b"y" * 1000), 1000)
    assert len(out.getvalue()) % tarfile.RECORDSIZE == 0
    members = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getmembers()
    assert [(m.name, m.size, m.mtime, m.uid) for m in members] == [
        ("manifest.json", 2, 1704067200, 0), ("abc", 0, 1704067200, 0), ("abc/layer.tar", 1000, 1704067200, 0)]


def test_tar_stream_refuses_content_of_another_length():
    for data in (b"short", b"x" * 2000):
        with pytest.raises(Exception, match="changed while it was being written"):
            with archive._TarStream(io.BytesIO(), 0) as tar:
                tar.add_stream("layer.tar", io.BytesIO(data), 1000)
