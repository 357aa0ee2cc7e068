"""Layer unpacking: every entry kind, both whiteout shapes, diff IDs, broken
streams and hostile layers, from tar streams built here in memory."""

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile

import pytest
import zstandard

from capsa.errors import InvalidArgument, Unsupported
from capsa.images import unpack as u

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, trusted.* xattrs)")

TAR = "application/vnd.oci.image.layer.v1.tar"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPES = {
    TAR: lambda raw: raw,
    GZIP: gzip.compress,
    ZSTD: lambda raw: zstandard.ZstdCompressor().compress(raw),
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": gzip.compress,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": lambda raw: zstandard.ZstdCompressor().compress(raw),
    "application/vnd.docker.image.rootfs.diff.tar.gzip": gzip.compress,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": gzip.compress,
}  # fmt: skip


# --- building layers -------------------------------------------------------


def member(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, **attrs):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, len(data)
    info.uid, info.gid = os.getuid(), os.getgid()
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def file(name, data=b"", mode=0o644, **attrs):
    return member(name, tarfile.REGTYPE, data, mode, **attrs)


def directory(name, mode=0o755, **attrs):
    return member(name, tarfile.DIRTYPE, b"", mode, **attrs)


def symlink(name, target, **attrs):
    return member(name, tarfile.SYMTYPE, b"", 0o777, linkname=target, **attrs)


def hardlink(name, target):
    return member(name, tarfile.LNKTYPE, b"", 0o644, linkname=target)


def tar(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def apply(dest, *members, overlay=False, media_type=TAR, fmt=tarfile.PAX_FORMAT):
    raw = tar(*members, fmt=fmt)
    return u.unpack(io.BytesIO(MEDIA_TYPES[media_type](raw)), media_type, str(dest), overlay=overlay)


class ReadOnly:
    """A source that only reads, like a pipe: no seek, no tell."""

    def __init__(self, data: bytes):
        self._stream = io.BytesIO(data)

    def read(self, size=-1):
        return self._stream.read(min(size, 1000) if size and size > 0 else size)


@pytest.fixture
def dest(tmp_path):
    path = tmp_path / "dest"
    path.mkdir()
    return path


@pytest.fixture
def sentinel(tmp_path):
    """A directory beside dest that no layer may touch; checked at teardown."""
    path = tmp_path / "sentinel"
    (path / "sub").mkdir(parents=True)
    (path / "secret").write_bytes(b"secret")
    (path / "sub" / "file").write_bytes(b"x")
    os.chmod(path, 0o750)
    before = snapshot(path)
    yield path
    assert snapshot(path) == before


def snapshot(root):
    seen = {}
    for top, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(top, name)
            st = os.lstat(path)
            content = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
            seen[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, content)
    return seen


def tree(root):
    """Relative paths below ROOT, sorted."""
    found = []
    for top, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(top, name), root) for name in dirs + files]
    return sorted(found)


# --- media types, diff IDs, streams ----------------------------------------


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_every_media_type_unpacks_and_hashes_the_uncompressed_stream(dest, media_type):
    raw = tar(directory("etc"), file("etc/hostname", b"box\n"))
    unpacked = u.unpack(io.BytesIO(MEDIA_TYPES[media_type](raw)), media_type, str(dest), overlay=False)
    assert (dest / "etc" / "hostname").read_bytes() == b"box\n"
    # The whole stream, end-of-archive blocks and record padding included.
    assert len(raw) % tarfile.RECORDSIZE == 0
    assert unpacked == u.Unpacked("sha256:" + hashlib.sha256(raw).hexdigest(), len(raw))


def test_unknown_media_type_is_unsupported(dest):
    with pytest.raises(Unsupported, match="unsupported layer media type application/x-rar"):
        u.unpack(io.BytesIO(b""), "application/x-rar", str(dest), overlay=False)


def test_bytes_after_the_end_of_archive_count_in_the_diff_id(dest):
    raw = tar(file("a", b"1")) + bytes(4096)
    unpacked = u.unpack(io.BytesIO(raw), TAR, str(dest), overlay=False)
    assert unpacked.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert unpacked.size == len(raw)


@pytest.mark.parametrize("media_type", [TAR, GZIP, ZSTD])
def test_a_source_that_only_reads_works(dest, media_type):
    raw = tar(directory("d"), file("d/big", os.urandom(3 << 20)), file("d/small", b"s"))
    unpacked = u.unpack(ReadOnly(MEDIA_TYPES[media_type](raw)), media_type, str(dest), overlay=False)
    assert unpacked.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (dest / "d" / "big").stat().st_size == 3 << 20
    assert (dest / "d" / "small").read_bytes() == b"s"


def test_decompressor_reads_every_gzip_member():
    blob = gzip.compress(b"first ") + bytes(8) + gzip.compress(b"second")
    assert u.decompressor(io.BytesIO(blob), GZIP).read() == b"first second"


def test_decompressor_reads_every_zstd_frame():
    compress = zstandard.ZstdCompressor().compress
    blob = compress(b"first ") + compress(b"second")
    assert u.decompressor(io.BytesIO(blob), ZSTD).read() == b"first second"


def test_zstd_framing_is_followed_across_any_read_size():
    compress = zstandard.ZstdCompressor(write_checksum=True).compress
    skippable = (0x184D2A53).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    blob = skippable + compress(os.urandom(70000) + bytes(200000)) + compress(b"")
    frames = u.ZstdFrames()
    for i in range(len(blob)):
        frames.feed(blob[i : i + 1])
    frames.check_end()
    for cut in (1, 5, 12, len(blob) // 2, len(blob) - 1):
        frames = u.ZstdFrames()
        frames.feed(blob[:cut])
        with pytest.raises(InvalidArgument, match="zstd: unexpected end of stream"):
            frames.check_end()


def test_decompressor_passes_a_plain_tar_through():
    source = io.BytesIO(b"x")
    assert u.decompressor(source, TAR) is source


def truncated(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


BROKEN = {
    "truncated gzip": (GZIP, lambda raw: truncated(gzip.compress(raw))),
    "gzip without its trailer": (GZIP, lambda raw: gzip.compress(raw)[:-4]),
    "gzip with a bad crc": (GZIP, lambda raw: gzip.compress(raw)[:-8] + b"\0\0\0\0" + gzip.compress(raw)[-4:]),
    "not gzip": (GZIP, lambda raw: raw),
    "empty gzip": (GZIP, lambda raw: b""),
    "truncated zstd": (ZSTD, lambda raw: truncated(zstandard.ZstdCompressor().compress(raw))),
    "zstd cut before its checksum": (ZSTD, lambda raw: zstandard.ZstdCompressor(write_checksum=True).compress(raw)[:-2]),
    "not zstd": (ZSTD, lambda raw: raw),
    "tar cut inside a member": (TAR, lambda raw: raw[:1500]),
    "tar cut inside a header": (TAR, lambda raw: raw[:700]),
    "bad header checksum": (TAR, lambda raw: raw[:148] + b"0000000\0" + raw[156:]),
}  # fmt: skip


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_stream_is_invalid(dest, case):
    media_type, mangle = BROKEN[case]
    raw = tar(file("a", os.urandom(5000)), file("b", os.urandom(5000)))
    with pytest.raises(InvalidArgument, match="^broken layer: ") as raised:
        u.unpack(io.BytesIO(mangle(raw)), media_type, str(dest), overlay=False)
    assert "\n" not in str(raised.value)


def test_a_header_after_a_zero_block_is_broken(dest):
    raw = tar(file("a", b"x"))
    with pytest.raises(InvalidArgument, match="broken layer: data after a zero block"):
        u.unpack(io.BytesIO(bytes(512) + raw), TAR, str(dest), overlay=False)


def test_unknown_entry_types_are_unsupported(dest):
    with pytest.raises(Unsupported, match='unsupported layer entry "vol": tar type'):
        apply(dest, member("vol", b"V"))


def test_pax_global_headers_are_ignored(dest):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "hi"}) as archive:
        info, data = file("a", b"x")
        archive.addfile(info, io.BytesIO(data))
    u.unpack(io.BytesIO(buf.getvalue()), TAR, str(dest), overlay=False)
    assert tree(dest) == ["a"]


def test_a_tar_without_end_blocks_is_accepted_like_gos_reader(dest):
    raw = tar(file("a", b"x" * 600))
    u.unpack(io.BytesIO(raw[: 512 + 1024]), TAR, str(dest), overlay=False)
    assert (dest / "a").read_bytes() == b"x" * 600


# --- entry kinds and metadata ----------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_entry_kinds_and_metadata(dest, fmt):
    apply(
        dest,
        directory("usr", mode=0o755, mtime=1000),
        directory("usr/bin", mode=0o555, mtime=2000),  # read-only: still receives its children
        file("usr/bin/tool", b"#!/bin/sh\n", mode=0o2755, mtime=3000),
        file("usr/bin/empty", mode=0o600),
        symlink("usr/bin/sh", "/usr/bin/tool", mtime=4000),
        symlink("usr/bin/dangling", "../nowhere"),
        hardlink("usr/bin/tool2", "usr/bin/tool"),
        member("usr/fifo", tarfile.FIFOTYPE, mode=0o620, mtime=5000),
        directory("tmp", mode=0o1777),
        fmt=fmt,
    )  # fmt: skip
    bin_ = dest / "usr" / "bin"
    tool = os.lstat(bin_ / "tool")
    assert (bin_ / "tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(tool.st_mode) == 0o2755 and tool.st_mtime == 3000 and tool.st_nlink == 2
    assert os.lstat(bin_ / "tool2").st_ino == tool.st_ino
    assert stat.S_IMODE(os.lstat(bin_ / "empty").st_mode) == 0o600
    assert os.readlink(bin_ / "sh") == "/usr/bin/tool" and os.lstat(bin_ / "sh").st_mtime == 4000
    assert os.readlink(bin_ / "dangling") == "../nowhere"
    fifo = os.lstat(dest / "usr" / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620 and fifo.st_mtime == 5000
    # Directories get their mode and mtime after their children were written.
    assert stat.S_IMODE(os.lstat(bin_).st_mode) == 0o555 and os.lstat(bin_).st_mtime == 2000
    assert os.lstat(dest / "usr").st_mtime == 1000
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777


def test_pax_times_keep_nanoseconds(dest):
    info, data = file("f", b"x")
    info.pax_headers = {"mtime": "1600000000.123456789", "atime": "1500000000.5"}
    directory_info, _ = directory("d")
    directory_info.pax_headers = {"mtime": "-1.25"}
    apply(dest, (info, data), (directory_info, b""))
    st = os.lstat(dest / "f")
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert st.st_atime_ns == 1_500_000_000_500_000_000
    assert os.lstat(dest / "d").st_mtime_ns == -1_250_000_000


def test_user_xattrs_from_pax_headers(dest):
    try:
        os.setxattr(dest, "user.probe", b"1")
    except OSError as err:
        pytest.skip(f"no user xattrs here: {err}")
    info, data = file("f", b"x")
    info.pax_headers = {"SCHILY.xattr.user.comment": "hello"}
    apply(dest, (info, data))
    assert os.getxattr(dest / "f", "user.comment") == b"hello"


def test_long_names_in_every_format(dest):
    deep = "/".join(["d" * 60] * 5)
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        apply(dest, file(f"{deep}/{fmt}", b"x"), symlink(f"{deep}/link{fmt}", "t" * 300), fmt=fmt)
        assert (dest / deep / str(fmt)).read_bytes() == b"x"
        assert os.readlink(dest / deep / f"link{fmt}") == "t" * 300
    prefixed = "p" * 120 + "/" + "n" * 90  # ustar: prefix + name
    apply(dest, file(prefixed, b"u"), fmt=tarfile.USTAR_FORMAT)
    assert (dest / prefixed).read_bytes() == b"u"


def test_non_utf8_names_are_written_as_they_are(dest):
    apply(dest, file("caf\udce9", b"latin-1"), fmt=tarfile.GNU_FORMAT)
    assert os.listdir(os.fsencode(dest)) == [b"caf\xe9"]


def test_base_256_numbers(dest):
    apply(dest, file("old", b"x", mtime=-5), file("new", b"y", mtime=8**11 + 3), fmt=tarfile.GNU_FORMAT)
    assert os.lstat(dest / "old").st_mtime == -5
    assert os.lstat(dest / "new").st_mtime == 8**11 + 3


@needs_root
def test_base_256_owners(dest):
    apply(dest, file("f", b"x", uid=3_000_000, gid=4_000_000), fmt=tarfile.GNU_FORMAT)
    assert (os.lstat(dest / "f").st_uid, os.lstat(dest / "f").st_gid) == (3_000_000, 4_000_000)


def test_missing_parents_are_made_0755(dest):
    apply(dest, file("a/b/c", b"x"))
    assert stat.S_IMODE(os.lstat(dest / "a" / "b").st_mode) == 0o755
    assert (dest / "a" / "b" / "c").read_bytes() == b"x"


def test_deep_trees_beyond_the_cached_fds(dest):
    parts = [f"d{i}" for i in range(u.DirStack.DEPTH + 10)]
    members = [directory("/".join(parts[: i + 1]), mode=0o750) for i in range(len(parts))]
    members += [file("/".join(parts) + "/leaf", b"x"), file("/".join(parts[:-1]) + "/leaf2", b"y")]
    apply(dest, *members)
    assert (dest.joinpath(*parts) / "leaf").read_bytes() == b"x"
    assert (dest.joinpath(*parts[:-1]) / "leaf2").read_bytes() == b"y"
    assert stat.S_IMODE(os.lstat(dest.joinpath(*parts)).st_mode) == 0o750


def test_dot_slash_names_are_the_same_entry(dest):
    apply(dest, file("./etc/passwd", b"first"), file("etc/passwd", b"second"), file("etc//./passwd", b"third"))
    assert tree(dest) == ["etc", "etc/passwd"]
    assert (dest / "etc" / "passwd").read_bytes() == b"third"


def test_dot_dot_inside_the_layer_is_resolved_by_name(dest):
    apply(dest, file("a/b/../c", b"x"))
    assert (dest / "a" / "c").read_bytes() == b"x"


def test_the_root_entry_sets_dests_own_metadata(dest):
    apply(dest, directory("./", mode=0o710, mtime=1234), file("f"))
    st = os.lstat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o710 and st.st_mtime == 1234


def test_the_root_entry_cannot_be_replaced(dest):
    with pytest.raises(InvalidArgument, match='refusing layer entry ".": it would replace the layer directory'):
        apply(dest, file("."))


# --- replacing what is there ------------------------------------------------


def test_a_new_entry_replaces_one_of_another_kind(dest):
    (dest / "was_dir" / "sub").mkdir(parents=True)
    (dest / "was_dir" / "sub" / "f").write_bytes(b"old")
    (dest / "was_file").write_bytes(b"old")
    (dest / "kept").mkdir()
    (dest / "kept" / "old").write_bytes(b"old")
    os.symlink("kept", dest / "was_link")
    apply(dest, file("was_dir", b"new"), directory("was_file", mode=0o700), directory("kept", mode=0o711),
          file("was_link", b"new"))  # fmt: skip
    assert (dest / "was_dir").read_bytes() == b"new"
    assert (dest / "was_file").is_dir()
    assert (dest / "kept" / "old").read_bytes() == b"old"  # dir over dir: merged
    assert stat.S_IMODE(os.lstat(dest / "kept").st_mode) == 0o711
    assert not os.path.islink(dest / "was_link") and (dest / "was_link").read_bytes() == b"new"


def test_a_file_is_replaced_not_truncated_so_its_other_links_keep_their_data(dest):
    (dest / "a").write_bytes(b"shared")
    os.link(dest / "a", dest / "b")
    apply(dest, file("a", b"new"))
    assert (dest / "a").read_bytes() == b"new"
    assert (dest / "b").read_bytes() == b"shared"


# --- whiteouts ----------------------------------------------------------------


def populate(dest):
    (dest / "etc" / "old.d").mkdir(parents=True)
    (dest / "etc" / "old.d" / "conf").write_bytes(b"c")
    (dest / "etc" / "gone").write_bytes(b"g")
    (dest / "etc" / "kept").write_bytes(b"k")
    (dest / "opq" / "deep" / "er").mkdir(parents=True)
    (dest / "opq" / "deep" / "er" / "old").write_bytes(b"o")
    (dest / "opq" / "old").write_bytes(b"o")
    os.symlink("/", dest / "opq" / "oldlink")


def test_apply_whiteouts_remove_files_and_trees(dest):
    populate(dest)
    apply(dest, file("etc/.wh.gone"), file("etc/.wh.old.d"), file("etc/.wh.never-was"))
    assert tree(dest / "etc") == ["kept"]


def test_apply_opaque_keeps_only_what_this_layer_has(dest):
    populate(dest)
    apply(
        dest,
        directory("opq"),
        file("opq/before", b"b"),
        file("opq/deep/er/new", b"n"),  # deep/er existed: kept, but not its old content
        file("opq/.wh..wh..opq"),
        file("opq/after", b"a"),
        symlink("opq/link", "after"),
    )  # fmt: skip
    assert tree(dest / "opq") == ["after", "before", "deep", "deep/er", "deep/er/new", "link"]
    assert tree(dest / "etc") == ["gone", "kept", "old.d", "old.d/conf"]


def test_apply_opaque_directory_that_did_not_exist(dest):
    apply(dest, file("new/.wh..wh..opq"), file("new/f", b"x"))
    assert tree(dest) == ["new", "new/f"]


def test_aufs_metadata_entries_are_skipped(dest):
    apply(dest, directory(".wh..wh.plnk"), file("a/.wh..wh.aufs"), file("a/f"))
    assert tree(dest) == ["a", "a/f"]


@needs_root
def test_overlay_whiteouts_become_devices_and_opaque_xattrs(dest):
    info, _ = file("etc/.wh.gone", uid=7, gid=8)
    apply(dest, directory("etc"), (info, b""), file("etc/kept", b"k"), directory("opq"), file("opq/.wh..wh..opq"),
          file("implicit/.wh..wh..opq"), overlay=True)  # fmt: skip
    gone = os.lstat(dest / "etc" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0 and (gone.st_uid, gone.st_gid) == (7, 8)
    assert tree(dest) == ["etc", "etc/gone", "etc/kept", "implicit", "opq"]
    assert os.getxattr(dest / "opq", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "implicit", "trusted.overlay.opaque") == b"y"
    with pytest.raises(OSError):
        os.getxattr(dest / "etc", "trusted.overlay.opaque")


@needs_root
def test_a_layer_cannot_set_overlay_xattrs_itself(dest):
    info, data = directory("d")
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.trusted.other": "v"}
    apply(dest, (info, data), overlay=True)
    assert os.listxattr(dest / "d") == ["trusted.other"]


# --- root-only metadata -------------------------------------------------------


@needs_root
def test_owners_devices_setuid_and_trusted_xattrs(dest):
    tool, data = file("bin/su", b"elf", mode=0o4755, uid=0, gid=42)
    # cap_net_bind_service+ep: chown and writes drop it, so it must come after both
    capability = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
    tool.pax_headers = {"SCHILY.xattr.trusted.note": "n",
                        "SCHILY.xattr.security.capability": capability.decode("latin-1")}
    link, _ = symlink("bin/link", "su", uid=5, gid=6)
    link.pax_headers = {"SCHILY.xattr.trusted.l": "v"}
    apply(
        dest,
        directory("bin", mode=0o750, uid=3, gid=4),
        (tool, data),
        (link, b""),
        member("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3, uid=0, gid=0),
        member("dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0, uid=0, gid=6),
        file("home/user/f", b"x", uid=1000, gid=1000, mode=0o640),
    )  # fmt: skip
    su = os.lstat(dest / "bin" / "su")
    assert (su.st_uid, su.st_gid, stat.S_IMODE(su.st_mode)) == (0, 42, 0o4755)
    assert os.getxattr(dest / "bin" / "su", "trusted.note") == b"n"
    assert os.getxattr(dest / "bin" / "su", "security.capability") == capability
    bin_ = os.lstat(dest / "bin")
    assert (bin_.st_uid, bin_.st_gid, stat.S_IMODE(bin_.st_mode)) == (3, 4, 0o750)
    assert (os.lstat(dest / "bin" / "link").st_uid, os.lstat(dest / "bin" / "link").st_gid) == (5, 6)
    assert os.getxattr(dest / "bin" / "link", "trusted.l", follow_symlinks=False) == b"v"
    null = os.lstat(dest / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3) and stat.S_IMODE(null.st_mode) == 0o666
    sda = os.lstat(dest / "dev" / "sda")
    assert stat.S_ISBLK(sda.st_mode) and sda.st_rdev == os.makedev(8, 0) and sda.st_gid == 6
    assert os.lstat(dest / "home" / "user" / "f").st_uid == 1000


# --- hostile layers -----------------------------------------------------------


def sentinel_path(sentinel, *parts):
    return os.path.join(str(sentinel), *parts)


HOSTILE = {
    "dot-dot": lambda s: [file("../sentinel/secret", b"pwned")],
    "dot-dot deeper": lambda s: [file("a/../../sentinel/new", b"pwned")],
    "dot-dot to dest's parent": lambda s: [directory("..", mode=0o777)],
    "absolute name": lambda s: [file(sentinel_path(s, "secret"), b"pwned")],
    "through a relative symlink": lambda s: [symlink("l", "../sentinel"), file("l/secret", b"pwned")],
    "through a symlink to /": lambda s: [symlink("root", "/"), file("root" + sentinel_path(s, "secret"), b"pwned")],
    "directory through a symlink": lambda s: [symlink("l", str(s)), directory("l/sub", mode=0o777)],
    "symlink through a symlink": lambda s: [symlink("l", str(s)), symlink("l/secret", "x")],
    "hardlink through a symlink": lambda s: [file("f", b"x"), symlink("l", str(s)), hardlink("l/new", "f")],
    "whiteout through a symlink": lambda s: [symlink("l", str(s)), file("l/.wh.secret")],
    "opaque through a symlink": lambda s: [symlink("l", str(s)), file("l/.wh..wh..opq")],
    "hardlink to dot-dot": lambda s: [hardlink("h", "../sentinel/secret")],
    "hardlink to an absolute path": lambda s: [hardlink("h", sentinel_path(s, "secret"))],
    "hardlink target through a symlink": lambda s: [symlink("l", str(s)), hardlink("h", "l/secret")],
    "hardlink target through a relative symlink": lambda s: [symlink("l", "../sentinel"), hardlink("h", "l/secret")],
    "hardlink to a missing target": lambda s: [hardlink("h", "nothing")],
    "hardlink to a directory": lambda s: [directory("d"), hardlink("h", "d")],
    "whiteout of dot-dot": lambda s: [file("a/.wh...")],
    "whiteout of dot": lambda s: [file("a/.wh..")],
    "whiteout of nothing": lambda s: [file("a/.wh.")],
}  # fmt: skip


@pytest.mark.parametrize("overlay", [False, True], ids=["apply", "overlay"])
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_entries_are_refused(dest, sentinel, case, overlay):
    if overlay and os.geteuid() != 0 and "opaque" in case:
        pytest.skip("overlay opaque dirs need trusted.* xattrs")
    with pytest.raises(InvalidArgument, match="^refusing layer entry ") as raised:
        apply(dest, *HOSTILE[case](sentinel), overlay=overlay)
    assert "\n" not in str(raised.value)


def test_refusal_messages(dest):
    cases = [
        ([file("../../etc/x")], 'refusing layer entry "../../etc/x": it leaves the layer directory'),
        ([file("/etc/x")], 'refusing layer entry "/etc/x": it is an absolute path'),
        ([symlink("l", "/"), file("l/etc/x")], 'refusing layer entry "l/etc/x": it goes through a symlink'),
        ([hardlink("h", "../x")], 'refusing layer entry "h": its hardlink target "../x": it leaves the layer directory'),
        ([hardlink("h", "x")], 'refusing layer entry "h": its hardlink target "x" does not exist'),
        ([file("a\nb/../../x")], 'refusing layer entry "a\\nb/../../x": it leaves the layer directory'),
        ([file("a/" * 2048)], f'refusing layer entry "{"a/" * 2048}": its name is longer than PATH_MAX'),
        ([file("a/" * 513)], f'refusing layer entry "{"a/" * 513}": it is nested more than 512 directories deep'),
        ([file("n" * 256)], f'refusing layer entry "{"n" * 256}": a component of its name is longer than NAME_MAX'),
    ]  # fmt: skip
    for members, message in cases:
        with pytest.raises(InvalidArgument) as raised:
            apply(dest, *members)
        assert str(raised.value) == message


def test_a_symlink_from_a_lower_layer_is_never_followed(dest, sentinel):
    os.symlink(str(sentinel), dest / "etc")
    for members in ([file("etc/secret", b"pwned")], [file("etc/.wh.secret")], [file("etc/.wh..wh..opq")],
                    [hardlink("h", "etc/secret")]):  # fmt: skip
        with pytest.raises(InvalidArgument, match="through a symlink"):
            apply(dest, *members)


def test_a_directory_entry_over_a_symlink_replaces_the_symlink(dest, sentinel):
    # CVE-2021-32760: containerd chmod-ed the symlink's target.
    apply(dest, symlink("l", str(sentinel)), directory("l", mode=0o777), symlink("s", str(sentinel / "secret")),
          file("s", b"mine", mode=0o777))  # fmt: skip
    assert not os.path.islink(dest / "l") and stat.S_IMODE(os.lstat(dest / "l").st_mode) == 0o777
    assert not os.path.islink(dest / "s") and (dest / "s").read_bytes() == b"mine"


def test_a_directory_replaced_by_a_symlink_later_is_not_followed_at_the_end(dest, sentinel):
    # The directory's metadata is applied last, when "d" is a symlink already.
    apply(dest, directory("d", mode=0o777, mtime=1), symlink("d", str(sentinel)))
    assert os.readlink(dest / "d") == str(sentinel)


def test_an_opaque_directory_replaced_by_a_symlink_is_not_pruned_through_it(dest, sentinel):
    apply(dest, directory("d"), file("d/.wh..wh..opq"), symlink("d", str(sentinel)))
    assert os.readlink(dest / "d") == str(sentinel)


def test_sparse_files_are_unsupported(dest):
    info, data = file("s", b"x")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    with pytest.raises(Unsupported, match="sparse"):
        apply(dest, (info, data))
