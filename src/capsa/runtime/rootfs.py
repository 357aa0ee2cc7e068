"""The container's filesystem: mounts, /dev, pivot_root, masked and read-only paths.

Runs in the init, inside the new mount namespace. Every mount destination is
resolved inside the rootfs with symlinks followed as if the rootfs were `/`,
so a hostile image cannot point a mount at the host (the CVE-2015-1328 /
runc "symlink-exchange" class).
"""

import os
import stat

from capsa.errors import InvalidArgument
from capsa.linux import mount as m
from capsa.rootpath import resolve

# option -> (clears the flag?, flag)
MOUNT_FLAGS = {
    "acl": (False, m.MS_POSIXACL), "async": (True, m.MS_SYNCHRONOUS),
    "atime": (True, m.MS_NOATIME), "bind": (False, m.MS_BIND), "defaults": (False, 0),
    "dev": (True, m.MS_NODEV), "diratime": (True, m.MS_NODIRATIME),
    "dirsync": (False, m.MS_DIRSYNC), "exec": (True, m.MS_NOEXEC),
    "iversion": (False, m.MS_I_VERSION), "lazytime": (False, m.MS_LAZYTIME),
    "loud": (True, m.MS_SILENT), "mand": (False, m.MS_MANDLOCK),
    "noacl": (True, m.MS_POSIXACL), "noatime": (False, m.MS_NOATIME),
    "nodev": (False, m.MS_NODEV), "nodiratime": (False, m.MS_NODIRATIME),
    "noexec": (False, m.MS_NOEXEC), "noiversion": (True, m.MS_I_VERSION),
    "nolazytime": (True, m.MS_LAZYTIME), "nomand": (True, m.MS_MANDLOCK),
    "norelatime": (True, m.MS_RELATIME), "nostrictatime": (True, m.MS_STRICTATIME),
    "nosuid": (False, m.MS_NOSUID), "nosymfollow": (False, m.MS_NOSYMFOLLOW),
    "rbind": (False, m.MS_BIND | m.MS_REC), "relatime": (False, m.MS_RELATIME),
    "remount": (False, m.MS_REMOUNT), "ro": (False, m.MS_RDONLY), "rw": (True, m.MS_RDONLY),
    "silent": (False, m.MS_SILENT), "strictatime": (False, m.MS_STRICTATIME),
    "suid": (True, m.MS_NOSUID), "sync": (False, m.MS_SYNCHRONOUS),
    "symfollow": (True, m.MS_NOSYMFOLLOW),
}  # fmt: skip

PROPAGATION = {
    "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC,
    "shared": m.MS_SHARED, "rshared": m.MS_SHARED | m.MS_REC,
    "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
    "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
}  # fmt: skip

# Recursive attributes through mount_setattr(2): option -> (set, clear).
RECURSIVE_ATTRS = {
    "rro": (m.MOUNT_ATTR_RDONLY, 0), "rrw": (0, m.MOUNT_ATTR_RDONLY),
    "rnosuid": (m.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, m.MOUNT_ATTR_NOSUID),
    "rnodev": (m.MOUNT_ATTR_NODEV, 0), "rdev": (0, m.MOUNT_ATTR_NODEV),
    "rnoexec": (m.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, m.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (m.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, m.MOUNT_ATTR_NODIRATIME),
    "rnoatime": (m.MOUNT_ATTR_NOATIME, m.MOUNT_ATTR__ATIME),
    "rrelatime": (m.MOUNT_ATTR_RELATIME, m.MOUNT_ATTR__ATIME),
    "rstrictatime": (m.MOUNT_ATTR_STRICTATIME, m.MOUNT_ATTR__ATIME),
    "rnosymfollow": (m.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, m.MOUNT_ATTR_NOSYMFOLLOW),
}  # fmt: skip

# The devices every container gets (runtime-spec "Default Devices").
DEFAULT_DEVICES = [
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
]  # fmt: skip
DEV_SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
]  # fmt: skip

_LOCKED_FLAGS = {  # statvfs flag -> mount flag, kept on remount (locked in a user ns)
    os.ST_NOSUID: m.MS_NOSUID, os.ST_NODEV: m.MS_NODEV, os.ST_NOEXEC: m.MS_NOEXEC,
    os.ST_NOATIME: m.MS_NOATIME, os.ST_NODIRATIME: m.MS_NODIRATIME,
    os.ST_RELATIME: m.MS_RELATIME,
}  # fmt: skip


class Options:
    """A mount's options split into flags, propagation, attributes and data."""

    def __init__(self, options: list[str]):
        self.flags = 0
        self.propagation = []
        self.attr_set = self.attr_clr = 0
        data = []
        self.copyup = False
        self.existed = True  # whether the destination was in the image
        for opt in options:
            if opt in MOUNT_FLAGS:
                clear, flag = MOUNT_FLAGS[opt]
                self.flags = self.flags & ~flag if clear else self.flags | flag
            elif opt in PROPAGATION:
                self.propagation.append(PROPAGATION[opt])
            elif opt in RECURSIVE_ATTRS:
                set_, clr = RECURSIVE_ATTRS[opt]
                self.attr_set, self.attr_clr = self.attr_set | set_, self.attr_clr | clr
            elif opt == "tmpcopyup":
                self.copyup = True
            elif opt in ("idmap", "ridmap"):
                raise InvalidArgument(f"mount option {opt} is not supported by capsa-runtime")
            else:
                data.append(opt)
        self.data = ",".join(data) or None

    @property
    def bind(self) -> bool:
        return bool(self.flags & m.MS_BIND)


def make_target(path: str, is_dir: bool) -> None:
    """Create a mount point: a directory, or an empty file for a file bind."""
    if os.path.lexists(path):
        return
    if is_dir:
        os.makedirs(path, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))


def _locked_flags(path: str) -> int:
    flags = 0
    vfs = os.statvfs(path).f_flag
    for st_flag, ms_flag in _LOCKED_FLAGS.items():
        if vfs & st_flag:
            flags |= ms_flag
    return flags


def remount_bind(path: str, flags: int, in_userns: bool) -> None:
    """Apply flags to an existing bind mount (MS_BIND alone ignores them)."""
    if in_userns:
        flags |= _locked_flags(path)
    m.mount(None, path, None, m.MS_BIND | m.MS_REMOUNT | (flags & ~m.MS_REC))


def mount_one(rootfs: str, spec_mount: dict, ctx: dict) -> None:
    """Mount one entry of config.json's `mounts` inside rootfs."""
    opts = Options(spec_mount.get("options", []))
    kind = spec_mount.get("type") or ("bind" if opts.bind else "none")
    source = spec_mount.get("source", kind)
    dest = resolve(rootfs, spec_mount["destination"])
    if kind == "bind":
        opts.flags |= m.MS_BIND
    if opts.bind:
        if not os.path.isabs(source):
            source = os.path.join(ctx["bundle"], source)
        make_target(dest, os.path.isdir(source))
        m.mount(source, dest, None, opts.flags & (m.MS_BIND | m.MS_REC))
        if opts.flags & ~(m.MS_BIND | m.MS_REC):
            remount_bind(dest, opts.flags, ctx["in_userns"])
    elif kind == "cgroup":
        make_target(dest, True)
        mount_cgroup(dest, opts, ctx)
    else:
        opts.existed = os.path.isdir(dest)
        make_target(dest, True)
        mount_fs(source, dest, kind, opts, ctx)
    for propagation in opts.propagation:
        m.mount(None, dest, None, propagation)
    if opts.attr_set or opts.attr_clr:
        m.mount_setattr(dest, opts.attr_set, opts.attr_clr)


def mount_fs(source: str, dest: str, kind: str, opts: Options, ctx: dict) -> None:
    """Mount a filesystem (proc, sysfs, tmpfs, devpts, mqueue, overlay, ...)."""
    if opts.copyup and kind == "tmpfs":
        return _mount_tmpfs_copyup(dest, opts)
    try:
        m.mount(source, dest, kind, opts.flags, opts.data)
    except PermissionError:
        # sysfs needs a network namespace owned by our user namespace: fall
        # back to the host's /sys, read-only, as runc does.
        if kind != "sysfs":
            raise
        m.mount("/sys", dest, None, m.MS_BIND | m.MS_REC)
        remount_bind(dest, opts.flags | m.MS_RDONLY, ctx["in_userns"])


def _mount_tmpfs_copyup(dest: str, opts: Options) -> None:
    """A tmpfs that starts with a copy of what the image has at dest (runc's
    tmpcopyup): its contents, and its mode and owner if the image had it;
    a directory made only to mount on keeps tmpfs's own 1777."""
    import shutil
    import tempfile

    staging = tempfile.mkdtemp(prefix="capsa-copyup-")
    try:
        m.mount("tmpfs", staging, "tmpfs", opts.flags, opts.data)
        for entry in os.scandir(dest):
            target = os.path.join(staging, entry.name)
            if entry.is_dir(follow_symlinks=False):
                shutil.copytree(entry.path, target, symlinks=True)
            else:
                shutil.copy2(entry.path, target, follow_symlinks=False)
        if opts.existed and "mode=" not in (opts.data or ""):
            st = os.stat(dest)
            os.chmod(staging, st.st_mode & 0o7777)
            os.chown(staging, st.st_uid, st.st_gid)
        m.mount(staging, dest, None, m.MS_MOVE)
    finally:
        os.rmdir(staging)


def mount_cgroup(dest: str, opts: Options, ctx: dict) -> None:
    """/sys/fs/cgroup: cgroup2 itself, or on v1 a tmpfs of per-hierarchy binds."""
    if ctx["cgroup_mode"] == "v2":
        m.mount("cgroup2", dest, "cgroup2", opts.flags, None)
        return
    m.mount("tmpfs", dest, "tmpfs", opts.flags & ~m.MS_RDONLY, "mode=755")
    for host_path in sorted(set(ctx["cgroup_paths"].values())):
        rel = os.path.relpath(host_path, "/sys/fs/cgroup")
        hierarchy = rel.split("/")[0]
        target = os.path.join(dest, hierarchy)
        os.makedirs(target, exist_ok=True)
        m.mount(host_path, target, None, m.MS_BIND)
        remount_bind(target, opts.flags | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC,
                     ctx["in_userns"])  # fmt: skip
    if opts.flags & m.MS_RDONLY:
        m.mount(None, dest, None, m.MS_REMOUNT | m.MS_RDONLY | (opts.flags & ~m.MS_BIND),
                "mode=755")  # fmt: skip


def set_root_propagation(propagation: str | None) -> None:
    """Keep our mounts from leaking back to the host: rslave unless asked.

    pivot_root refuses shared mounts, so a shared rootfsPropagation starts
    as rslave and is applied to the new root after the pivot.
    """
    if not propagation or propagation in ("shared", "rshared"):
        propagation = "rslave"
    m.mount(None, "/", None, PROPAGATION[propagation])


def bind_rootfs(rootfs: str) -> None:
    """pivot_root needs the new root to be a mount point: bind it to itself."""
    m.mount(rootfs, rootfs, None, m.MS_BIND | m.MS_REC)


def create_devices(rootfs: str, devices: list[dict], in_userns: bool) -> None:
    """The default devices plus linux.devices; bind-mounted from the host in a
    user namespace, where mknod is not allowed."""
    for path, major, minor in DEFAULT_DEVICES:
        if not any(d["path"] == path for d in devices):
            _create_device(rootfs, {"path": path, "type": "c", "major": major,
                                    "minor": minor, "fileMode": 0o666}, in_userns)  # fmt: skip
    for device in devices:
        _create_device(rootfs, device, in_userns)


def _create_device(rootfs: str, device: dict, in_userns: bool) -> None:
    dest = resolve(rootfs, device["path"])
    os.makedirs(os.path.dirname(dest), 0o755, exist_ok=True)
    if in_userns:
        make_target(dest, False)
        m.mount(device["path"], dest, None, m.MS_BIND)
        return
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    mode = device.get("fileMode", 0o666) & 0o7777
    if os.path.lexists(dest):
        os.unlink(dest)
    os.mknod(dest, mode | kinds[device["type"]],
             os.makedev(device.get("major", 0), device.get("minor", 0)))  # fmt: skip
    os.chmod(dest, mode)
    os.chown(dest, device.get("uid", 0), device.get("gid", 0))


def create_dev_symlinks(rootfs: str) -> None:
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    if os.path.isdir(os.path.join(rootfs, "dev/pts")):
        links.append(("pts/ptmx", "/dev/ptmx"))
    for target, link in links:
        path = os.path.join(rootfs, link.lstrip("/"))
        if os.path.lexists(path):
            if link != "/dev/ptmx":
                continue
            os.unlink(path)  # a ptmx device node would reach the host's devpts
        os.symlink(target, path)


def pivot_root(rootfs: str) -> None:
    """Make rootfs `/` and detach the old root entirely.

    pivot_root(".", ".") stacks the old root under the new one at the same
    place; it is then made a slave (so the detach doesn't propagate to the
    host) and lazily unmounted. Unlike chroot, no path leads back out.
    """
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(rootfs)
        m.pivot_root(".", ".")
        os.fchdir(old_root)
        m.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
        m.umount(".", m.MNT_DETACH)
    finally:
        os.close(old_root)
    os.chdir("/")


def move_root(rootfs: str) -> None:
    """--no-pivot: move the rootfs over / and chroot (for ramfs roots)."""
    os.chdir(rootfs)
    m.mount(rootfs, "/", None, m.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def remount_root_readonly(in_userns: bool) -> None:
    remount_bind("/", m.MS_RDONLY | m.MS_REC, in_userns)


def mask_paths(paths: list[str]) -> None:
    """Hide paths: /dev/null over files, an empty read-only tmpfs over dirs."""
    for path in paths:
        try:
            if os.path.isdir(path):
                m.mount("tmpfs", path, "tmpfs", m.MS_RDONLY, None)
            else:
                m.mount("/dev/null", path, None, m.MS_BIND)
        except FileNotFoundError:
            continue


def readonly_paths(paths: list[str], in_userns: bool) -> None:
    for path in paths:
        try:
            m.mount(path, path, None, m.MS_BIND | m.MS_REC)
        except FileNotFoundError:
            continue
        remount_bind(path, m.MS_RDONLY | m.MS_REC, in_userns)
