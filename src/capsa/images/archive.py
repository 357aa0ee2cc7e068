"""`capsa save` and `capsa load`: images as one tar stream, in the two
formats the other tools exchange.

docker-archive, as `docker save` writes it and `docker load`, podman and
skopeo's docker-archive: read it:

    manifest.json           [{"Config": "<id hex>.json", "RepoTags": ["docker.io/library/busybox:latest"],
                              "Layers": ["<chain ID hex>/layer.tar", …]}]
    repositories            {"docker.io/library/busybox": {"latest": "<top layer's chain ID hex>"}}
    <id hex>.json           the config, byte for byte (so the image ID survives)
    <chain ID hex>/layer.tar  a layer, uncompressed: its sha256 is its diff ID

oci-archive, an OCI image layout in a tar, as `podman save --format
oci-archive`, skopeo's oci-archive: and `ctr export` write it:

    oci-layout              {"imageLayoutVersion": "1.0.0"}
    index.json              a manifest descriptor per name, annotated with the tag
                            (org.opencontainers.image.ref.name: "latest") and the
                            full name (io.containerd.image.name)
    blobs/sha256/<hex>      manifest, config and layers exactly as stored, so
                            every digest survives

Saving writes front to back (the output may be a pipe), metadata first.
RepoTags hold full names, as skopeo writes them: `docker load` reads them
as it reads Docker's short ones, and podman would put a short name under
localhost/. Layer directories are named by chain ID, which, like Docker's
v1 layer IDs, stands for a layer and all below it.
Loading reads the members of a seekable copy of the input by name, never
extracting any, verifies every byte, and records the images under the
store's lock only once all of them are complete; a broken archive records
nothing. A docker-archive becomes Docker schema 2 images whose layers are
gzip-compressed on the way in (what `docker push` sends and every registry
takes; the same tar always gives the same blob); its image IDs stay, its
manifest digests are new, as with `docker load`. An archive that
holds both formats (Docker 25's `docker save`) is read as the OCI layout,
which keeps the manifest digests.
"""

import hashlib
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from contextlib import contextmanager
from datetime import datetime
from typing import BinaryIO

from capsa import fastjson as json
from capsa.errors import FailedPrecondition, InvalidArgument, NotFound
from capsa.images import digest as digests
from capsa.images import manifest as manifests
from capsa.images import mediatypes, pull, reference, unpack
from capsa.images.importer import CHUNK, GzipLayer, failing, compression_of, open_compressed, read_head
from capsa.images.manifest import Descriptor
from capsa.images.store import Image, ImageStore
from capsa.record import field, record

DOCKER_ARCHIVE = "docker-archive"
OCI_ARCHIVE = "oci-archive"
FORMATS = (DOCKER_ARCHIVE, OCI_ARCHIVE)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_LAYOUT_VERSION = "1.0.0"
JSON_MAX = 32 << 20  # a manifest.json, index, manifest or config larger than this is refused
LINKS_MAX = 16  # symlinks and hardlinks followed to find one member
RECORD = tarfile.RECORDSIZE


@record(frozen=True)
class DockerEntry:
    """One image of a docker-archive's manifest.json; repo_tags normalised."""

    config: str
    repo_tags: list[str]
    layers: list[str]


@record
class _Loaded:
    manifest: str
    names: list[str] = field(default_factory=list)
    blobs: tuple[str, ...] = ()


# -- saving


def save(store: ImageStore, names: list[str], out: BinaryIO, fmt: str = DOCKER_ARCHIVE) -> None:
    """Write the images NAMES name to OUT as one tar stream in format FMT.
    A name without a tag saves every tag of that repository, as `docker
    save` does. Every name is resolved before anything is written."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown archive format {fmt!r}: use {' or '.join(FORMATS)}")
    selected = select(store, names)
    images = [(image, tags, manifests.parse_manifest(store.content.read(image.manifest), f"manifest {image.manifest}"))
              for image, tags in selected]  # fmt: skip
    for image, _, manifest in images:
        for desc in [manifest.config, *manifest.layers]:
            if not store.content.has(desc.digest):
                raise NotFound(f"failed to save image {image.id}: blob {desc.digest} is missing; pull it again")
    if fmt == DOCKER_ARCHIVE:
        _save_docker(store, images, out)
    else:
        _save_oci(store, images, out)


def select(store: ImageStore, names: list[str]) -> list[tuple[Image, list[str]]]:
    """The images NAMES name, each once, with the tags to save it under."""
    chosen: dict[str, tuple[Image, list[str]]] = {}
    for text in names:
        for image, tag in _resolve(store, text):
            _, tags = chosen.setdefault(image.id, (image, []))
            if tag and tag not in tags:
                tags.append(tag)
    return list(chosen.values())


def _resolve(store: ImageStore, text: str) -> list[tuple[Image, str | None]]:
    try:
        ref = reference.parse(text)
    except InvalidArgument:
        ref = None
    if ref is not None and "@" not in text and reference.split_tag(text)[1] is None:
        # A bare repository name: all its tags, as `docker save busybox`.
        tagged = [(image, tag) for image in store.list() for tag in image.tags
                  if reference.parse(tag).name == ref.name]  # fmt: skip
        if tagged:
            return sorted(tagged, key=lambda pair: pair[1])
    image = store.lookup(text)
    tag = str(ref) if ref is not None and not ref.digest and str(ref) in image.tags else None
    return [(image, tag)]


def _save_docker(store: ImageStore, images: list, out: BinaryIO) -> None:
    entries, repositories, layers = [], {}, {}
    for image, tags, manifest in images:
        config = manifests.parse_config(store.content.read(image.id), f"config {image.id}")
        chains = digests.chain_ids(config.diff_ids)
        paths = [f"{digests.hex_of(chain)}/layer.tar" for chain in chains]
        for desc, diff_id, path in zip(manifest.layers, config.diff_ids, paths):
            if path not in layers:  # measured now: a corrupt layer fails before anything is written
                layers[path] = (desc, _uncompressed_size(store, desc, diff_id))
        entries.append({"Config": f"{digests.hex_of(image.id)}.json", "RepoTags": tags or None, "Layers": paths})
        for ref in map(reference.parse, tags if chains else ()):
            repositories.setdefault(ref.name, {})[ref.tag] = digests.hex_of(chains[-1])
    with _TarStream(out, max(_epoch(image.created) for image, _, _ in images)) as tar:
        tar.add_bytes("manifest.json", json.dumps(entries).encode())
        if repositories:
            tar.add_bytes("repositories", json.dumps(repositories).encode())
        for image, _, _ in images:
            tar.add_bytes(f"{digests.hex_of(image.id)}.json", store.content.read(image.id))
        for path, (desc, size) in layers.items():
            tar.add_directory(posixpath.dirname(path))
            with store.content.open(desc.digest) as blob:
                tar.add_stream(path, unpack.decompressor(blob, desc.media_type), size)


def _uncompressed_size(store: ImageStore, desc: Descriptor, diff_id: str) -> int:
    """The length of LAYER's tar, read through once: a tar header needs it
    before the data. Its diff ID is checked on the way."""
    if unpack.MEDIA_TYPES.get(desc.media_type, "") is None:  # stored uncompressed
        actual, size = desc.digest, store.content.size(desc.digest)
    else:
        hasher, size = hashlib.sha256(), 0
        with store.content.open(desc.digest) as blob:
            source = unpack.decompressor(blob, desc.media_type)
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        actual = f"{digests.ALGORITHM}:{hasher.hexdigest()}"
    if actual != diff_id:
        raise FailedPrecondition(f"failed to save layer {desc.digest}: its content has diff ID {actual}, "
                                 f"the image config says {diff_id}; pull the image again")  # fmt: skip
    return size


def _save_oci(store: ImageStore, images: list, out: BinaryIO) -> None:
    descriptors, blobs = [], {}
    for image, tags, manifest in images:
        plat = manifests.parse_platform(image.platform) if image.platform.count("/") in (1, 2) else None
        base = {"mediaType": image.manifest_type, "digest": image.manifest,
                "size": store.content.size(image.manifest)}  # fmt: skip
        if plat is not None:
            base["platform"] = {"architecture": plat.architecture, "os": plat.os,
                                **({"variant": plat.variant} if plat.variant else {})}  # fmt: skip
        for tag in tags:
            ref = reference.parse(tag)
            descriptors.append({**base, "annotations": {CONTAINERD_NAME: str(ref), REF_NAME: ref.tag}})
        if not tags:
            descriptors.append(base)
        for desc in [Descriptor(image.manifest_type, image.manifest, base["size"]), manifest.config, *manifest.layers]:
            blobs.setdefault(desc.digest, desc.size)
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": descriptors}
    with _TarStream(out, max(_epoch(image.created) for image, _, _ in images)) as tar:
        tar.add_bytes("oci-layout", json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())
        tar.add_bytes("index.json", json.dumps(index).encode())
        tar.add_directory("blobs")
        tar.add_directory(f"blobs/{digests.ALGORITHM}")
        for digest, size in blobs.items():
            with store.content.open(digest) as blob:
                tar.add_stream(f"blobs/{digests.ALGORITHM}/{digests.hex_of(digest)}", blob, size)


def _epoch(created: str) -> int:
    """An RFC 3339 time in whole seconds since 1970 (0 if it is not one)."""
    try:
        return max(0, int(datetime.fromisoformat(re.sub(r"\.\d+", "", created).replace("Z", "+00:00")).timestamp()))
    except ValueError:
        return 0


class _TarStream:
    """A tar archive written front to back to OUT (which may be a pipe): a
    header from tarfile, then the data copied in chunks, then padding."""

    def __init__(self, out: BinaryIO, mtime: int):
        self.out = out
        self.mtime = mtime
        self.written = 0

    def __enter__(self) -> "_TarStream":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:  # two zero blocks end the archive; a failed one is left unended
            self._write(bytes(2 * tarfile.BLOCKSIZE))
            self._write(bytes(-self.written % RECORD))
            self.out.flush()

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def _header(self, name: str, kind: bytes, mode: int, size: int = 0) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, self.mtime
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def add_directory(self, name: str) -> None:
        self._header(name, tarfile.DIRTYPE, 0o755)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, tarfile.REGTYPE, 0o644, len(data))
        self._write(data + bytes(-len(data) % tarfile.BLOCKSIZE))

    def add_stream(self, name: str, source: BinaryIO, size: int) -> None:
        self._header(name, tarfile.REGTYPE, 0o644, size)
        left = size
        while left and (chunk := source.read(min(CHUNK, left))):
            self._write(chunk)
            left -= len(chunk)
        if left or source.read(1):
            raise FailedPrecondition(f"failed to save {name}: its content changed while it was being written")
        self._write(bytes(-size % tarfile.BLOCKSIZE))


# -- loading


def load(store: ImageStore, source: BinaryIO) -> list[str]:
    """Load the images of the docker-archive or oci-archive tar SOURCE
    (plain or compressed; it may be a pipe). Returns, per image, its names
    ("docker.io/library/busybox:latest"), or its ID if it has none."""
    with failing("failed to load images"), _seekable(store, source) as file:
        archive = Archive(file)
        with store.lock():  # garbage collection must not take the blobs before the images name them
            if archive.has("oci-layout"):
                loaded = _read_oci(store, archive)
            elif archive.has("manifest.json"):
                loaded = _read_docker(store, archive)
            else:
                raise InvalidArgument("the archive has neither manifest.json nor oci-layout: "
                                      "it is not a docker-archive nor an oci-archive")  # fmt: skip
            for item in loaded:  # everything unpacked and verified before the first image is recorded
                pull.unpack_missing(store, item.manifest)
            found = []
            for item in loaded:
                image = pull.install(store, item.manifest, [(name, "tag") for name in item.names], item.blobs)
                found += item.names or [image.id]
            return found


@contextmanager
def _seekable(store: ImageStore, source: BinaryIO):
    """SOURCE as a seekable file of uncompressed tar: itself if it is a
    plain tar in a regular file, else a copy in an unnamed temporary file
    under the store's root (the space a load needs is there anyway)."""
    start = _regular_file_offset(source)
    if start is not None:
        head = read_head(source)
        source.seek(start)
        if compression_of(head) is None:
            yield source
            return
    with tempfile.TemporaryFile(dir=store.root) as copy:
        with open_compressed(source) as tar_bytes:
            while chunk := tar_bytes.read(CHUNK):
                copy.write(chunk)
        copy.seek(0)
        yield copy


def _regular_file_offset(source: BinaryIO) -> int | None:
    try:
        if stat.S_ISREG(os.fstat(source.fileno()).st_mode) and source.seekable():
            return source.tell()
    except (OSError, AttributeError, ValueError):  # no file descriptor: a pipe-like object
        pass
    return None


class Archive:
    """The members of a tar in a seekable file, by normalised name. Only
    regular files are read, through read() and open(); nothing is ever
    written by a member's name, and a path from the archive's own metadata
    is looked up here, never on disk."""

    def __init__(self, file: BinaryIO):
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
        try:
            self.tar = tarfile.open(fileobj=file, mode="r:")
            self.members = {}
            for info in self.tar:
                # tarfile takes a cut-off header for the end of the archive;
                # a cut-off member's data is caught here.
                if info.isreg() and info.offset_data + info.size > end:
                    raise InvalidArgument(f"the archive is truncated: it ends inside {info.name!r}")
                if (name := _normalise(info.name)) is not None:
                    self.members[name] = info  # a later member of the same name wins, as tar extracts
        except tarfile.TarError as err:
            raise InvalidArgument(f"the input is not a tar archive: {err}") from None

    def has(self, name: str) -> bool:
        return name in self.members

    def member(self, path: str, what: str) -> tarfile.TarInfo:
        """The regular file PATH names, following links inside the archive."""
        name = member_path(path, what)
        for _ in range(LINKS_MAX):
            info = self.members.get(name)
            if info is None:
                raise InvalidArgument(f"{what} {path!r} is missing from the archive")
            if info.isreg():
                return info
            if info.issym():
                name = member_path(posixpath.join(posixpath.dirname(name), info.linkname), what)
            elif info.islnk():
                name = member_path(info.linkname, what)
            else:
                raise InvalidArgument(f"{what} {path!r} is not a regular file in the archive")
        raise InvalidArgument(f"{what} {path!r} is a chain of more than {LINKS_MAX} links")

    def read(self, path: str, what: str) -> bytes:
        """A small member, whole (a manifest.json, a config)."""
        info = self.member(path, what)
        if info.size > JSON_MAX:
            raise InvalidArgument(f"{what} {path!r} is {info.size} bytes, more than the {JSON_MAX} allowed")
        with self.tar.extractfile(info) as f:
            return f.read()

    def open(self, info: tarfile.TarInfo) -> BinaryIO:
        return self.tar.extractfile(info)


def member_path(text, what: str) -> str:
    """TEXT as a normalised member name ("a/b.tar" for "./a//b.tar");
    InvalidArgument if it is absolute or climbs out with ".."."""
    name = _normalise(text) if isinstance(text, str) else None
    if name is None:
        raise InvalidArgument(f"{what} {text!r} is not a path inside the archive")
    return name


def _normalise(text: str) -> str | None:
    if not text or "\0" in text or text.startswith("/"):
        return None
    name = posixpath.normpath(text)
    return None if name == "." or name == ".." or name.startswith("../") else name


def _read_docker(store: ImageStore, archive: Archive) -> list[_Loaded]:
    """Put a docker-archive's configs and layers (gzip-compressed) in the
    content store and write a Docker schema 2 manifest for each image."""
    loaded: dict[str, _Loaded] = {}
    layers: dict[str, tuple[Descriptor, str]] = {}  # member -> (stored blob, its diff ID)
    for number, entry in enumerate(parse_docker_manifest(archive.read("manifest.json", "file")), 1):
        body = archive.read(entry.config, "config")
        config = manifests.parse_config(body, f"config {entry.config}")
        if len(config.diff_ids) != len(entry.layers):
            raise InvalidArgument(f"image {number} of manifest.json has {len(entry.layers)} layers, "
                                  f"its config {len(config.diff_ids)} diff IDs")  # fmt: skip
        config_desc = Descriptor(mediatypes.DOCKER_CONFIG, store.content.put(body), len(body))
        descs = [_docker_layer(store, archive, path, diff_id, layers)
                 for path, diff_id in zip(entry.layers, config.diff_ids)]  # fmt: skip
        manifest = {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST, "config": config_desc.to_json(),
                    "layers": [desc.to_json() for desc in descs]}  # fmt: skip
        digest = store.content.put(json.dumps(manifest).encode())
        item = loaded.setdefault(digest, _Loaded(digest))
        item.names += [name for name in entry.repo_tags if name not in item.names]
    return list(loaded.values())


def _docker_layer(store: ImageStore, archive: Archive, path: str, diff_id: str, done: dict) -> Descriptor:
    info = archive.member(path, "layer")
    if info.name not in done:
        layer = GzipLayer(store)
        try:
            # Docker reads a compressed layer.tar too; its diff ID is of the tar.
            with archive.open(info) as member, open_compressed(member) as source:
                while chunk := source.read(CHUNK):
                    layer.write(chunk)
            layer.finish()
            if layer.diff_id != diff_id:  # checked before it is stored
                raise _diff_id_mismatch(path, layer.diff_id, diff_id)
            done[info.name] = (layer.store(store, mediatypes.DOCKER_LAYER), layer.diff_id)
        finally:
            layer.close()
    desc, actual = done[info.name]
    if actual != diff_id:
        raise _diff_id_mismatch(path, actual, diff_id)
    return desc


def _diff_id_mismatch(path: str, actual: str, expected: str) -> InvalidArgument:
    return InvalidArgument(f"layer {path!r} failed verification: its content has diff ID {actual}, "
                           f"the image config says {expected}")  # fmt: skip


def parse_docker_manifest(body: bytes) -> list[DockerEntry]:
    """A docker-archive's manifest.json, checked: member paths that stay
    inside the archive, RepoTags that are NAME:TAG references."""
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise InvalidArgument(f"failed to parse manifest.json: {err}") from None
    if not isinstance(doc, list) or not doc:
        raise InvalidArgument("failed to parse manifest.json: not a non-empty list of images")
    entries = []
    for number, raw in enumerate(doc, 1):
        what = f"image {number} of manifest.json"
        if not isinstance(raw, dict):
            raise InvalidArgument(f"failed to parse manifest.json: {what} is not an object")
        layers, tags = raw.get("Layers"), raw.get("RepoTags") or []
        if not isinstance(layers, list) or not isinstance(tags, list):
            raise InvalidArgument(f"failed to parse manifest.json: {what} needs a Layers list "
                                  "(and RepoTags, if any, as a list)")  # fmt: skip
        entries.append(DockerEntry(member_path(raw.get("Config"), f"{what}: config"),
                                   [_repo_tag(tag, what) for tag in tags],
                                   [member_path(layer, f"{what}: layer") for layer in layers]))  # fmt: skip
    return entries


def _repo_tag(text, what: str) -> str:
    ref = reference.parse(text) if isinstance(text, str) else None
    if ref is None or ref.digest:
        raise InvalidArgument(f"failed to parse manifest.json: {what} has RepoTag {text!r}, "
                              "which is not NAME:TAG")  # fmt: skip
    return str(ref)


def _read_oci(store: ImageStore, archive: Archive) -> list[_Loaded]:
    """Copy the blobs of an OCI layout's images into the content store,
    verified: one image per manifest index.json names (the host platform's
    manifest of a nested index)."""
    layout = manifests.loads(archive.read("oci-layout", "file"), "oci-layout")
    if not isinstance(layout.get("imageLayoutVersion"), str):
        raise InvalidArgument("failed to parse oci-layout: no imageLayoutVersion")
    loaded: dict[str, _Loaded] = {}
    for desc in manifests.parse_index(archive.read("index.json", "file"), "index.json"):
        name = name_from_annotations(desc.annotations)
        blobs: tuple[str, ...] = ()
        if desc.media_type in mediatypes.INDEXES:
            nested = manifests.parse_index(_blob(store, archive, desc, keep=True), f"index {desc.digest}")
            blobs, desc = (desc.digest,), manifests.select(nested, manifests.host(), f"index {desc.digest}")
        elif desc.media_type not in mediatypes.MANIFESTS:
            continue  # not an image (an artifact, a signature)
        if desc.digest not in loaded:
            _image_blobs(store, archive, desc)
        item = loaded.setdefault(desc.digest, _Loaded(desc.digest, blobs=blobs))
        if name and name not in item.names:
            item.names.append(name)
    if not loaded:
        raise InvalidArgument("index.json names no image manifest")
    return list(loaded.values())


def _image_blobs(store: ImageStore, archive: Archive, desc: Descriptor) -> None:
    manifest = manifests.parse_manifest(_blob(store, archive, desc, keep=True), f"manifest {desc.digest}")
    config = manifests.parse_config(_blob(store, archive, manifest.config, keep=True),
                                    f"config {manifest.config.digest}")  # fmt: skip
    if len(config.diff_ids) != len(manifest.layers):
        raise InvalidArgument(f"image {desc.digest} is broken: its manifest has {len(manifest.layers)} "
                              f"layers, its config {len(config.diff_ids)} diff IDs")  # fmt: skip
    for layer in manifest.layers:
        _blob(store, archive, layer)


def _blob(store: ImageStore, archive: Archive, desc: Descriptor, keep: bool = False) -> bytes | None:
    """Copy blobs/sha256/<hex> into the content store, verified against
    DESC's digest and size (only hashed if the store has it already);
    KEEP: return its bytes (a manifest, a config)."""
    path = f"blobs/{digests.ALGORITHM}/{digests.hex_of(desc.digest)}"
    info = archive.member(path, "blob")
    if info.size != desc.size:
        raise InvalidArgument(f"blob {desc.digest} is {info.size} bytes, its descriptor says {desc.size}")
    if keep and info.size > JSON_MAX:
        raise InvalidArgument(f"blob {desc.digest} is {info.size} bytes, more than the {JSON_MAX} allowed")
    with archive.open(info) as source:
        if store.content.has(desc.digest):
            hasher = hashlib.sha256()
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
            if f"{digests.ALGORITHM}:{hasher.hexdigest()}" != desc.digest:
                raise InvalidArgument(f"blob {desc.digest} failed verification: its content has another digest")
        else:
            with store.content.ingest(desc.digest, desc.size) as ingest:
                ingest.restart()
                while chunk := source.read(CHUNK):
                    ingest.write(chunk)
                ingest.commit()
    return store.content.read(desc.digest) if keep else None


def name_from_annotations(annotations: dict) -> str | None:
    """The name an OCI layout gives a manifest, normalised: containerd's
    io.containerd.image.name, else org.opencontainers.image.ref.name when
    it is a reference (it holds "/", ":" or "@", containerd's test). A bare
    tag ("latest") has no repository to be a tag of: the image is loaded
    untagged, as `ctr import` and `docker load` do (podman would call it
    localhost/latest:latest). A name with a digest names nothing either."""
    text = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
    if not isinstance(text, str) or not text:
        return None
    if not annotations.get(CONTAINERD_NAME) and not any(c in text for c in "/:@"):
        return None
    try:
        ref = reference.parse(text)
    except InvalidArgument as err:
        raise InvalidArgument(f"index.json names an image {text!r}: {err}") from None
    return None if ref.digest else str(ref)
