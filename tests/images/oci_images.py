"""OCI image layouts built on disk by the tests, in pure Python, and pushed
to the test registries with skopeo.

A layout is what the OCI image-layout spec says: `oci-layout`,
`index.json` (one entry per tag, named by the
org.opencontainers.image.ref.name annotation) and `blobs/sha256/HEX`.
Everything is deterministic: tar headers carry FIXED_MTIME and uid/gid
given explicitly, gzip streams carry no name or time, JSON is written with
sorted keys; building the same image twice gives the same digests (given
the same /bin/busybox).

    image = busybox_layout(tmp_path / "layout")      # an Image
    push(image, open_registry, "library/busybox")     # -> the pushed digest
    image.manifest_digest, image.config_digest, image.layer_digests, image.diff_ids

Builders: busybox_layout, multilayer_layout, multiplatform_layout (an
ImageIndex), hostile_layout(KIND), scratch_layout(FILES). push, pull and
inspect with skopeo (and push_refused, … : the stderr of a run that must
fail). Tar entries for other layers: file, directory,
symlink, hardlink, fifo, whiteout, opaque (Layout.add_layer, add_image).

skopeo 1.9 pushes zstd and uncompressed layers from a layout as they are
only with --preserve-digests (push() passes it): without it, it gzips an
uncompressed layer, changing the manifest's digest. --format v2s2 refuses
an image with a zstd layer. umoci 0.4.7 cannot unpack zstd layers.
"""

import gzip
import hashlib
import io
import json
import os
import platform as host
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass

import zstandard

FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
BUSYBOX = "/bin/busybox"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SKOPEO_TIMEOUT = 120
# Keep skopeo away from credentials stored on this machine (podman login, …).
AUTH_FILE = "/nonexistent/capsa-tests/auth.json"

OCI_LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"
COMPRESSIONS = {None: LAYER_TAR, "gzip": LAYER_GZIP, "zstd": LAYER_ZSTD}
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# uname -m -> (GOARCH, variant)
_ARCHES = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
           "ppc64le": ("ppc64le", None), "s390x": ("s390x", None),
           "riscv64": ("riscv64", None), "i686": ("386", None)}  # fmt: skip


def host_platform() -> dict:
    """This machine's platform in OCI terms: {"os", "architecture"[, "variant"]}."""
    machine = host.machine()
    architecture, variant = _ARCHES.get(machine, (machine, None))
    found = {"os": "linux", "architecture": architecture}
    if variant and architecture != "arm64":
        found["variant"] = variant
    return found


def platform_string(platform: dict) -> str:
    """os/architecture[/variant]."""
    parts = [platform["os"], platform["architecture"]]
    return "/".join(parts + ([platform["variant"]] if platform.get("variant") else []))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- tar entries -----------------------------------------------------------

@dataclass
class Entry:
    """One tar member: its header and, for a regular file, its bytes."""

    info: tarfile.TarInfo
    data: bytes = b""


def _info(path: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
    # No normalisation: hostile layers need names such as ../../escape as written.
    info = tarfile.TarInfo(path)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = FIXED_MTIME
    return info


def file(path: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
         xattrs: dict[str, str] | None = None) -> Entry:  # fmt: skip
    """A regular file; XATTRS as PAX SCHILY.xattr.NAME records."""
    info = _info(path, tarfile.REGTYPE, mode, uid, gid)
    info.size = len(data)
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{name}": value for name, value in xattrs.items()}
    return Entry(info, data)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_info(path, tarfile.DIRTYPE, mode, uid, gid))


def symlink(path: str, target: str, uid: int = 0, gid: int = 0) -> Entry:
    info = _info(path, tarfile.SYMTYPE, 0o777, uid, gid)
    info.linkname = target
    return Entry(info)


def hardlink(path: str, target: str) -> Entry:
    """PATH as another name of TARGET (a path in the same layer)."""
    info = _info(path, tarfile.LNKTYPE, 0o644, 0, 0)
    info.linkname = target
    return Entry(info)


def fifo(path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_info(path, tarfile.FIFOTYPE, mode, uid, gid))


def whiteout(path: str) -> Entry:
    """Deletes PATH (file or directory) of the layers below."""
    parent, name = os.path.split(path)
    return file(os.path.join(parent, f".wh.{name}"))


def opaque(path: str) -> Entry:
    """Hides everything the layers below have in directory PATH."""
    return file(os.path.join(path, ".wh..wh..opq"))


def layer_tar(entries: list[Entry]) -> bytes:
    """ENTRIES as a PAX tar, in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.info.isreg() else None)
    return buffer.getvalue()


def compress(tar: bytes, compression: str | None) -> bytes:
    """TAR as COMPRESSION ("gzip", "zstd" or None) would store it."""
    if compression == "gzip":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream:
            stream.write(tar)
        return buffer.getvalue()
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(tar)
    if compression is None:
        return tar
    raise ValueError(f"unknown compression {compression!r}")


# -- layouts ---------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    digest: str
    diff_id: str
    media_type: str
    size: int

    @property
    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """One image manifest in a layout (tag None: only reachable from an index)."""

    layout: str
    tag: str | None
    manifest_digest: str
    config_digest: str
    layers: tuple[Layer, ...]
    platform: dict
    manifest_media_type: str = OCI_MANIFEST

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def layer_media_types(self) -> list[str]:
        return [layer.media_type for layer in self.layers]

    @property
    def ref(self) -> str:
        """skopeo's name for it: oci:LAYOUT:TAG."""
        return f"oci:{self.layout}:{self.tag}"


@dataclass(frozen=True)
class ImageIndex:
    """An image index in a layout and the images it lists."""

    layout: str
    tag: str
    index_digest: str
    images: tuple[Image, ...]

    @property
    def manifest_digest(self) -> str:
        """The index's digest: what a tag of the pushed index resolves to."""
        return self.index_digest

    @property
    def manifest_digests(self) -> list[str]:
        return [image.manifest_digest for image in self.images]

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"

    def for_platform(self, platform: dict) -> Image:
        for image in self.images:
            if platform_string(image.platform) == platform_string(platform):
                return image
        raise KeyError(platform_string(platform))


def _json_bytes(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout at DIR (created, or added to)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(str(path))
        os.makedirs(os.path.join(self.path, "blobs", "sha256"), exist_ok=True)
        marker = os.path.join(self.path, "oci-layout")
        if not os.path.exists(marker):
            with open(marker, "wb") as f:
                f.write(_json_bytes({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
        if not os.path.exists(self._index_path):
            self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    @property
    def _index_path(self) -> str:
        return os.path.join(self.path, "index.json")

    def _write_index(self, index: dict) -> None:
        with open(self._index_path, "wb") as f:
            f.write(_json_bytes(index))

    def blob_path(self, digest: str) -> str:
        algorithm, hexdigest = digest.split(":", 1)
        return os.path.join(self.path, "blobs", algorithm, hexdigest)

    def add_blob(self, data: bytes, media_type: str) -> dict:
        """Store DATA; its descriptor."""
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_layer(self, entries: list[Entry], compression: str | None = "gzip") -> Layer:
        tar = layer_tar(entries)
        descriptor = self.add_blob(compress(tar, compression), COMPRESSIONS[compression])
        return Layer(descriptor["digest"], sha256_digest(tar), descriptor["mediaType"],
                     descriptor["size"])  # fmt: skip

    def add_image(self, layers: list[Layer], platform: dict, config: dict | None = None,
                  tag: str | None = None, comment: str = "capsa tests") -> Image:  # fmt: skip
        """A config and manifest over LAYERS; tagged TAG if given."""
        image_config = {
            "created": CREATED,
            "architecture": platform["architecture"], "os": platform["os"],
            **({"variant": platform["variant"]} if platform.get("variant") else {}),
            "config": {"Env": [PATH_ENV], "WorkingDir": "/", **(config or {})},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": CREATED, "created_by": f"{comment}: layer {n}"}
                        for n in range(len(layers))],
        }  # fmt: skip
        config_descriptor = self.add_blob(_json_bytes(image_config), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor,
                    "layers": [layer.descriptor for layer in layers]}  # fmt: skip
        descriptor = self.add_blob(_json_bytes(manifest), OCI_MANIFEST)
        if tag is not None:
            self.tag(descriptor, tag)
        return Image(self.path, tag, descriptor["digest"], config_descriptor["digest"],
                     tuple(layers), dict(platform))  # fmt: skip

    def add_index(self, images: list[Image], tag: str) -> ImageIndex:
        manifests = []
        for image in images:
            with open(self.blob_path(image.manifest_digest), "rb") as f:
                size = len(f.read())
            manifests.append({"mediaType": image.manifest_media_type,
                              "digest": image.manifest_digest, "size": size,
                              "platform": image.platform})  # fmt: skip
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        descriptor = self.add_blob(_json_bytes(index), OCI_INDEX)
        self.tag(descriptor, tag)
        return ImageIndex(self.path, tag, descriptor["digest"], tuple(images))

    def tag(self, descriptor: dict, name: str) -> None:
        """index.json names DESCRIPTOR NAME (replacing what had that name)."""
        with open(self._index_path, "rb") as f:
            index = json.load(f)
        kept = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != name]
        index["manifests"] = kept + [{**descriptor, "annotations": {REF_NAME: name}}]
        self._write_index(index)


# -- builders --------------------------------------------------------------

def busybox_entries() -> list[Entry]:
    """A busybox rootfs: /bin/busybox, a symlink per applet, passwd and group."""
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    entries = [directory(name) for name in ("bin", "dev", "etc", "proc", "sys", "usr", "var")]
    entries += [directory("root", 0o700), directory("tmp", 0o1777),
                file("bin/busybox", binary, 0o755)]  # fmt: skip
    entries += [symlink(f"bin/{applet}", "busybox")
                for applet in sorted(set(applets)) if applet != "busybox"]  # fmt: skip
    entries += [
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                           b"nobody:x:65534:65534:nobody:/:/bin/false\n"),
        file("etc/group", b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
    ]  # fmt: skip
    return entries


def busybox_layout(path, tag: str = "latest") -> Image:
    """One gzip layer holding a busybox rootfs; Cmd ["sh"]; the host's platform."""
    layout = Layout(path)
    layer = layout.add_layer(busybox_entries())
    return layout.add_image([layer], host_platform(), {"Cmd": ["sh"]}, tag, "busybox")


def multilayer_entries() -> list[tuple[str | None, list[Entry]]]:
    """(compression, entries) of the layers above busybox in multilayer_layout."""
    base = [directory("data"), file("data/keep", b"kept\n"), file("data/gone", b"to be deleted\n"),
            file("data/replaced", b"old\n"),
            directory("data/dir"), file("data/dir/a", b"a\n"),
            directory("data/dir/sub"), file("data/dir/sub/b", b"b\n"),
            directory("data/opaque"), file("data/opaque/old", b"old\n"),
            directory("data/opaque/olddir"), file("data/opaque/olddir/c", b"c\n")]  # fmt: skip
    changes = [directory("data"), whiteout("data/gone"), whiteout("data/dir"),
               directory("data/opaque"), opaque("data/opaque"),
               file("data/opaque/new", b"new\n"),
               file("data/replaced", b"new content\n"),
               symlink("data/link", "keep"), symlink("data/abslink", "/data/keep"),
               directory("data/hard"), file("data/hard/one", b"linked\n"),
               hardlink("data/hard/two", "data/hard/one")]  # fmt: skip
    special = [directory("data"),
               file("data/xattr", b"has an xattr\n", xattrs={"user.capsa": "yes"}),
               file("data/setuid", b"setuid\n", 0o4755),
               fifo("data/fifo", 0o600)]  # fmt: skip
    owned = [directory("home"), directory("home/user", 0o755, 1000, 1000),
             file("home/user/owned", b"mine\n", 0o640, 1000, 1000),
             directory("data"), directory("data/private", 0o700)]  # fmt: skip
    return [("gzip", base), ("gzip", changes), ("zstd", special), (None, owned)]


def multilayer_layout(path, tag: str = "latest", zstd: bool = True) -> Image:
    """busybox, then four layers: files (gzip); whiteouts of data/gone and
    data/dir, data/opaque made opaque holding only `new`, symlinks, a
    hardlink pair data/hard/{one,two} (gzip); data/xattr with user.capsa=yes,
    setuid data/setuid, fifo data/fifo (zstd); home/user/owned owned by
    1000:1000 and an empty data/private 0700 (uncompressed).

    Not ZSTD: the zstd layer is gzip instead (umoci 0.4.7 refuses zstd);
    the diff_ids, and so the unpacked tree, are the same either way."""
    layout = Layout(path)
    layers = [layout.add_layer(busybox_entries())]
    for compression, entries in multilayer_entries():
        if compression == "zstd" and not zstd:
            compression = "gzip"
        layers.append(layout.add_layer(entries, compression))
    return layout.add_image(layers, host_platform(), {"Cmd": ["sh"]}, tag, "multilayer")


def other_platforms() -> list[dict]:
    """Two platforms that are not this machine's."""
    other = "arm64" if host_platform()["architecture"] != "arm64" else "amd64"
    return [{"os": "linux", "architecture": other},
            {"os": "linux", "architecture": "arm", "variant": "v7"}]  # fmt: skip


def multiplatform_layout(path, tag: str = "latest") -> ImageIndex:
    """An index of three images, each with a layer whose /platform holds its
    platform string (os/arch[/variant] and a newline): the host's (busybox
    below it), then other_platforms()."""
    layout = Layout(path)
    busybox = layout.add_layer(busybox_entries())
    images = []
    for n, platform in enumerate([host_platform(), *other_platforms()]):
        marker = layout.add_layer([file("platform", f"{platform_string(platform)}\n".encode())])
        layers, command = ([busybox, marker], ["sh"]) if n == 0 else ([marker], ["/platform"])
        images.append(layout.add_image(layers, platform, {"Cmd": command},
                                       comment=platform_string(platform)))  # fmt: skip
    return layout.add_index(images, tag)


# What each hostile layer holds; a correct unpacker refuses or contains them.
ABSOLUTE_PATH = "/tmp/capsa-absolute-escape"
HOSTILE = {
    "traversal": [file("hello", b"hello\n"), file("../../escape", b"escaped\n")],
    "absolute": [file("hello", b"hello\n"), file(ABSOLUTE_PATH, b"escaped\n")],
    "symlink": [file("hello", b"hello\n"), symlink("evil", "/"),
                file("evil/tmp/escaped", b"escaped\n")],
    "hardlink": [file("hello", b"hello\n"), hardlink("link", "../../outside")],
}  # fmt: skip


def hostile_layout(path, kind: str, tag: str = "latest") -> Image:
    """One gzip layer with a benign `hello` and HOSTILE[KIND]'s attack."""
    layout = Layout(path)
    layer = layout.add_layer(HOSTILE[kind])
    return layout.add_image([layer], host_platform(), {"Cmd": ["/hello"]}, tag, f"hostile {kind}")


def scratch_layout(path, files: dict[str, bytes], tag: str = "latest",
                   compression: str | None = "gzip") -> Image:  # fmt: skip
    """One layer of FILES (path -> bytes): give it unique content for a test
    that corrupts its blobs in a shared registry."""
    layout = Layout(path)
    layer = layout.add_layer([file(name, data) for name, data in files.items()], compression)
    return layout.add_image([layer], host_platform(), {"Cmd": ["sh"]}, tag, "scratch")


# -- skopeo ----------------------------------------------------------------

def skopeo(*args: str, check: bool = True, timeout: float = SKOPEO_TIMEOUT,
           ) -> subprocess.CompletedProcess:  # fmt: skip
    """skopeo ARGS with no stored credentials; on CHECK a failure raises with its output."""
    argv = ["skopeo", *args]
    env = {**os.environ, "REGISTRY_AUTH_FILE": AUTH_FILE}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"`{shlex.join(argv)}` exited {result.returncode}:\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")  # fmt: skip
    return result


def _refused(result: subprocess.CompletedProcess) -> str:
    if result.returncode == 0:
        raise AssertionError(f"`{shlex.join(result.args)}` was expected to fail; it printed:\n"
                             f"{result.stdout}")  # fmt: skip
    return result.stderr


def _copy_to_registry(image: "Image | ImageIndex", registry, repository: str, tag: str | None,
                      creds: bool, docker: bool, digest_file: str, check: bool,
                      ) -> subprocess.CompletedProcess:  # fmt: skip
    target = f"docker://{registry.host}/{repository}:{tag or image.tag}"
    args = ["copy", "--retry-times=0", f"--digestfile={digest_file}",
            *registry.skopeo_flags("dest", creds)]  # fmt: skip
    if isinstance(image, ImageIndex):
        args.append("--all")
    args += ["--format=v2s2"] if docker else ["--preserve-digests"]
    return skopeo(*args, image.ref, target, check=check)


def push(image: Image | ImageIndex, registry, repository: str, tag: str | None = None, *,
         creds: bool = True, docker: bool = False) -> str:  # fmt: skip
    """Copy IMAGE to REGISTRY/REPOSITORY:TAG (default: the image's tag) with
    skopeo, and return the pushed manifest's digest; an index goes with
    --all. DOCKER converts to Docker v2 schema 2 media types (--format
    v2s2), which changes the manifest's digest; without it the manifest is
    pushed as built (--preserve-digests). CREDS: as the registry's user if
    it has one."""
    with tempfile.TemporaryDirectory(prefix="capsa-push-") as scratch:
        digest_file = os.path.join(scratch, "digest")
        _copy_to_registry(image, registry, repository, tag, creds, docker, digest_file, True)
        with open(digest_file) as f:
            return f.read().strip()


def push_refused(image: Image | ImageIndex, registry, repository: str, tag: str | None = None,
                 *, creds: bool = True, docker: bool = False) -> str:  # fmt: skip
    """push() that must fail: skopeo's stderr."""
    with tempfile.TemporaryDirectory(prefix="capsa-push-") as scratch:
        digest_file = os.path.join(scratch, "digest")
        return _refused(_copy_to_registry(image, registry, repository, tag, creds, docker,
                                          digest_file, False))  # fmt: skip


def _inspect_args(registry, reference: str, raw: bool, config: bool, creds: bool) -> list[str]:
    args = ["inspect", "--retry-times=0", *registry.skopeo_flags("", creds)]
    args += ["--raw"] if raw else []
    args += ["--config"] if config else []
    return [*args, f"docker://{registry.host}/{reference}"]


def inspect(registry, reference: str, *, raw: bool = False, config: bool = False,
            creds: bool = True) -> dict | bytes:  # fmt: skip
    """`skopeo inspect` of docker://HOST/REFERENCE (NAME:TAG or NAME@DIGEST):
    the parsed JSON; RAW: the manifest's bytes; CONFIG: the image config."""
    result = skopeo(*_inspect_args(registry, reference, raw, config, creds))
    return result.stdout.encode() if raw else json.loads(result.stdout)


def inspect_refused(registry, reference: str, *, creds: bool = True) -> str:
    """inspect() that must fail: skopeo's stderr."""
    return _refused(skopeo(*_inspect_args(registry, reference, False, False, creds), check=False))


def pull(registry, reference: str, layout_dir, tag: str = "latest", *, creds: bool = True) -> None:
    """Copy docker://HOST/REFERENCE into the OCI layout LAYOUT_DIR as TAG with
    skopeo (which verifies every blob's digest)."""
    skopeo(*_pull_args(registry, reference, layout_dir, tag, creds))


def pull_refused(registry, reference: str, layout_dir, tag: str = "latest", *,
                 creds: bool = True) -> str:  # fmt: skip
    """pull() that must fail: skopeo's stderr."""
    return _refused(skopeo(*_pull_args(registry, reference, layout_dir, tag, creds), check=False))


def _pull_args(registry, reference: str, layout_dir, tag: str, creds: bool) -> list[str]:
    return ["copy", "--retry-times=0", "--preserve-digests", *registry.skopeo_flags("src", creds),
            f"docker://{registry.host}/{reference}", f"oci:{layout_dir}:{tag}"]  # fmt: skip
