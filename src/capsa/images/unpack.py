"""Layer unpacking: a layer blob's tar stream written into a directory.

Two shapes, as containerd makes them:

- overlay=True: DEST (empty) becomes one overlayfs lowerdir. Whiteouts keep
  overlayfs's own encoding: `.wh.NAME` becomes a 0:0 character device NAME,
  `.wh..wh..opq` the xattr trusted.overlay.opaque=y on its directory.
- overlay=False: the layer is applied onto a flattened tree (the copying
  fallback where overlayfs is unavailable): `.wh.NAME` removes NAME, and an
  opaque directory loses, at the end of the layer, everything this layer did
  not itself put in it.

A layer is hostile input. Names are resolved lexically (".." may not climb
above DEST, absolute names are refused), then walked one component at a time
with directory fds opened O_NOFOLLOW, and every entry is created, changed or
removed relative to its parent's fd. A symlink in DEST, whichever layer put
it there, is therefore never followed by a write (containerd's
CVE-2021-32760 was a chmod that followed one). Entries that would leave DEST
raise InvalidArgument before anything is written for them.

The stream is read once, front to back (it may be a pipe fed by a
download), through a small tar reader of our own: ustar, pax (path,
linkpath, size, uid, gid, mtime, atime, SCHILY.xattr.*) and GNU long names,
strict where Go's archive/tar is strict. Owners are applied only when
running as root, like GNU tar. Xattrs trusted.overlay.* / user.overlay.* from
the tar are dropped: a layer speaks to overlayfs through whiteouts only.
"""

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import typing
import zlib

from capsa.errors import CapsaError, InvalidArgument, Unsupported
from capsa.images import mediatypes
from capsa.record import record

CHUNK = 1 << 20  # uncompressed bytes per read, and per write of file content
INPUT_CHUNK = 256 << 10  # compressed bytes per read of the source
BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
SPECIAL_MAX = 1 << 20  # pax headers and GNU long names, as Go caps them
PATH_MAX = 4096
NAME_MAX = 255
# Deeper trees would break every recursive walker that meets them later
# (shutil.rmtree, os.walk: Python's recursion limit is 1000).
DEPTH_MAX = 512

_GZIP = "gzip"
_ZSTD = "zstd"
# Layer media type -> compression; the nondistributable ones and Docker's
# uncompressed and zstd ones are rare but still met in registries.
MEDIA_TYPES = {
    mediatypes.OCI_LAYER: None, mediatypes.OCI_LAYER_GZIP: _GZIP, mediatypes.OCI_LAYER_ZSTD: _ZSTD,
    mediatypes.DOCKER_LAYER: _GZIP, mediatypes.DOCKER_FOREIGN_LAYER: _GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": None,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": _GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": _ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": _ZSTD,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": None,
}  # fmt: skip

# Entry kinds: the tar typeflags we write ("0", "\0" and "7" all become REG).
REG, LINK, SYMLINK, CHR, BLK, DIR, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_KINDS = {b"0": REG, b"\0": REG, b"7": REG, b"1": LINK, b"2": SYMLINK, b"3": CHR, b"4": BLK,
          b"5": DIR, b"6": FIFO}  # fmt: skip
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"
_XATTR = b"SCHILY.xattr."
_OVERLAY_XATTRS = (b"trusted.overlay.", b"user.overlay.")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ID_MAX = (1 << 32) - 2  # (uid_t)-1 means "unchanged" to chown
_SECONDS_MAX = 1 << 40  # timestamps are clamped to what utimensat takes


@record(frozen=True)
class Unpacked:
    """What unpacking a layer measured of its uncompressed tar stream."""

    diff_id: str  # "sha256:<hex>" of every uncompressed byte, end padding included
    size: int  # uncompressed bytes


def unpack(source: typing.BinaryIO, media_type: str, dest: str, *, overlay: bool) -> Unpacked:
    """Write the layer read from SOURCE (the blob as stored, compressed per
    MEDIA_TYPE) into the existing directory DEST, reading SOURCE to its end.

    Raises InvalidArgument for a broken stream or a hostile entry,
    Unsupported for an unknown media type or entry type, CapsaError for a
    filesystem failure. On any error DEST is left half-written: the caller
    removes it. Verifying diff_id against the image config is the caller's.

        with open(blob, "rb") as source:
            unpacked = unpack(source, OCI_LAYER_GZIP, directory, overlay=True)
    """
    hasher = hashlib.sha256()
    reader = TarReader(decompressor(source, media_type), hasher)
    try:
        layer = Layer(dest, overlay)
    except OSError as err:
        raise CapsaError(f"failed to open layer directory {dest}: {err.strerror}") from err
    entry = None
    try:
        for entry in reader.entries():
            layer.add(entry, reader)
            entry = None
        reader.drain()
        layer.finish()
    except OSError as err:
        where = f" entry {_show(entry.name)}" if entry else ""
        raise CapsaError(f"failed to unpack layer{where}: {err.strerror or err}") from err
    finally:
        layer.close()
    return Unpacked("sha256:" + hasher.hexdigest(), reader.size)


def decompressor(source: typing.BinaryIO, media_type: str) -> typing.BinaryIO:
    """A readable binary file of SOURCE's uncompressed tar stream. Reading it
    raises InvalidArgument("broken layer: ...") for corrupt or truncated
    input; its end is the end of SOURCE."""
    if media_type not in MEDIA_TYPES:
        raise Unsupported(f"unsupported layer media type {media_type}")
    compression = MEDIA_TYPES[media_type]
    if compression == _GZIP:
        return GzipReader(source)
    if compression == _ZSTD:
        return ZstdReader(source)
    return source


def _broken(why: str) -> InvalidArgument:
    return InvalidArgument(f"broken layer: {why}")


def _show(name: bytes) -> str:
    """NAME quoted on one line, whatever bytes it holds."""
    return json.dumps(name.decode("utf-8", "backslashreplace"), ensure_ascii=False)


class Reader(io.RawIOBase):
    """A read-only stream whose subclasses implement read()."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class GzipReader(Reader):
    """gzip through zlib, member after member (pigz and `cat a.gz b.gz` make
    several); zero padding between members is allowed, as gzip(1) does."""

    def __init__(self, source: typing.BinaryIO):
        self._source = source
        self._inflate = zlib.decompressobj(31)
        self._input = b""
        self._in_member = False
        self._members = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while size:
            if not self._in_member:
                self._input = self._input.lstrip(b"\0")
                self._in_member = bool(self._input)
            if self._input:
                data = self._inflate_some(size)
                if data:
                    return data
                continue
            self._input = self._source.read(INPUT_CHUNK)
            if not self._input:
                return self._at_end()
        return b""

    def _inflate_some(self, size: int) -> bytes:
        try:
            data = self._inflate.decompress(self._input, size)
        except zlib.error as err:
            raise _broken(f"gzip: {err}") from err
        if self._inflate.eof:  # one member done (its CRC and length checked)
            self._input = self._inflate.unused_data
            self._inflate = zlib.decompressobj(31)
            self._in_member = False
            self._members += 1
        else:
            self._input = self._inflate.unconsumed_tail
        return data

    def _at_end(self) -> bytes:
        if self._in_member:
            raise _broken("gzip: unexpected end of stream")
        if not self._members:
            raise _broken("gzip: empty stream")
        return b""


class ZstdReader(Reader):
    """zstd through the zstandard package's stream reader, which silently
    stops at a truncated frame; the compressed bytes are followed frame by
    frame (ZstdFrames) to tell a truncated stream from a finished one."""

    def __init__(self, source: typing.BinaryIO):
        import zstandard  # the engine's dependency, not the runtime's

        self._error = zstandard.ZstdError
        self._frames = ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _Observed(source, self._frames), read_size=INPUT_CHUNK, read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        try:
            data = self._reader.read(size)
        except self._error as err:
            raise _broken(f"zstd: {err}") from err
        if not data and size:
            self._frames.check_end()
        return data


class _Observed:
    """SOURCE, with every byte read also shown to FRAMES."""

    def __init__(self, source: typing.BinaryIO, frames: "ZstdFrames"):
        self._source = source
        self._frames = frames

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._frames.feed(data)
        return data


class ZstdFrames:
    """Follows zstd's framing (RFC 8878: frame header, 3-byte block headers,
    optional checksum, skippable frames) without decompressing anything."""

    def __init__(self):
        self._want = 4  # bytes of the next structure to collect
        self._parse = self._magic
        self._held = b""
        self._skip = 0  # bytes of block content (or skippable frame) to pass over
        self._checksum = 0  # bytes after the current frame's last block
        self._frames = 0

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            step = min(self._want - len(self._held), len(data) - pos)
            self._held += data[pos : pos + step]
            pos += step
            if len(self._held) == self._want:
                held, self._held = self._held, b""
                self._parse(held)

    def check_end(self) -> None:
        if self._held or self._skip or self._parse != self._magic:
            raise _broken("zstd: unexpected end of stream")
        if not self._frames:
            raise _broken("zstd: empty stream")

    def _expect(self, size: int, parse) -> None:
        self._want, self._parse = size, parse

    def _magic(self, held: bytes) -> None:
        magic = int.from_bytes(held, "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            self._expect(4, self._skippable)
        elif magic == 0xFD2FB528:
            self._expect(1, self._descriptor)
        else:
            raise _broken("zstd: unknown frame magic")

    def _skippable(self, held: bytes) -> None:
        self._skip = int.from_bytes(held, "little")
        self._expect(4, self._magic)

    def _descriptor(self, held: bytes) -> None:
        fhd = held[0]
        single_segment = fhd >> 5 & 1
        self._checksum = 4 if fhd & 0x04 else 0
        rest = (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3]
        rest += (single_segment, 2, 4, 8)[fhd >> 6]
        self._skip = rest
        self._expect(3, self._block)

    def _block(self, held: bytes) -> None:
        header = int.from_bytes(held, "little")
        kind, size = header >> 1 & 3, header >> 3
        if kind == 3:
            raise _broken("zstd: reserved block type")
        self._skip = 1 if kind == 1 else size
        if header & 1:  # the frame's last block
            self._frames += 1
            if self._checksum:
                self._expect(self._checksum, lambda _: self._expect(4, self._magic))
                return
            self._expect(4, self._magic)


class Entry:
    """One tar member, with pax and GNU extensions applied."""

    __slots__ = ("name", "kind", "size", "mode", "uid", "gid", "mtime", "atime", "link", "major",
                 "minor", "xattrs")  # fmt: skip

    def __init__(self, name, kind, size, mode, uid, gid, mtime, link, major, minor):
        self.name, self.kind, self.size, self.mode = name, kind, size, mode
        self.uid, self.gid, self.mtime, self.atime = uid, gid, mtime, mtime
        self.link, self.major, self.minor = link, major, minor
        self.xattrs: dict[bytes, bytes] | None = None


class TarReader:
    """Tar members read front to back from STREAM in large chunks; every
    byte read goes through HASHER and counts in `size`."""

    def __init__(self, stream: typing.BinaryIO, hasher):
        self._stream = stream
        self._hash = hasher
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current member not yet consumed
        self._padding = 0  # and the zeros that round it up to a block
        self.size = 0

    def entries(self) -> typing.Iterator[Entry]:
        while (entry := self._next()) is not None:
            yield entry

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next SIZE data bytes of the current member to FD."""
        self._left -= size
        while size:
            if self._pos == len(self._buf) and not self._fill():
                raise _broken("unexpected end of data")
            end = min(self._pos + size, len(self._buf))
            view = memoryview(self._buf)[self._pos : end]
            while view:
                view = view[os.write(fd, view) :]
            size -= end - self._pos
            self._pos = end

    def drain(self) -> None:
        """Read (and hash) whatever follows the end of the archive."""
        while self._fill():
            self._pos = len(self._buf)

    def _fill(self) -> bool:
        chunk = self._stream.read(CHUNK)
        if not chunk:
            return False
        self._hash.update(chunk)
        self.size += len(chunk)
        self._buf = self._buf[self._pos :] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
        return True

    def _take(self, size: int) -> bytes:
        """The next SIZE bytes, fewer only at the end of the stream."""
        while len(self._buf) - self._pos < size and self._fill():
            pass
        data = self._buf[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def _skip(self, size: int) -> None:
        while size:
            if self._pos == len(self._buf) and not self._fill():
                raise _broken("unexpected end of data")
            step = min(size, len(self._buf) - self._pos)
            self._pos += step
            size -= step

    def _data(self, size: int) -> bytes:
        """A special member's whole data (pax header, GNU long name)."""
        if not 0 <= size <= SPECIAL_MAX:
            raise _broken(f"tar extension header of {size} bytes")
        data = self._take(size)
        if len(data) < size:
            raise _broken("unexpected end of data")
        self._skip(-size % BLOCK)
        return data

    def _next(self) -> Entry | None:
        self._skip(self._left + self._padding)
        self._left = self._padding = 0
        pax: dict[bytes, bytes] = {}
        long_name = long_link = None
        while True:
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                if block:
                    raise _broken("unexpected end of data")
                return None  # no end-of-archive blocks; Go's reader accepts that too
            if block == ZERO_BLOCK:
                if (second := self._take(BLOCK)) and second != ZERO_BLOCK:
                    raise _broken("data after a zero block")
                return None
            entry, typeflag = _parse_header(block)
            if typeflag in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
                data = self._data(entry.size)
                if typeflag == _PAX:
                    pax.update(_parse_pax(data))
                elif typeflag == _PAX_GLOBAL:
                    _parse_pax(data)  # checked, then ignored, as containerd does
                elif typeflag == _GNU_LONGNAME:
                    long_name = data.partition(b"\0")[0]
                else:
                    long_link = data.partition(b"\0")[0]
                continue
            if pax:
                _apply_pax(entry, pax)
            if long_name is not None:
                entry.name = long_name
            if long_link is not None:
                entry.link = long_link
            entry.kind = _kind(entry, typeflag)
            if entry.kind == REG:  # the other kinds have no data, whatever their size says
                self._left, self._padding = entry.size, -entry.size % BLOCK
            return entry


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 (GNU, star)."""
    if field and field[0] & 0x80:
        if field[0] & 0x40:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    field = field.strip(b" \0").partition(b"\0")[0]
    try:
        return int(field, 8) if field else 0
    except ValueError:
        raise _broken(f"bad number {field!r} in a tar header") from None


def _parse_header(block: bytes) -> tuple[Entry, bytes]:
    stored = _number(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if stored != unsigned and stored != unsigned - 256 * sum(1 for b in block if b & 0x80):
        raise _broken("tar header checksum mismatch")
    name = block[0:100].partition(b"\0")[0]
    if block[257:263] == b"ustar\0":  # POSIX: a prefix field (shorter in star's format)
        prefix = block[345:476] if block[508:512] == b"tar\0" else block[345:500]
        prefix = prefix.partition(b"\0")[0]
        if prefix:
            name = prefix + b"/" + name
    mtime = _number(block[136:148])
    entry = Entry(
        name, None, _number(block[124:136]), _number(block[100:108]) & 0o7777,
        _number(block[108:116]), _number(block[116:124]), _clamp(mtime) * 1_000_000_000,
        block[157:257].partition(b"\0")[0], _number(block[329:337]), _number(block[337:345]),
    )  # fmt: skip
    return entry, block[156:157]


def _kind(entry: Entry, typeflag: bytes) -> bytes:
    kind = _KINDS.get(typeflag)
    if kind is None:
        why = "sparse files are not supported" if typeflag == b"S" else f"tar type {typeflag!r}"
        raise Unsupported(f"unsupported layer entry {_show(entry.name)}: {why}")
    if typeflag == b"\0" and entry.name.endswith(b"/"):
        kind = DIR  # pre-POSIX tars mark directories by the slash alone
    if entry.size < 0 or not 0 <= entry.uid <= _ID_MAX or not 0 <= entry.gid <= _ID_MAX:
        raise _broken(f"entry {_show(entry.name)} has a negative size or an impossible owner")
    if kind in (CHR, BLK) and not (0 <= entry.major < 1 << 32 and 0 <= entry.minor < 1 << 32):
        raise _broken(f"entry {_show(entry.name)} has an impossible device number")
    if b"\0" in entry.name or b"\0" in entry.link:
        raise _broken(f"entry {_show(entry.name)} has a NUL byte in its name or link")
    return kind


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Records "<length> <key>=<value>\\n", length counting the whole record."""
    records = {}
    pos = 0
    while pos < len(data) and data[pos]:  # some writers pad with NULs
        space = data.find(b" ", pos)
        length = data[pos:space]
        if space < 0 or not length.isdigit():
            raise _broken("bad pax record")
        end = pos + int(length)
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if end <= space or end > len(data) or data[end - 1] != 0x0A or not eq:
            raise _broken("bad pax record")
        records[key] = value
        pos = end
    return records


def _apply_pax(entry: Entry, pax: dict[bytes, bytes]) -> None:
    for key, value in pax.items():
        if key == b"path":
            entry.name = value
        elif key == b"linkpath":
            entry.link = value
        elif key in (b"size", b"uid", b"gid"):
            if not value.isdigit():
                raise _broken(f"bad pax {key.decode()} {value!r}")
            setattr(entry, key.decode(), int(value))
        elif key in (b"mtime", b"atime"):
            setattr(entry, key.decode(), _pax_time(value))
        elif key.startswith(_XATTR):
            if entry.xattrs is None:
                entry.xattrs = {}
            entry.xattrs[key[len(_XATTR) :]] = value
        elif key.startswith(b"GNU.sparse."):
            raise Unsupported(f"unsupported layer entry {_show(entry.name)}: sparse files are not supported")
    if b"atime" not in pax and b"mtime" in pax:
        entry.atime = entry.mtime


def _pax_time(value: bytes) -> int:
    """"<seconds>[.<fraction>]", maybe negative, as nanoseconds."""
    whole, _, fraction = value.partition(b".")
    negative = whole.startswith(b"-")
    digits = whole[1:] if negative else whole
    if not digits.isdigit() or (fraction and not fraction.isdigit()):
        raise _broken(f"bad pax time {value!r}")
    nanoseconds = _clamp(int(digits)) * 1_000_000_000 + int((fraction + b"000000000")[:9])
    return -nanoseconds if negative else nanoseconds


def _clamp(seconds: int) -> int:
    return max(-_SECONDS_MAX, min(seconds, _SECONDS_MAX))


class Refused(Exception):
    """Why a path cannot be used (a symlink or a non-directory on the way)."""


def _split(name: bytes) -> list[bytes]:
    """NAME's components, "." dropped and ".." applied lexically, so nothing
    is ever looked up through a "..": refuses names that leave the root."""
    if name.startswith(b"/"):
        raise Refused("it is an absolute path")
    if len(name) >= PATH_MAX:  # containerd's limit too: it opens dest + name
        raise Refused("its name is longer than PATH_MAX")
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part == b"..":
            if not parts:
                raise Refused("it leaves the layer directory")
            parts.pop()
        elif len(part) > NAME_MAX:
            raise Refused("a component of its name is longer than NAME_MAX")
        elif part and part != b".":
            parts.append(part)
    if len(parts) > DEPTH_MAX:
        raise Refused(f"it is nested more than {DEPTH_MAX} directories deep")
    return parts


def _open_dir(parent: int, name: bytes, create: bool) -> int | None:
    """The directory NAME in PARENT, never through a symlink; made (0755) if
    missing and CREATE, else None."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as err:
        if err.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise Refused("it goes through a symlink") from None
        raise Refused("a parent of it is not a directory") from None
    os.mkdir(name, 0o755, dir_fd=parent)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    os.fchmod(fd, 0o755)  # whatever the umask, as containerd makes them
    return fd


class DirStack:
    """Open directory fds along one path below the root, reused from entry to
    entry: tar lists entries depth first, so consecutive entries share most
    of their parent path and cost a few openat(2)s at most. At most DEPTH
    fds are kept; deeper directories are opened afresh each time."""

    DEPTH = 64

    def __init__(self, root: int):
        self.names: list[bytes] = []
        self.fds = [root]
        self._deep: int | None = None  # the fd returned for a path deeper than DEPTH

    def open(self, parts: list[bytes], create: bool) -> int | None:
        """The fd of directory PARTS, valid until the next call."""
        if parts == self.names:
            return self.fds[-1]
        self._close_deep()
        names = self.names
        common = 0
        while common < len(names) and common < len(parts) and parts[common] == names[common]:
            common += 1
        self._truncate(common)
        fd = self.fds[-1]
        for part in parts[common:]:
            fd = _open_dir(fd, part, create)
            if fd is None:
                return None
            if len(names) < self.DEPTH:
                names.append(part)
                self.fds.append(fd)
            else:
                self._close_deep()
                self._deep = fd
        return fd

    def close(self) -> None:
        self._close_deep()
        self._truncate(0)

    def _truncate(self, depth: int) -> None:
        while len(self.names) > depth:
            self.names.pop()
            os.close(self.fds.pop())

    def _close_deep(self) -> None:
        if self._deep is not None:
            os.close(self._deep)
            self._deep = None


class Layer:
    """Entries written into DEST one by one; directory metadata and opaque
    directories are settled by finish()."""

    def __init__(self, dest: str, overlay: bool):
        self.overlay = overlay
        self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.dirs = DirStack(self.root)
        self.chown = os.geteuid() == 0
        self.dir_entries: dict[tuple[bytes, ...], Entry] = {}  # applied last
        self.opaque: list[list[bytes]] = []  # apply mode: pruned last
        self.touched: set[bytes] = set()  # apply mode: paths this layer has

    def close(self) -> None:
        self.dirs.close()
        os.close(self.root)

    def add(self, entry: Entry, reader: TarReader) -> None:
        try:
            parts = _split(entry.name)
        except Refused as err:
            raise _refuse(entry, str(err)) from None
        if not parts:
            if entry.kind != DIR:
                raise _refuse(entry, "it would replace the layer directory")
            self.dir_entries[()] = entry
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            return self._whiteout(entry, parts)
        if entry.kind == LINK:
            return self._link(entry, parts)
        parent = self._parent(entry, parts)
        if not self.overlay:
            self._touch(parts)
        kind = entry.kind
        if kind == REG:
            self._write_file(parent, base, entry, reader)
        elif kind == DIR:
            self._make_dir(parent, base)
            self.dir_entries[tuple(parts)] = entry
        elif kind == SYMLINK:
            if not entry.link:
                raise _refuse(entry, "it is a symlink to nothing")
            self._replace(parent, base, lambda: os.symlink(entry.link, base, dir_fd=parent))
            self._set_metadata_at(parent, base, entry, mode=False)
        else:
            self._make_node(parent, base, entry)

    def finish(self) -> None:
        """Prune opaque directories, then give directories their metadata,
        deepest first (children change their parent's mtime, and a read-only
        parent must still be walked through)."""
        for parts in self.opaque:
            fd = self._existing_dir(parts)
            if fd is not None:
                self._prune(fd, b"/".join(parts))
        for parts in sorted(self.dir_entries, key=lambda p: (-len(p), p)):
            fd = self._existing_dir(list(parts))
            if fd is not None:
                self._set_metadata(fd, self.dir_entries[parts])

    def _parent(self, entry: Entry, parts: list[bytes]) -> int:
        try:
            return self.dirs.open(parts[:-1], create=True)
        except Refused as err:
            raise _refuse(entry, str(err)) from None

    def _existing_dir(self, parts: list[bytes]) -> int | None:
        """A directory still there at the end; later entries may have
        replaced it, even with a symlink, which is then left alone."""
        try:
            return self.dirs.open(parts, create=False)
        except Refused:
            return None

    def _touch(self, parts: list[bytes]) -> None:
        """Record PARTS and its parents as this layer's (for opaque dirs)."""
        for depth in range(len(parts), 0, -1):
            path = b"/".join(parts[:depth])
            if path in self.touched:
                return
            self.touched.add(path)

    def _replace(self, parent: int, name: bytes, create):
        """CREATE NAME, first removing whatever is there (never truncating
        a file in place: it may be a hardlink of another path)."""
        try:
            return create()
        except FileExistsError:
            self._remove(parent, name)
            return create()

    def _remove(self, parent: int, name: bytes) -> None:
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(name, dir_fd=parent)  # fd-based, never follows a symlink
        else:
            os.unlink(name, dir_fd=parent)

    def _write_file(self, parent: int, name: bytes, entry: Entry, reader: TarReader) -> None:
        fd = self._replace(parent, name, lambda: os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent))
        try:
            reader.copy_to(fd, entry.size)
            self._set_metadata(fd, entry)  # after the data: a write drops security.capability
        finally:
            os.close(fd)

    def _make_dir(self, parent: int, name: bytes) -> None:
        """Directory NAME, kept if it exists (its metadata comes in finish();
        until then it stays writable for us)."""
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                self._remove(parent, name)
                os.mkdir(name, 0o700, dir_fd=parent)

    def _make_node(self, parent: int, name: bytes, entry: Entry) -> None:
        if entry.kind == FIFO:
            self._replace(parent, name, lambda: os.mkfifo(name, 0o600, dir_fd=parent))
        else:
            kind = stat.S_IFCHR if entry.kind == CHR else stat.S_IFBLK
            device = os.makedev(entry.major, entry.minor)
            self._replace(parent, name, lambda: os.mknod(name, kind | 0o600, device, dir_fd=parent))
        self._set_metadata_at(parent, name, entry, mode=True)

    def _link(self, entry: Entry, parts: list[bytes]) -> None:
        """A hardlink to an entry already in DEST (in overlay form: in this
        layer), found the same way as any entry: never through a symlink."""
        try:
            target = _split(entry.link)
            if not target:
                raise Refused("it is the layer directory")
            if target == parts:
                return  # a link to itself: nothing to do
            if target[: len(parts)] == parts:
                raise Refused("it is inside the entry it would replace")
            source_dir = self._walk(target[:-1])
        except Refused as err:
            raise _refuse(entry, f"its hardlink target {_show(entry.link)}: {err}") from None
        try:
            try:
                mode = os.stat(target[-1], dir_fd=source_dir, follow_symlinks=False).st_mode
            except FileNotFoundError:
                raise _refuse(entry, f"its hardlink target {_show(entry.link)} does not exist") from None
            if stat.S_ISDIR(mode):
                raise _refuse(entry, f"its hardlink target {_show(entry.link)} is a directory")
            parent, name = self._parent(entry, parts), parts[-1]
            if not self.overlay:
                self._touch(parts)
            self._replace(parent, name, lambda: os.link(target[-1], name, src_dir_fd=source_dir,
                                                        dst_dir_fd=parent, follow_symlinks=False))  # fmt: skip
        finally:
            os.close(source_dir)

    def _walk(self, parts: list[bytes]) -> int:
        """A fresh fd of the existing directory PARTS (the DirStack's fds are
        busy with the entry's own parent)."""
        fd = os.dup(self.root)
        for part in parts:
            try:
                child = _open_dir(fd, part, create=False)
            finally:
                os.close(fd)
            if child is None:
                raise Refused("it does not exist")
            fd = child
        return fd

    def _whiteout(self, entry: Entry, parts: list[bytes]) -> None:
        base = parts[-1]
        if base == OPAQUE:
            parent = self._parent(entry, parts)
            if self.overlay:
                os.setxattr(parent, b"trusted.overlay.opaque", b"y")
            else:
                self._touch(parts[:-1])
                self.opaque.append(parts[:-1])
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # aufs's own metadata (.wh..wh.plnk, .wh..wh.aufs): not content
        name = base[len(WHITEOUT) :]
        if name in (b"", b".", b".."):
            raise _refuse(entry, "it is not a valid whiteout")
        parent = self._parent(entry, parts)
        if not self.overlay:
            self._touch(parts[:-1])
            self._remove(parent, name)
            return
        self._replace(parent, name, lambda: os.mknod(name, stat.S_IFCHR, 0, dir_fd=parent))
        if self.chown:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)

    def _prune(self, fd: int, path: bytes) -> None:
        """Remove below directory FD (at PATH) everything not from this layer."""
        for name in map(os.fsencode, os.listdir(fd)):
            child = path + b"/" + name if path else name
            if child not in self.touched:
                self._remove(fd, name)
                continue
            try:
                child_fd = _open_dir(fd, name, create=False)
            except Refused:
                continue  # this layer's own file or symlink
            if child_fd is None:
                continue
            try:
                self._prune(child_fd, child)
            finally:
                os.close(child_fd)

    def _set_metadata(self, fd: int, entry: Entry) -> None:
        """Owner, then mode (chown clears setuid), xattrs, times, by fd."""
        if self.chown:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.mode)
        if entry.xattrs:
            _set_xattrs(fd, entry)
        os.utime(fd, ns=(entry.atime, entry.mtime))

    def _set_metadata_at(self, parent: int, name: bytes, entry: Entry, *, mode: bool) -> None:
        """The same for what cannot be opened (symlinks, devices, fifos): by
        name in PARENT, never following NAME itself."""
        if self.chown:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        # Python's chmod takes no dir_fd with follow_symlinks=False; the
        # magic link names PARENT itself, NAME is not followed.
        path = b"/proc/self/fd/%d/%s" % (parent, name)
        if mode:
            os.chmod(path, entry.mode, follow_symlinks=False)
        if entry.xattrs:
            _set_xattrs(path, entry)
        os.utime(name, ns=(entry.atime, entry.mtime), dir_fd=parent, follow_symlinks=False)


def _set_xattrs(target: int | bytes, entry: Entry) -> None:
    follow = {} if isinstance(target, int) else {"follow_symlinks": False}
    for key, value in entry.xattrs.items():
        if key.startswith(_OVERLAY_XATTRS):
            continue
        try:
            os.setxattr(target, key, value, **follow)
        except OSError as err:
            # As containerd: a filesystem without xattrs, or security.*
            # refused to us (an LSM, a user namespace), is not fatal.
            if err.errno != errno.EOPNOTSUPP and not (err.errno == errno.EPERM and key.startswith(b"security.")):
                raise


def _refuse(entry: Entry, why: str) -> InvalidArgument:
    return InvalidArgument(f"refusing layer entry {_show(entry.name)}: {why}")
