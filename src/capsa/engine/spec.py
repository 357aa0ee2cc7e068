"""A container's config.json, made the way Docker makes it.

build_spec() starts from Docker's defaults (moby's oci/defaults.go: 14
capabilities, /proc, /dev, /sys read-only, masked and read-only /proc paths,
a deny-all device cgroup with a few character devices allowed) and applies
the image config and the run options as moby's daemon/oci_linux.go does:
entrypoint and command, environment, user, capabilities with their
seccomp profile, rlimits, resources, namespaces and mounts. `--privileged`
gets every capability and host device, no seccomp, no masked paths and a
writable /sys.

The result is plain runtime-spec: any runc-compatible runtime takes it.
"""

import os
import posixpath
import resource
import stat

from capsa.engine import options as opts
from capsa.engine import seccomp_profile
from capsa.engine.options import Mount, RunOptions
from capsa.engine.users import User
from capsa.errors import InvalidArgument, NotFound
from capsa.linux import lsm

OCI_VERSION = "1.0.2-dev"  # as capsa-runtime and runc write it; crun refuses anything but 1.0.x
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHM_SIZE = 64 << 20
MIN_MEMORY = 6 << 20  # moby's linuxMinMemory
DEFAULT_NOFILE = 1 << 20  # what containers get under containerd/dockerd: 1048576

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEFAULT_MOUNTS = (
    ("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ("/sys/fs/cgroup", "cgroup", "cgroup", ("ro", "nosuid", "noexec", "nodev")),
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE}")),
)  # fmt: skip
# Left writable by --read-only: the kernel's own filesystems a process needs.
_WRITABLE_WHEN_READ_ONLY = ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev")

# Denied all, then null, zero, urandom, random, tty, console; fuse explicitly not.
DEFAULT_DEVICE_RULES = (
    {"allow": False, "access": "rwm"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 5), (1, 3), (1, 9), (1, 8), (5, 0), (5, 1))),
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
)  # fmt: skip

# Safe in a container's own network namespace, and granted by the default
# capabilities anyway: ping without CAP_NET_RAW, ports below 1024 without
# CAP_NET_BIND_SERVICE.
NETWORK_SYSCTLS = {"net.ipv4.ping_group_range": "0 2147483647", "net.ipv4.ip_unprivileged_port_start": "0"}

_RLIMIT_NUMBERS = {
    "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU, "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE, "locks": 10, "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO, "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING, "stack": resource.RLIMIT_STACK,
}  # fmt: skip


def build_spec(*, container_id: str, image_config: dict, rootfs: str, options: RunOptions, user: User,
               mounts: list[Mount], hostname: str, cgroups_path: str, extra_files: dict[str, str],
               netns_path: str | None = None, cgroupns: bool | None = None) -> dict:
    """config.json for CONTAINER_ID. image_config is the image config's
    "config" object; mounts have host paths as sources (volumes resolved);
    extra_files maps /etc/hosts, /etc/resolv.conf, /etc/hostname to host
    files. netns_path joins a network namespace the engine made; cgroupns
    None is Docker's default (private on a cgroup v2 host)."""
    security = SecurityOptions.parse(options.security_opt)
    capabilities = effective_capabilities(options)
    spec = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": options.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
            "args": process_args(image_config, options),
            "env": environment(image_config, options, hostname, user),
            "cwd": working_dir(image_config, options),
            "capabilities": {"bounding": list(capabilities), "effective": list(capabilities),
                             "permitted": list(capabilities), "inheritable": [], "ambient": []},
            "rlimits": rlimits(options.ulimits),
            "noNewPrivileges": security.no_new_privileges,
        },
        "root": {"path": rootfs, "readonly": options.read_only},
        "hostname": hostname,
        "mounts": spec_mounts(options, mounts, extra_files, security),
        "annotations": labels(image_config, options),
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources(options),
            "namespaces": namespaces(netns_path, cgroupns),
            "sysctl": {key: value for key, value in NETWORK_SYSCTLS.items() if _sysctl_exists(key)},
        },
    }
    if security.apparmor:
        spec["process"]["apparmorProfile"] = security.apparmor
    _apply_privileges(spec["linux"], options, security, capabilities)
    return spec


# -- the process


def process_args(image_config: dict, options: RunOptions) -> list[str]:
    """Docker's rules: --entrypoint replaces the image's Entrypoint and drops
    its Cmd; a command replaces the Cmd; then entrypoint + command."""
    command = list(options.command or [])
    if options.entrypoint is not None:
        args = list(options.entrypoint) + command
    else:
        args = _strings(image_config, "Entrypoint") + (command or _strings(image_config, "Cmd"))
    if not args:
        raise InvalidArgument("no command specified")
    return args


def environment(image_config: dict, options: RunOptions, hostname: str, user: User) -> list[str]:
    """PATH, HOSTNAME (and TERM with a tty), replaced or followed by
    --env-file/-e and the image's Env the user did not set, in that order, as
    dockerd merges them; a bare "K" unsets K. HOME comes from the user's
    passwd entry unless set."""
    wanted = [entry for path in options.env_files for entry in opts.parse_env_file(path)] + list(options.env)
    keys = {entry.partition("=")[0] for entry in wanted}
    merged = wanted + [entry for entry in _strings(image_config, "Env") if entry.partition("=")[0] not in keys]
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, **({"TERM": "xterm"} if options.tty else {})}
    for entry in merged:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
        else:
            env.pop(key, None)
    env.setdefault("HOME", user.home)
    return [f"{key}={value}" for key, value in env.items()]


def working_dir(image_config: dict, options: RunOptions) -> str:
    cwd = options.workdir or image_config.get("WorkingDir") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument(f"the working directory '{cwd}' is invalid, it needs to be an absolute path")
    return posixpath.normpath(cwd) if not cwd.startswith("//") else "/" + cwd.lstrip("/")


def _strings(image_config: dict, key: str) -> list[str]:
    value = image_config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"invalid image config: {key} must be a list of strings")
    return list(value)


def labels(image_config: dict, options: RunOptions) -> dict[str, str]:
    """The image's labels with --label on top, as the container's annotations."""
    found = image_config.get("Labels") or {}
    if not isinstance(found, dict):
        raise InvalidArgument("invalid image config: Labels must be an object")
    return {**{str(k): str(v) for k, v in found.items()}, **options.labels}


# -- capabilities


def effective_capabilities(options: RunOptions, available: list[str] | None = None) -> list[str]:
    """Docker's default 14, less --cap-drop, plus --cap-add ("ALL" in either;
    an add wins over a drop of the same one); every one for --privileged.
    AVAILABLE is what this process holds (what "ALL" means)."""
    available = current_capabilities() if available is None else available
    if options.privileged:
        return list(available)
    add, drop = _normalize_caps(options.cap_add, available), _normalize_caps(options.cap_drop, available)
    if "ALL" in add:
        add = ["ALL"]
    if "ALL" in drop:
        drop = ["ALL"]
    drop = [cap for cap in drop if cap not in add]
    if "ALL" in add:
        caps = [cap for cap in available if cap not in drop]
    elif "ALL" in drop:
        caps = add
    else:
        caps = [cap for cap in DEFAULT_CAPABILITIES if cap not in drop] + add
    return list(dict.fromkeys(caps))


def _normalize_caps(names, available: list[str]) -> list[str]:
    from capsa.linux.caps import NUMBERS

    normalized = []
    for name in names:
        cap = name.strip().upper()
        if cap != "ALL" and not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        if cap != "ALL" and cap not in NUMBERS:
            raise InvalidArgument(f'unknown capability: "{cap}"')
        if cap != "ALL" and cap not in available:
            raise InvalidArgument(f'capability not supported by your kernel or not available in the '
                                  f'current environment: "{cap}"')  # fmt: skip
        normalized.append(cap)
    return list(dict.fromkeys(normalized))


def current_capabilities() -> list[str]:
    """The capabilities this process holds (effective set), in kernel order."""
    from capsa.linux.caps import NAMES

    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return list(NAMES)
    mask = int(line.split()[1], 16)
    return [name for number, name in enumerate(NAMES) if mask & (1 << number)]


# -- rlimits


def rlimits(ulimits: list[str]) -> list[dict]:
    """--ulimit over the default RLIMIT_NOFILE; none may ask for a hard limit
    above this host's, which only CAP_SYS_RESOURCE could raise."""
    wanted = {"nofile": _default_nofile()}
    for text in ulimits:
        ulimit = opts.parse_ulimit(text)
        wanted[ulimit.name] = ulimit
    may_raise = "CAP_SYS_RESOURCE" in current_capabilities()
    for ulimit in wanted.values():
        host = host_hard_limit(ulimit.name)
        if not may_raise and host >= 0 and (ulimit.hard < 0 or ulimit.hard > host):
            hard = "unlimited" if ulimit.hard < 0 else ulimit.hard
            raise InvalidArgument(f"ulimit {ulimit.name}: hard limit {hard} is above this host's {host}, "
                                  "which only CAP_SYS_RESOURCE may raise")  # fmt: skip
    return [ulimit.to_rlimit() for ulimit in wanted.values()]


def _default_nofile() -> opts.Ulimit:
    limit = DEFAULT_NOFILE
    host = host_hard_limit("nofile")
    if host >= 0:
        limit = min(limit, host)
    try:  # the kernel refuses RLIMIT_NOFILE above fs.nr_open
        with open("/proc/sys/fs/nr_open") as f:
            limit = min(limit, int(f.read()))
    except (OSError, ValueError):
        pass
    return opts.Ulimit("nofile", limit, limit)


def host_hard_limit(name: str) -> int:
    """This process's hard limit (what the container's init inherits); -1: unlimited."""
    hard = resource.getrlimit(_RLIMIT_NUMBERS[name])[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


# -- resources


def resources(options: RunOptions) -> dict:
    """linux.resources: the device cgroup, then --memory, --memory-swap,
    --cpus, --cpu-shares, --cpuset-cpus, --pids-limit, checked as dockerd does."""
    out: dict = {"devices": [dict(rule) for rule in DEFAULT_DEVICE_RULES]}
    memory = _memory(options.memory, options.memory_swap)
    if memory:
        out["memory"] = memory
    cpu = {}
    if options.cpus:
        quota, period = opts.parse_cpus(repr(options.cpus))
        cpu.update(quota=quota, period=period)
    if options.cpu_shares:  # into the kernel's range, as dockerd does (with a warning)
        cpu["shares"] = min(max(options.cpu_shares, 2), 262144)
    if options.cpuset_cpus:
        cpu["cpus"] = opts.parse_cpuset(options.cpuset_cpus)
    if cpu:
        out["cpu"] = cpu
    if options.pids_limit is not None:
        out["pids"] = {"limit": options.pids_limit if options.pids_limit > 0 else -1}  # <= 0: unlimited
    return out


def _memory(memory: int | None, swap: int | None) -> dict:
    memory, swap = memory or 0, swap or 0
    if 0 < memory < MIN_MEMORY:
        raise InvalidArgument("minimum memory limit allowed is 6MB")
    if memory == 0 and swap > 0:
        raise InvalidArgument("you should always set the memory limit when using memoryswap limit, see usage")
    if memory > 0 and 0 < swap < memory:
        raise InvalidArgument("minimum memoryswap limit should be larger than memory limit, see usage")
    if memory > 0 and swap == 0:
        swap = 2 * memory  # dockerd's default: as much swap as memory
    out = {}
    if memory:
        out["limit"] = memory
    if swap:
        out["swap"] = swap
    return out


# -- namespaces


def namespaces(netns_path: str | None, cgroupns: bool | None) -> list[dict]:
    network = {"type": "network", **({"path": netns_path} if netns_path else {})}
    spaces = [{"type": "mount"}, network, {"type": "uts"}, {"type": "pid"}, {"type": "ipc"}]
    if cgroupns if cgroupns is not None else _cgroup2_only():
        spaces.append({"type": "cgroup"})
    return spaces


def _cgroup2_only() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _sysctl_exists(key: str) -> bool:
    return os.path.exists("/proc/sys/" + key.replace(".", "/"))


# -- mounts


def spec_mounts(options: RunOptions, mounts: list[Mount], extra_files: dict[str, str], security) -> list[dict]:
    """The defaults not overridden, then the user's mounts parents first."""
    user = [_mount_entry(m) for m in mounts]
    seen = set()
    for entry in user:
        if entry["destination"] in seen:
            raise InvalidArgument(f"duplicate mount point: {entry['destination']}")
        seen.add(entry["destination"])
    for target, source in extra_files.items():
        if target not in seen:  # a user's own /etc/hosts wins
            user.append({"destination": target, "type": "bind", "source": source,
                         "options": ["rbind", *(["ro"] if options.read_only else []), "rprivate"]})  # fmt: skip
            seen.add(target)
    user.sort(key=lambda entry: len([p for p in entry["destination"].split("/") if p]))
    mounted_dev = "/dev" in seen
    defaults = [{"destination": dest, "type": kind, "source": source, "options": list(options_)}
                for dest, kind, source, options_ in DEFAULT_MOUNTS
                if dest not in seen and not (mounted_dev and dest.startswith("/dev/"))]  # fmt: skip
    if options.read_only:
        for entry in defaults:
            if entry["destination"] not in _WRITABLE_WHEN_READ_ONLY and "ro" not in entry["options"]:
                entry["options"].append("ro")
    for entry in defaults:
        if (entry["destination"] == "/sys" and options.privileged) or (
                entry["type"] == "cgroup" and (options.privileged or security.writable_cgroups)):
            entry["options"] = [o for o in entry["options"] if o != "ro"]
    return defaults + user


def _mount_entry(mount: Mount) -> dict:
    if mount.kind == "tmpfs":
        merged = opts.merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", *mount.options,
                                           *(["ro"] if mount.readonly else [])])  # fmt: skip
        return {"destination": mount.target, "type": "tmpfs", "source": "tmpfs", "options": merged}
    if not mount.source.startswith("/"):
        raise InvalidArgument(f"mount {mount.target}: source {mount.source!r} is not a host path")
    mode = "bind" if "bind" in mount.options else "rbind"
    rest = [o for o in mount.options if o not in ("bind", "rbind")]
    return {"destination": mount.target, "type": "bind", "source": mount.source,
            "options": [mode, *(["ro"] if mount.readonly else []), *rest]}  # fmt: skip


# -- security


class SecurityOptions:
    """--security-opt, as dockerd reads them."""

    def __init__(self):
        self.no_new_privileges = False
        self.seccomp = "builtin"  # "builtin", "unconfined" or a profile's JSON / file
        self.apparmor = None
        self.unmask_paths = False
        self.writable_cgroups = False

    @classmethod
    def parse(cls, texts) -> "SecurityOptions":
        found = cls()
        for text in texts:
            key, value = opts.parse_security_opt(text)
            if key == "no-new-privileges":
                found.no_new_privileges = opts.parse_bool(value)
            elif key == "writable-cgroups":
                found.writable_cgroups = opts.parse_bool(value)
            elif key == "seccomp":
                found.seccomp = value
            elif key == "systempaths":
                found.unmask_paths = True
            elif key == "apparmor" and value != "unconfined" and lsm.apparmor_enabled():
                found.apparmor = value  # ignored where AppArmor is off, as dockerd does
        return found


def _apply_privileges(linux: dict, options: RunOptions, security: SecurityOptions, capabilities: list[str]) -> None:
    """Masked and read-only paths, seccomp and devices: Docker's confinement,
    all lifted by --privileged."""
    if options.privileged:
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        linux["devices"] = host_devices()
        return
    if not security.unmask_paths:
        linux["maskedPaths"] = list(MASKED_PATHS) + _thermal_throttle_paths()
        linux["readonlyPaths"] = list(READONLY_PATHS)
    profile = _seccomp(security.seccomp, capabilities)
    if profile is not None:
        linux["seccomp"] = profile


def _seccomp(choice: str, capabilities: list[str]) -> dict | None:
    if choice == "unconfined":
        return None
    if choice == "builtin":
        return seccomp_profile.default_profile(set(capabilities))
    text = choice
    if not choice.lstrip().startswith("{"):
        try:
            with open(choice, "rb") as f:
                text = f.read()
        except OSError as err:
            raise (NotFound if isinstance(err, FileNotFoundError) else InvalidArgument)(
                f"opening seccomp profile ({choice}) failed: {os.strerror(err.errno).lower()}") from None
    return seccomp_profile.load_profile(text, set(capabilities))


def _thermal_throttle_paths() -> list[str]:
    """moby masks each CPU's thermal_throttle (and /proc/interrupts): a
    side channel on what other tenants run."""
    base = "/sys/devices/system/cpu"
    try:
        cpus = sorted(name for name in os.listdir(base) if name[3:].isdigit() and name.startswith("cpu"))
    except OSError:
        return []
    return [f"{base}/{cpu}/thermal_throttle" for cpu in cpus if os.path.isdir(f"{base}/{cpu}/thermal_throttle")]


# The host's /dev entries a privileged container does not get as devices
# (containerd's HostDevices): they are mounts or links there.
_SKIPPED_DEV_DIRS = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def host_devices(root: str = "/dev") -> list[dict]:
    """Every character and block device under /dev, for --privileged."""
    devices = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DEV_DIRS]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path == os.path.join(root, "console"):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
            if kind is None or (kind == "c" and os.major(st.st_rdev) == 0):
                continue
            devices.append({"path": "/dev" + path[len(root):], "type": kind, "major": os.major(st.st_rdev),
                            "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
                            "uid": st.st_uid, "gid": st.st_gid})  # fmt: skip
    return devices
