"""`capsa import`: a root filesystem (a directory, or a tarball as `docker
import` takes it) becomes a one-layer image.

A directory is written as a PAX tar the way `tar -C DIR -c .` lists it
("./", "./etc/", "./etc/passwd", in sorted order), with numeric owners,
modes, whole-second mtimes, symlinks, hardlinks, devices, fifos and extended
attributes; sockets are skipped, as tar does. A tarball (plain, gzip,
zstd, bzip2 or xz) is the layer as it is. Either way the uncompressed bytes give the
diff ID and are stored gzip-compressed; the OCI config and manifest are
written around them and the image is recorded under the store's lock:

    image = import_rootfs(store, "rootfs/", reference.parse("my/app:1"), manifest.host(),
                          changes=['CMD ["/bin/sh"]', "ENV A=b"])

CHANGES are Dockerfile instructions applied to the config, as `docker
import -c` does: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER,
VOLUME and WORKDIR (no variable substitution).
"""

import bz2
import hashlib
import io
import lzma
import os
import posixpath
import queue
import shlex
import stat
import sys
import tarfile
import tempfile
import threading
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import BinaryIO

from capsa import fastjson as json
from capsa.errors import CapsaError, InvalidArgument, NotFound, Unsupported
from capsa.images import digest as digests
from capsa.images import mediatypes, pull, unpack
from capsa.images.manifest import Descriptor, Platform
from capsa.images.reference import Reference
from capsa.images.store import Image, ImageStore

CHUNK = 1 << 20
# Go's gzip.DefaultCompression, which `docker push` uses: the blobs are the
# size a registry expects, at a fraction of level 9's time.
GZIP_LEVEL = 6
CREATED_BY = "capsa import"
# Host-local attributes that are not part of a root filesystem: the host's
# SELinux label and overlayfs' bookkeeping (moby leaves them out too).
SKIPPED_XATTRS = ("security.selinux", "trusted.overlay.")
# Compressed streams by their first bytes.
_MAGICS = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
MAGIC_LENGTH = 6
CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER",
                       "VOLUME", "WORKDIR")  # fmt: skip


class GzipLayer:
    """An uncompressed layer tar, written in with write() and ended with
    finish(): hashed (the diff ID) and gzip-compressed into a temporary
    file under the store's root, which `store()` moves into the content
    store; close() always.

    Hashing and compressing run in a thread of their own, beside whatever
    produces the tar: zlib and hashlib let go of the GIL, so on two cores
    building a tar costs little more than compressing it. The gzip stream
    has no name and no time: the same tar always makes the same blob."""

    def __init__(self, store: ImageStore):
        self.file = tempfile.TemporaryFile(dir=store.root)
        self.diff_hash = hashlib.sha256()
        self.blob_hash = hashlib.sha256()
        self.size = 0
        self._pending = bytearray()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._compress, name="gzip", daemon=True)
        self._worker.start()

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= CHUNK:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(bytes(self._pending))
        self._pending.clear()

    def _compress(self) -> None:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        try:
            while (chunk := self._chunks.get()) is not None:
                self.diff_hash.update(chunk)
                self._out(compressor.compress(chunk))
            self._out(compressor.flush())
        except BaseException as err:  # noqa: BLE001 - raised in the writing thread
            self._error = err
            while self._chunks.get() is not None:  # keep the writer from blocking
                pass

    def _out(self, data: bytes) -> None:
        self.blob_hash.update(data)
        self.file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """The tar is complete: wait for the last of it to be compressed."""
        if self._worker.is_alive():
            self._hand_over()
            self._chunks.put(None)
            self._worker.join()
        if self._error is not None:
            raise self._error

    @property
    def diff_id(self) -> str:
        """The tar's digest (after finish())."""
        return f"{digests.ALGORITHM}:{self.diff_hash.hexdigest()}"

    def store(self, store: ImageStore, media_type: str) -> Descriptor:
        """Put the finished gzip blob in the content store."""
        self.finish()
        digest = f"{digests.ALGORITHM}:{self.blob_hash.hexdigest()}"
        if not store.content.has(digest):
            self.file.seek(0)
            with store.content.ingest(digest, self.size) as ingest:
                ingest.restart()
                while chunk := self.file.read(CHUNK):
                    ingest.write(chunk)
                ingest.commit()
        return Descriptor(media_type, digest, self.size)

    def close(self) -> None:
        if self._worker.is_alive():  # abandoned: let the thread end
            self._error = self._error or InvalidArgument("layer abandoned")
            self._chunks.put(None)
            self._worker.join()
        self.file.close()


# -- the layer


def write_tree(root: str, out) -> None:
    """Write directory ROOT as a PAX tar to OUT (anything with write()).

    The walk opens every directory and file relative to its parent's file
    descriptor, without following symlinks, so a tree that changes while it
    is read (a container's rootfs) cannot point it at the host's files."""
    links: dict[tuple[int, int], str] = {}
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            st = os.fstat(root_fd)
            tar.addfile(_header(".", st, f"/proc/self/fd/{root_fd}", links))
            _write_dir(tar, root_fd, ".", links)
    finally:
        os.close(root_fd)


def _write_dir(tar: tarfile.TarFile, dir_fd: int, prefix: str, links: dict) -> None:
    # Sorted by bytes, so the same tree always gives the same tar.
    for name in sorted(os.listdir(dir_fd), key=os.fsencode):
        member = f"{prefix}/{name}"
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISSOCK(st.st_mode):
            continue  # a tar cannot hold a socket
        info = _header(member, st, f"/proc/self/fd/{dir_fd}/{name}", links)
        if stat.S_ISDIR(st.st_mode):
            tar.addfile(info)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                _write_dir(tar, fd, member, links)
            finally:
                os.close(fd)
        elif info.type == tarfile.SYMTYPE:
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            tar.addfile(info)
        elif info.isreg():
            _write_file(tar, info, dir_fd, name, st)
        else:
            tar.addfile(info)


def _write_file(tar: tarfile.TarFile, info: tarfile.TarInfo, dir_fd: int, name: str,
                st: os.stat_result) -> None:  # fmt: skip
    # O_NONBLOCK: had the file been swapped for a fifo, opening it must not hang.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with open(fd, "rb") as f:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise InvalidArgument(f"failed to read {info.name}: it changed while it was being read")
        tar.addfile(info, f)


def _header(name: str, st: os.stat_result, path: str, links: dict) -> tarfile.TarInfo:
    """The tar header of one file: numeric owners only (the names a host
    gives its uids mean nothing in the image), mtime to the second."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    kind = stat.S_IFMT(st.st_mode)
    if kind != stat.S_IFDIR and st.st_nlink > 1:
        first = links.setdefault((st.st_dev, st.st_ino), name)
        if first != name:
            info.type, info.linkname = tarfile.LNKTYPE, first
            return info  # a hardlink carries no data nor attributes of its own
    if kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind == stat.S_IFREG:
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif kind == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    for key, value in _xattrs(path).items():
        # tarfile writes a value that is not UTF-8 as raw bytes (hdrcharset=BINARY).
        info.pax_headers[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
    return info


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # a filesystem without xattrs
        return {}
    found = {}
    for key in sorted(names):
        if key.startswith(SKIPPED_XATTRS):
            continue
        try:
            found[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile
    return found


def layer_from_dir(store: ImageStore, root: str) -> GzipLayer:
    """Directory ROOT as a gzip layer (not yet in the content store)."""
    layer = GzipLayer(store)
    try:
        write_tree(root, layer)
        layer.finish()
    except BaseException:
        layer.close()
        raise
    return layer


def layer_from_tarball(store: ImageStore, source: BinaryIO) -> GzipLayer:
    """The tarball SOURCE (plain, gzip, zstd, bzip2 or xz) as a gzip layer
    (not yet in the content store): its bytes as they are, uncompressed."""
    layer = GzipLayer(store)
    try:
        with open_compressed(source) as tar_bytes:
            while chunk := tar_bytes.read(CHUNK):
                layer.write(chunk)
        layer.finish()
    except BaseException:
        layer.close()
        raise
    return layer


def compression_of(head: bytes) -> str | None:
    """"gzip", "zstd", "bzip2" or "xz" by a stream's first bytes; None: plain."""
    return next((kind for magic, kind in _MAGICS.items() if head.startswith(magic)), None)


def read_head(source: BinaryIO) -> bytes:
    """The first MAGIC_LENGTH bytes of SOURCE (fewer only at its end): a
    pipe may hand them out a few at a time."""
    head = b""
    while len(head) < MAGIC_LENGTH and (more := source.read(MAGIC_LENGTH - len(head))):
        head += more
    return head


def open_compressed(source: BinaryIO) -> BinaryIO:
    """SOURCE's bytes, decompressed if compression_of() names their
    compression (what `docker load` and `docker import` take); SOURCE may
    be a pipe."""
    head = read_head(source)
    source = _Rewound(head, source)
    kind = compression_of(head)
    if kind == "gzip":
        return io.BufferedReader(unpack.decompressor(source, mediatypes.OCI_LAYER_GZIP), CHUNK)
    if kind == "zstd":
        return io.BufferedReader(unpack.decompressor(source, mediatypes.OCI_LAYER_ZSTD), CHUNK)
    if kind == "bzip2":
        return bz2.BZ2File(source)
    if kind == "xz":
        return lzma.LZMAFile(source)
    return io.BufferedReader(source, CHUNK)


class _Rewound(unpack.Reader):
    """SOURCE with HEAD, already read from it, put back in front."""

    def __init__(self, head: bytes, source: BinaryIO):
        self._head = head
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._source.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._source.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data


# -- the config


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def image_config(platform: Platform, diff_ids: list[str], created: str, message: str = "",
                 changes: list[str] = ()) -> dict:  # fmt: skip
    """The OCI image config of an imported root filesystem."""
    history = {"created": created, "created_by": CREATED_BY}
    if message:
        history["comment"] = message
    config = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    config.update(created=created, config=apply_changes({}, changes),
                  rootfs={"type": "layers", "diff_ids": list(diff_ids)}, history=[history])  # fmt: skip
    return config


def apply_changes(config: dict, changes: list[str]) -> dict:
    """CONFIG (an image config's "config" object) with the Dockerfile
    instructions CHANGES applied, in order; a new dict."""
    config = dict(config)
    for change in changes:
        instruction, args = parse_change(change)
        _CHANGES[instruction](config, args, change)
    return config


def parse_change(change: str) -> tuple[str, str]:
    """("ENV", "A=b") for "env A=b"; InvalidArgument for an instruction
    `docker import -c` does not take."""
    instruction, _, args = change.strip().partition(" ")
    instruction = instruction.upper()
    if instruction not in CHANGE_INSTRUCTIONS:
        raise InvalidArgument(f"invalid change {change!r}: {instruction or 'an empty line'} is not a valid "
                              f"change command (use {', '.join(CHANGE_INSTRUCTIONS)})")  # fmt: skip
    return instruction, args.strip()


def _command(args: str, change: str) -> list[str]:
    """The exec form (a JSON array of strings) or the shell form."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(word, str) for word in value):
            return value
    if not args:
        raise InvalidArgument(f"invalid change {change!r}: it needs an argument")
    return ["/bin/sh", "-c", args]


def _words(args: str, change: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError as err:
        raise InvalidArgument(f"invalid change {change!r}: {err}") from None


def _pairs(args: str, change: str) -> list[tuple[str, str]]:
    """KEY=VALUE words; the old one-pair form "KEY VALUE…" too."""
    words = _words(args, change)
    if words and "=" not in words[0]:
        key, _, value = args.strip().partition(" ")
        if not value.strip():
            raise InvalidArgument(f"invalid change {change!r}: it needs a value")
        return [(key, value.strip())]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"invalid change {change!r}: {word!r} is not KEY=VALUE")
        pairs.append((key, value))
    if not pairs:
        raise InvalidArgument(f"invalid change {change!r}: it needs KEY=VALUE")
    return pairs


def _set_cmd(config: dict, args: str, change: str) -> None:
    config["Cmd"] = _command(args, change)


def _set_entrypoint(config: dict, args: str, change: str) -> None:
    config["Entrypoint"] = _command(args, change)


def _set_env(config: dict, args: str, change: str) -> None:
    env = list(config.get("Env") or [])
    for key, value in _pairs(args, change):
        env = [item for item in env if item.partition("=")[0] != key] + [f"{key}={value}"]
    config["Env"] = env


def _set_label(config: dict, args: str, change: str) -> None:
    config["Labels"] = {**(config.get("Labels") or {}), **dict(_pairs(args, change))}


def _set_expose(config: dict, args: str, change: str) -> None:
    ports = dict(config.get("ExposedPorts") or {})
    for word in _words(args, change) or [""]:
        port, _, proto = word.partition("/")
        if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
            raise InvalidArgument(f"invalid change {change!r}: {word!r} is not PORT[/tcp|udp|sctp]")
        ports[f"{int(port)}/{proto or 'tcp'}"] = {}
    config["ExposedPorts"] = ports


def _set_volume(config: dict, args: str, change: str) -> None:
    paths = _command(args, change) if args.startswith("[") else _words(args, change)
    if paths[:2] == ["/bin/sh", "-c"] or not paths:
        raise InvalidArgument(f"invalid change {change!r}: want paths or a JSON array of paths")
    config["Volumes"] = {**(config.get("Volumes") or {}), **{path: {} for path in paths}}


def _set_single(key: str):
    def setter(config: dict, args: str, change: str) -> None:
        if not args:
            raise InvalidArgument(f"invalid change {change!r}: it needs an argument")
        config[key] = args

    return setter


def _set_workdir(config: dict, args: str, change: str) -> None:
    if not args:
        raise InvalidArgument(f"invalid change {change!r}: it needs a path")
    # A relative WORKDIR is relative to the one before, as in a Dockerfile.
    config["WorkingDir"] = posixpath.normpath(posixpath.join("/", config.get("WorkingDir") or "/", args))


_CHANGES = {"CMD": _set_cmd, "ENTRYPOINT": _set_entrypoint, "ENV": _set_env, "EXPOSE": _set_expose,
            "LABEL": _set_label, "STOPSIGNAL": _set_single("StopSignal"), "USER": _set_single("User"),
            "VOLUME": _set_volume, "WORKDIR": _set_workdir}  # fmt: skip


# -- the image


def import_rootfs(store: ImageStore, source: str, ref: Reference | None, platform: Platform,
                  message: str = "", changes: list[str] = ()) -> Image:  # fmt: skip
    """Make a one-layer image of SOURCE (a directory, a tarball's path, or
    "-" for a tarball on stdin), tagged REF if given, else dangling."""
    if ref is not None and (ref.digest or not ref.tag):
        raise InvalidArgument(f"failed to import {source}: cannot name the image {ref}: give NAME[:TAG]")
    if source.startswith(("http://", "https://")):
        raise Unsupported(f"failed to import {source}: importing from a URL is not supported")
    apply_changes({}, changes)  # a bad change fails before any work
    with failing(f"failed to import {source}"):
        layer = _read_layer(store, source)
        try:
            created = now_rfc3339()
            config = json.dumps(image_config(platform, [layer.diff_id], created, message, changes)).encode()
            with store.lock():
                # Into the content store only under the lock, so that garbage
                # collection cannot take blobs no image names yet.
                desc = layer.store(store, mediatypes.OCI_LAYER_GZIP)
                config_digest = store.content.put(config)
                manifest = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                            "config": Descriptor(mediatypes.OCI_CONFIG, config_digest, len(config)).to_json(),
                            "layers": [desc.to_json()]}  # fmt: skip
                manifest_digest = store.content.put(json.dumps(manifest).encode())
                names = [(str(ref), "tag")] if ref is not None else []
                return pull.install(store, manifest_digest, names)
        finally:
            layer.close()


def _read_layer(store: ImageStore, source: str) -> GzipLayer:
    if source == "-":
        return layer_from_tarball(store, sys.stdin.buffer)
    if not os.path.lexists(source):
        raise NotFound("no such file or directory")
    if os.path.isdir(source):
        return layer_from_dir(store, source)
    with open(source, "rb") as f:
        return layer_from_tarball(store, f)


@contextmanager
def failing(what: str):
    """Errors inside as one line, "WHAT: why": a CapsaError keeps its class,
    a broken tar is InvalidArgument, an OSError a plain CapsaError (used by
    archive.py too)."""
    try:
        yield
    except CapsaError as err:
        raise type(err)(f"{what}: {err}") from err
    except (tarfile.TarError, EOFError) as err:
        raise InvalidArgument(f"{what}: {err}") from err
    except OSError as err:  # the machine's failure, not the input's
        where = f": {err.filename}" if err.filename else ""
        raise CapsaError(f"{what}: {err.strerror or err}{where}") from err
