"""config.json: the default spec (`capsa-runtime spec`) and its validation.

The config stays the parsed JSON dict the bundle holds; `load` checks every
field the runtime acts on, so that bad input is refused before anything on
the host changes.
"""

import os

from capsa import fastjson as json
from capsa.errors import InvalidArgument, NotFound, Unsupported

OCI_VERSION = "1.0.2-dev"  # what runc writes; crun 1.8 refuses anything but 1.0.x

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/proc/scsi",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}  # fmt: skip

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer",
              "poststart", "poststop")  # fmt: skip


def default(rootless: bool = False) -> dict:
    """The config `capsa-runtime spec` writes, the same as runc's."""
    config = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],  # fmt: skip
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS)
                             for k in ("bounding", "effective", "permitted", "ambient")},  # fmt: skip
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "capsa",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                         "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],  # fmt: skip
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if rootless:
        _make_rootless(config)
    return config


def _make_rootless(config: dict) -> None:
    """Adjust the default for an unprivileged user, as `runc spec --rootless`."""
    linux = config["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    linux.pop("resources")
    mounts = [m for m in config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    for m in mounts:
        if m["type"] == "devpts":
            m["options"] = [o for o in m["options"] if o != "gid=5"]
        if m["type"] == "sysfs":
            m.update(type="none", source="/sys",
                     options=["rbind", "nosuid", "noexec", "nodev", "ro"])  # fmt: skip
    config["mounts"] = mounts


def load(bundle: str, systemd_cgroup: bool = False) -> dict:
    """Read and validate <bundle>/config.json."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"failed to load {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"failed to load {path}: {err}") from None
    validate(config, systemd_cgroup)
    return config


def _need(cond, msg: str) -> None:
    if not cond:
        raise InvalidArgument(f"invalid config.json: {msg}")


def validate(config: dict, systemd_cgroup: bool = False) -> None:
    """Raise InvalidArgument naming the first field that is wrong. A systemd
    cgroupsPath (slice:prefix:name) is only valid with --systemd-cgroup."""
    _need(isinstance(config, dict), "not a JSON object")
    _need(isinstance(config.get("ociVersion"), str), "ociVersion must be a string")
    root = config.get("root")
    _need(isinstance(root, dict) and isinstance(root.get("path"), str) and root["path"],
          "root.path is required")  # fmt: skip
    process = config.get("process")
    _need(isinstance(process, dict), "process is required")
    _validate_process(process)
    _need(isinstance(config.get("mounts", []), list), "mounts must be a list")
    for m in config.get("mounts", []):
        _need(isinstance(m, dict) and isinstance(m.get("destination"), str),
              "every mount needs a destination")  # fmt: skip
        _need(os.path.isabs(m["destination"]),
              f"mount destination {m['destination']} is not absolute")  # fmt: skip
        _need(isinstance(m.get("options", []), list), f"options of {m['destination']}")
    hooks = config.get("hooks", {})
    _need(isinstance(hooks, dict), "hooks must be an object")
    for kind, entries in hooks.items():
        _need(kind in HOOK_KINDS, f"unknown hook kind {kind}")
        for hook in entries:
            _need(isinstance(hook, dict) and os.path.isabs(hook.get("path", "")),
                  f"{kind} hook path must be absolute")  # fmt: skip
    _validate_linux(config.get("linux", {}), config, systemd_cgroup)


def validate_process(process: dict) -> None:
    """Check a process object (config.json's, or exec's --process)."""
    _need(isinstance(process, dict), "process must be an object")
    _validate_process(process)


def _validate_process(process: dict) -> None:
    args = process.get("args")
    _need(isinstance(args, list) and args and all(isinstance(a, str) for a in args),
          "process.args must be a non-empty list of strings")  # fmt: skip
    _need(os.path.isabs(process.get("cwd", "/")), "process.cwd must be absolute")
    _need(all(isinstance(e, str) and "=" in e for e in process.get("env", [])),
          "process.env entries must be KEY=value")  # fmt: skip
    user = process.get("user", {})
    _need(isinstance(user.get("uid", 0), int) and isinstance(user.get("gid", 0), int),
          "process.user uid and gid must be numbers")  # fmt: skip
    from capsa.linux.caps import NUMBERS

    for kind, names in process.get("capabilities", {}).items():
        _need(kind in ("bounding", "effective", "inheritable", "permitted", "ambient"),
              f"unknown capability set {kind}")  # fmt: skip
        for name in names:
            _need(name in NUMBERS, f"unknown capability {name}")
    seen = set()
    for rlimit in process.get("rlimits", []):
        kind = rlimit.get("type")
        _need(kind in RLIMITS, f"unknown rlimit {kind}")
        _need(kind not in seen, f"duplicate rlimit {kind}")
        _need(isinstance(rlimit.get("soft"), int) and isinstance(rlimit.get("hard"), int),
              f"rlimit {kind} needs soft and hard")  # fmt: skip
        seen.add(kind)
    if process.get("apparmorProfile") or process.get("selinuxLabel"):
        _check_labels(process)


def _check_labels(process: dict) -> None:
    from capsa.linux import lsm

    if process.get("apparmorProfile") and not lsm.apparmor_enabled():
        raise Unsupported("apparmor profile requested but apparmor is not enabled on this host")
    if process.get("selinuxLabel") and not lsm.selinux_enabled():
        raise Unsupported("selinux label requested but selinux is not enabled on this host")


def _validate_linux(linux: dict, config: dict, systemd_cgroup: bool = False) -> None:
    from capsa.linux.ns import NAMESPACES

    _need(isinstance(linux, dict), "linux must be an object")
    kinds = set()
    for ns in linux.get("namespaces", []):
        kind = ns.get("type")
        _need(kind in NAMESPACES, f"unknown namespace type {kind}")
        _need(kind not in kinds, f"duplicate namespace {kind}")
        kinds.add(kind)
    if "user" in kinds and not any(ns.get("path") for ns in linux["namespaces"]
                                   if ns["type"] == "user"):  # fmt: skip
        _need(linux.get("uidMappings") and linux.get("gidMappings"),
              "a new user namespace needs uidMappings and gidMappings")  # fmt: skip
    for key in ("uidMappings", "gidMappings"):
        for m in linux.get(key, []):
            _need(all(isinstance(m.get(f), int) for f in ("containerID", "hostID", "size")),
                  f"{key} entries need containerID, hostID and size")  # fmt: skip
    if config.get("hostname"):
        _need("uts" in kinds, "hostname needs a new uts namespace")
    for device in linux.get("devices", []):
        _need(os.path.isabs(device.get("path", "")), "device path must be absolute")
        _need(device.get("type") in ("c", "b", "u", "p"), f"device type of {device.get('path')}")
    persona = linux.get("personality")
    _need(persona is None or (isinstance(persona, dict) and
                              persona.get("domain") in ("LINUX", "LINUX32")),
          "personality.domain must be LINUX or LINUX32")  # fmt: skip
    propagation = linux.get("rootfsPropagation")
    _need(propagation in (None, "", "shared", "slave", "private", "unbindable",
                          "rshared", "rslave", "rprivate", "runbindable"),  # fmt: skip
          f"unknown rootfsPropagation {propagation}")
    cgroups_path = linux.get("cgroupsPath")
    _need(cgroups_path is None or isinstance(cgroups_path, str), "cgroupsPath must be a string")
    _need(systemd_cgroup or not (cgroups_path and ":" in cgroups_path
                                 and not cgroups_path.startswith("/")),
          "systemd cgroupsPath (slice:prefix:name) needs --systemd-cgroup")  # fmt: skip
    if linux.get("resources"):
        from capsa.runtime.cgroups import validate_resources

        validate_resources(linux["resources"])
    if linux.get("seccomp"):
        from capsa.runtime import seccomp

        seccomp.validate(linux["seccomp"])
