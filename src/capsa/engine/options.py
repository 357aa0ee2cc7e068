"""The options of `capsa run` and `capsa create`, and a parser for each flag.

Every parser takes one flag's text and returns a typed value, or raises
InvalidArgument with Docker's own message (the CLI's, or the daemon's when
the daemon is the one that checks: `invalid volume specification: '...'`).
RunOptions holds JSON values only, because the engine stores it as the
container's config: numbers are parsed (bytes, CPUs, seconds), while flags
whose parsed form is a structure (-v, --mount, --tmpfs, --ulimit, --restart,
--stop-signal) keep their text, checked once by from_flags() and parsed
again where they are used.
"""

import os
import posixpath
import re
import signal

from capsa.errors import InvalidArgument, NotFound, Unsupported
from capsa.record import field, record

DEFAULT_RESTART = "no"
CPU_PERIOD = 100_000  # µs; the CFS period Docker uses for --cpus (100ms)
RLIM_INFINITY = 2**64 - 1  # how config.json spells "unlimited"


@record
class RunOptions:
    """What `capsa run`/`create` was asked for (see from_flags for the flags).

    env holds "K=V" entries already resolved by parse_env (a bare "K" unsets
    K); env_files are read when the spec is built. entrypoint None keeps the
    image's, [] is Docker's `--entrypoint ""` (no entrypoint, no image Cmd).
    """

    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    group_add: list[str] = field(default_factory=list)
    hostname: str | None = None
    tty: bool = False
    stdin: bool = False
    read_only: bool = False
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # -v specs
    mounts: list[str] = field(default_factory=list)  # --mount specs
    tmpfs: list[str] = field(default_factory=list)  # --tmpfs specs
    labels: dict[str, str] = field(default_factory=dict)
    memory: int | None = None  # bytes
    memory_swap: int | None = None  # bytes of memory plus swap; -1: unlimited
    cpus: float | None = None  # --cpus, checked by parse_cpus
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None
    ulimits: list[str] = field(default_factory=list)  # "nofile=1024:2048"
    stop_signal: str | None = None
    stop_timeout: int | None = None
    init: bool | None = None
    restart: str = DEFAULT_RESTART
    health_cmd: str | None = None
    health_interval: float | None = None  # seconds
    health_timeout: float | None = None
    health_start_period: float | None = None
    health_retries: int | None = None
    no_healthcheck: bool = False
    log_opts: list[str] = field(default_factory=list)  # "key=value"
    runtime: str | None = None
    network: str = "bridge"  # a network's name, none, host or container:<id>
    network_aliases: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)  # -p specs
    publish_all: bool = False
    expose: list[str] = field(default_factory=list)  # "80/tcp"
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_option: list[str] = field(default_factory=list)
    add_host: list[str] = field(default_factory=list)  # "name:address"
    name: str | None = None
    rm: bool = False
    detach: bool = False


@record(frozen=True)
class Mount:
    """One -v, --mount or --tmpfs. source: a host path (bind), a volume name
    ("" for an anonymous volume) or "" (tmpfs); options: what config.json's
    mount gets besides the bind mode and "ro" (propagation, "rro", tmpfs data;
    "bind" asks for a non-recursive bind)."""

    kind: str  # "bind" | "volume" | "tmpfs"
    source: str
    target: str
    readonly: bool = False
    options: tuple[str, ...] = ()
    nocopy: bool = False  # don't fill a new volume with the image's files


@record(frozen=True)
class Ulimit:
    name: str
    soft: int  # -1: unlimited
    hard: int

    def to_rlimit(self) -> dict:
        return {"type": "RLIMIT_" + self.name.upper(), "soft": _rlim(self.soft), "hard": _rlim(self.hard)}


@record(frozen=True)
class RestartPolicy:
    name: str = DEFAULT_RESTART
    maximum_retry_count: int = 0


def _rlim(value: int) -> int:
    return RLIM_INFINITY if value < 0 else value


# -- sizes, CPUs, counts


# go-units' RAMInBytes: 1024-based, unit and "b" optional, case-insensitive.
_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(text: str) -> int:
    """ "256m" -> 268435456, as Docker's -m, --memory-swap, --shm-size, tmpfs-size."""
    match = _SIZE.match(text)
    try:
        size = float(match.group(1)) if match else None
    except ValueError:  # "1.2.3" matches the pattern but is no number
        size = None
    if size is None or size * _BINARY[(match.group(2) or "").lower()] >= 2**63:
        raise InvalidArgument(f"invalid size: '{text}'")
    return int(size * _BINARY[(match.group(2) or "").lower()])


def parse_memory_swap(text: str) -> int:
    """--memory-swap: bytes, or -1 for unlimited swap."""
    return -1 if text == "-1" else parse_bytes(text)


def parse_cpus(text: str, host_cpus: int | None = None) -> tuple[int, int] | None:
    """--cpus "1.5" -> (quota 150000, period 100000) µs; "0" means no limit (None)."""
    # With decimal, 3 ms to import: only for the flags that need it.
    from fractions import Fraction

    try:
        cpus = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise InvalidArgument(f"failed to parse {text} as a rational number") from None
    nano = cpus * 1_000_000_000
    if nano.denominator != 1:
        raise InvalidArgument("value is too precise")
    host_cpus = host_cpus or len(os.sched_getaffinity(0))
    if nano < 0 or nano > host_cpus * 1_000_000_000:
        raise InvalidArgument(f"range of CPUs is from 0.01 to {host_cpus}.00, as there are only "
                              f"{host_cpus} CPUs available")  # fmt: skip
    if nano == 0:
        return None
    return int(nano) * CPU_PERIOD // 1_000_000_000, CPU_PERIOD


_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def parse_cpuset(text: str, available: set[int] | None = None) -> str:
    """--cpuset-cpus "0-2,4": every CPU must exist and be ours to use."""
    if not _CPU_LIST.match(text):
        raise InvalidArgument(f"invalid value {text} for cpuset cpus: invalid format: {text}")
    wanted = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise InvalidArgument(f"invalid value {text} for cpuset cpus: invalid range format: {part}")
        wanted.update(range(int(low), int(high or low) + 1))
    available = available if available is not None else os.sched_getaffinity(0)
    if not wanted <= available:
        raise InvalidArgument(f"requested CPUs are not available - requested {text}, "
                              f"available: {_cpu_list(available)}")  # fmt: skip
    return text


def _cpu_list(cpus: set[int]) -> str:
    ranges, ordered = [], sorted(cpus)
    for cpu in ordered:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


# -- ulimits, restart, signals, durations


# go-units' names; "as" is left out as Docker does (unusable the way runc starts the init).
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
           "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")  # fmt: skip


def parse_ulimit(text: str) -> Ulimit:
    """ "nofile=1024:2048" (soft[:hard]; "infinity" or -1 is unlimited)."""
    name, sep, values = text.partition("=")
    if not sep:
        raise InvalidArgument(f"invalid ulimit argument: {text}")
    if name not in ULIMITS:
        raise InvalidArgument(f"invalid ulimit type: {name}")
    limits = values.split(":")
    if len(limits) > 2:
        raise InvalidArgument(f"too many limit value arguments - {values}, can only have up to "
                              "two, `soft[:hard]`")  # fmt: skip
    soft = _ulimit_value(limits[0])
    hard = _ulimit_value(limits[1]) if len(limits) == 2 else soft
    if hard != -1 and soft == -1:
        raise InvalidArgument("ulimit soft limit must be less than or equal to hard limit: "
                              f"soft: -1 (unlimited), hard: {hard}")  # fmt: skip
    if hard != -1 and soft > hard:
        raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
    return Ulimit(name, soft, hard)


def _ulimit_value(text: str) -> int:
    if text == "infinity":
        return -1
    if not re.fullmatch(r"[+-]?\d+", text) or not -(2**63) <= int(text) < 2**63:
        raise InvalidArgument(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return int(text)


_RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")


def parse_restart(text: str) -> RestartPolicy:
    """ "no", "always", "unless-stopped", "on-failure[:N]"."""
    if text == "":
        return RestartPolicy()
    name, sep, count = text.partition(":")
    if sep and not name:
        raise InvalidArgument("invalid restart policy format: no policy provided before colon")
    if count and not re.fullmatch(r"[+-]?\d+", count):
        raise InvalidArgument("invalid restart policy format: maximum retry count must be an integer")
    retries = int(count) if count else 0
    if name not in _RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one of "
                              "'no', 'always', 'on-failure', or 'unless-stopped'")  # fmt: skip
    if name != "on-failure" and retries != 0:
        tail = " and cannot be negative" if retries < 0 else ""
        raise InvalidArgument(f"invalid restart policy: maximum retry count can only be used with 'on-failure'{tail}")
    if retries < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    return RestartPolicy(name, retries)


# moby/sys/signal's Linux table: names without "SIG", RTMIN+n and RTMAX-n.
_SIGNALS = {name: getattr(signal, "SIG" + name) for name in (
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ")}  # fmt: skip
_SIGNALS.update({"RTMIN": signal.SIGRTMIN, "RTMAX": signal.SIGRTMAX})
_SIGNALS.update({f"RTMIN+{n}": signal.SIGRTMIN + n for n in range(1, 16)})
_SIGNALS.update({f"RTMAX-{n}": signal.SIGRTMAX - n for n in range(1, 15)})


def parse_signal(text: str) -> int:
    """ "SIGTERM", "term", "TERM" or "15" -> 15."""
    if re.fullmatch(r"[+-]?\d+", text):
        number = int(text)
        if not 0 < number <= signal.SIGRTMAX:
            raise InvalidArgument(f"invalid signal: {text}")
        return number
    name = text.upper()
    number = _SIGNALS.get(name.removeprefix("SIG"))
    if number is None:
        raise InvalidArgument(f"invalid signal: {text}")
    return int(number)


# Go's time.ParseDuration, which the health flags use.
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}  # fmt: skip
_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_UNIT = re.compile(r"[^\d.]*")


def parse_duration(text: str) -> float:
    """ "30s", "1m30s", "500ms", "1.5h" -> seconds (negative durations allowed, as Go)."""
    rest, sign = text, 1
    if rest[:1] in ("+", "-"):
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise InvalidArgument(f'time: invalid duration "{text}"')
    from fractions import Fraction  # see parse_cpus

    total = Fraction(0)
    while rest:
        number = _NUMBER.match(rest)
        whole, fraction = number.group(1), number.group(2) or ""
        if not whole and not fraction:
            raise InvalidArgument(f'time: invalid duration "{text}"')
        rest = rest[number.end():]
        unit = _UNIT.match(rest).group()
        if not unit:
            raise InvalidArgument(f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise InvalidArgument(f'time: unknown unit "{unit}" in duration "{text}"')
        rest = rest[len(unit):]
        value = int(whole or 0) + (Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0)
        total += value * _DURATION_UNITS[unit]
    return float(sign * total / 1_000_000_000)


# -- environment and labels


def parse_env(text: str) -> str:
    """-e: "K=V" as given; a bare "K" takes this process's value, or stays
    bare (which unsets K in the container) when there is none."""
    key, sep, _ = text.partition("=")
    if not key:
        raise InvalidArgument(f"invalid environment variable: {text}")
    if sep or key not in os.environ:
        return text
    return f"{key}={os.environ[key]}"


def parse_env_file(path: str) -> list[str]:
    """--env-file, by Docker's rules: "K=V" kept as written (no quote or
    escape processing), a bare "K" takes this process's value (or is left out),
    leading whitespace dropped, "#" starts a comment line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise NotFound(f"open {path}: no such file or directory") from None
    except OSError as err:
        raise InvalidArgument(f"open {path}: {err.strerror.lower()}") from None
    entries = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode().lstrip()
        except UnicodeDecodeError:
            raise InvalidArgument(f"invalid env file ({path}): invalid utf8 bytes at line {number}") from None
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key:
            raise InvalidArgument(f"invalid env file ({path}): no variable name on line '{line}'")
        if " " in key or "\t" in key:
            raise InvalidArgument(f"invalid env file ({path}): variable '{key}' contains whitespaces")
        if sep:
            entries.append(line)
        elif key in os.environ:
            entries.append(f"{key}={os.environ[key]}")
    return entries


def parse_label(text: str) -> tuple[str, str]:
    """ "key=value" (value optional) -> (key, value)."""
    key, _, value = text.partition("=")
    key = key.lstrip(" \t")
    if not key:
        raise InvalidArgument(f"invalid label '{text}': empty name")
    if " " in key or "\t" in key:
        raise InvalidArgument(f"label '{key}' contains whitespaces")
    return key, value


_HOSTNAME = re.compile(r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])\.)*"
                       r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$")  # fmt: skip


def parse_hostname(text: str) -> str:
    """RFC 1123, at most HOST_NAME_MAX (64) bytes."""
    if len(text) > 64 or not _HOSTNAME.match(text):
        raise InvalidArgument(f"invalid hostname format: {text}")
    return text


def parse_security_opt(text: str) -> tuple[str, str]:
    """--security-opt "key=value" (or the older "key:value"); a bare
    "no-new-privileges" means "no-new-privileges=true"."""
    if text == "no-new-privileges":
        return text, "true"
    key, sep, value = text.partition("=")
    if not sep:
        key, sep, value = text.partition(":")
    if not sep or not value:
        raise InvalidArgument(f'invalid --security-opt: "{text}"')
    if key not in ("seccomp", "apparmor", "label", "no-new-privileges", "systempaths", "writable-cgroups"):
        raise InvalidArgument(f'invalid --security-opt 2: "{text}"')
    if key in ("no-new-privileges", "writable-cgroups") and parse_bool(value) is None:
        raise InvalidArgument(f'invalid --security-opt 2: "{text}"')
    if key == "systempaths" and value != "unconfined":
        raise InvalidArgument(f'invalid --security-opt 2: "{text}"')
    return key, value


def parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    return None


# -- mounts: -v, --mount, --tmpfs


_RW_MODES = ("rw", "ro", "ro-non-recursive", "ro-force-recursive", "rro")
_PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
_MODE_KINDS = (_RW_MODES, ("z", "Z"), _PROPAGATIONS, ("nocopy",), ("consistent", "cached", "delegated"))
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def _valid_mode(mode: str) -> bool:
    """Every option known, and at most one of each kind (moby's linuxValidMountMode)."""
    if mode == "":
        return True
    options = mode.split(",")
    counts = [sum(o in kind for o in options) for kind in _MODE_KINDS]
    return sum(counts) == len(options) and max(counts) <= 1


def parse_volume(spec: str) -> Mount:
    """-v "/host:/ctr[:mode]" (bind), "name:/ctr[:mode]" (named volume) or
    "/ctr" (anonymous volume); mode: rw|ro, a propagation, nocopy, z|Z."""
    parts = spec.split(":", 3)
    if parts[0] == "" or len(parts) == 4 or (len(parts) == 2 and _valid_mode(parts[1])):
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    source, target, mode = ("", parts[0], "") if len(parts) == 1 else (parts + [""])[:3]
    if not _valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    if source.startswith("."):  # the CLI makes ./dir absolute, so it is a bind
        source = os.path.abspath(source)
    kind = "bind" if source.startswith("/") else "volume"
    modes = mode.split(",") if mode else []
    readonly = any(m in ("ro", "rro") or m.startswith("ro-") for m in modes)
    if kind != "bind" and any(m == "rro" or m.startswith("ro-") for m in modes):
        raise InvalidArgument(f"mount mode \"{mode}\" requires a bind mount: invalid volume specification: '{spec}'")
    propagation = [m for m in modes if m in _PROPAGATIONS]
    options = []
    if kind == "bind":
        options.append(propagation[0] if propagation else "rprivate")
    if readonly and "ro-non-recursive" not in modes:
        options.append("rro")
    mount = Mount(kind, _clean(source) if kind == "bind" else source, target, readonly,
                  tuple(options), nocopy="nocopy" in modes)  # fmt: skip
    extra = ("BindOptions" if kind == "volume" and propagation
             else "VolumeOptions" if kind == "bind" and "nocopy" in modes else None)  # fmt: skip
    try:
        return _checked(mount, extra)
    except InvalidArgument as err:
        raise InvalidArgument(f"invalid volume specification: '{spec}': {err}") from None


def parse_mount(spec: str) -> Mount:
    """--mount "type=bind,source=/a,target=/b,readonly" (bind, volume, tmpfs);
    a bind's source must exist."""
    import csv  # only --mount needs it

    fields = next(csv.reader([spec]), [])
    kind, source, target, readonly, nocopy = "volume", "", "", False, False
    groups, propagation, nonrecursive, size, mode = set(), None, False, None, None
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
                raise InvalidArgument(f"invalid field '{item}' must be a key=value pair")
            value = "true"
        if key == "type":
            kind = value.lower()
        elif key in ("source", "src"):
            source = os.path.abspath(value) if value == "." or value.startswith("./") else value
        elif key in ("target", "dst", "destination"):
            target = value
        elif key in ("readonly", "ro"):
            readonly = _flag_value(key, value)
        elif key == "consistency":
            pass  # only meaningful on Docker Desktop
        elif key == "bind-propagation":
            groups.add("bind")
            propagation = value.lower()
        elif key == "bind-nonrecursive":
            groups.add("bind")
            nonrecursive = _flag_value(key, value)
        elif key == "volume-nocopy":
            groups.add("volume")
            nocopy = _flag_value(key, value)
        elif key == "volume-label":
            groups.add("volume")  # labels of a volume made here: none kept
        elif key == "volume-driver":
            groups.add("volume")
            if value not in ("", "local"):
                raise Unsupported(f"volume driver {value} is not supported: only local volumes are")
        elif key == "volume-opt":
            raise Unsupported("volume-opt is not supported: local volumes take no options")
        elif key == "tmpfs-size":
            groups.add("tmpfs")
            size = _tmpfs_value(key, value, parse_bytes)
        elif key == "tmpfs-mode":
            groups.add("tmpfs")
            mode = _tmpfs_value(key, value, lambda v: int(v, 8) if re.fullmatch(r"[0-7]+", v) else None)
        else:
            raise InvalidArgument(f"unexpected key '{key}' in '{item}'")
    if not kind:
        raise InvalidArgument("type is required")
    if not target:
        raise InvalidArgument("target is required")
    mixed = sorted(groups - {kind})
    if mixed:
        raise InvalidArgument(f"cannot mix '{mixed[0]}-*' options with mount type '{kind}'")
    options: list[str] = []
    if kind == "bind":
        if propagation is not None and propagation not in _PROPAGATIONS:
            raise InvalidArgument(f'invalid mount config for type "bind": invalid propagation mode: {propagation}')
        options += ["bind"] if nonrecursive else []
        options.append(propagation or "rprivate")
    if kind == "tmpfs":
        options += [f"mode={mode:o}"] if mode else []
        options += [f"size={_tmpfs_size(size)}"] if size else []
    elif readonly:
        options.append("rro")
    extra = "Source" if kind == "tmpfs" and source else None
    mount = _checked(Mount(kind, _clean(source) if kind == "bind" and source.startswith("/") else source,
                           target, readonly, tuple(options), nocopy), extra)  # fmt: skip
    if kind == "bind" and not os.path.exists(mount.source):  # unlike -v, which makes it
        raise InvalidArgument(f'invalid mount config for type "bind": bind mount source path does not exist: '
                              f"{mount.source}")  # fmt: skip
    return mount


def _flag_value(key: str, value: str) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise InvalidArgument(f"invalid value for {key}: {value}")
    return parsed


def _tmpfs_value(key: str, value: str, parse):
    try:
        parsed = parse(value)
    except InvalidArgument:
        parsed = None
    if parsed is None:
        raise InvalidArgument(f"invalid value for {key}: {value}")
    return parsed


def _tmpfs_size(size: int) -> str:
    """Bytes as tmpfs's size=, with the largest unit that divides them."""
    for suffix, unit in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _checked(mount: Mount, extra_field: str | None) -> Mount:
    """moby's validateMountConfig; the target comes back cleaned."""
    def fail(why: str):
        raise InvalidArgument(f'invalid mount config for type "{mount.kind}": {why}')

    if mount.kind not in ("bind", "volume", "tmpfs"):
        fail("mount type unknown")
    if not mount.target:
        fail("field Target must not be empty")
    if _clean(mount.target) == "/":
        fail("invalid specification: destination can't be '/'")
    if not mount.target.startswith("/"):
        fail(f"invalid mount path: '{mount.target}' mount path must be absolute")
    if extra_field:
        fail(f"field {extra_field} must not be specified")
    if mount.kind == "bind" and not mount.source:
        fail("field Source must not be empty")
    if mount.kind == "bind" and not mount.source.startswith("/"):
        fail(f"invalid mount path: '{mount.source}' mount path must be absolute")
    if mount.kind == "volume" and not mount.source and mount.readonly:
        fail("must not set ReadOnly mode when using anonymous volumes")
    if mount.kind == "volume" and mount.source and not _VOLUME_NAME.match(mount.source):
        raise InvalidArgument(f'create {mount.source}: "{mount.source}" includes invalid characters for a '
                              'local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you '
                              "intended to pass a host directory, use absolute path")  # fmt: skip
    return Mount(mount.kind, mount.source, _clean(mount.target), mount.readonly, mount.options, mount.nocopy)


def _clean(path: str) -> str:
    """Go's path.Clean: normpath, but "//x" is "/x"."""
    cleaned = posixpath.normpath(path) if path else path
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


# moby/sys/mount's MergeTmpfsOptions: flags collide with their opposite,
# every propagation with the others; "key=value" data by key; the last wins.
_TMPFS_FLAGS = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev",
    "nodev": "nodev", "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync",
    "dirsync": "dirsync", "remount": "remount", "mand": "mand", "nomand": "mand",
    "atime": "noatime", "noatime": "noatime", "diratime": "nodiratime", "nodiratime": "nodiratime",
    "relatime": "relatime", "norelatime": "relatime", "strictatime": "strictatime",
    "nostrictatime": "strictatime",
    **{p: "propagation" for p in ("bind", "rbind", "unbindable", "runbindable") + _PROPAGATIONS},
}  # fmt: skip
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """Options without duplicates, in order; a later option replaces an earlier
    one it collides with. InvalidArgument names an unknown option."""
    seen, merged = set(), []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = _TMPFS_FLAGS.get(option)
        if key is None:
            name, sep, _ = option.partition("=")
            if not sep or name not in _TMPFS_DATA:
                raise InvalidArgument(f'invalid tmpfs option "{option}"')
            key = "=" + name
        if key not in seen:
            seen.add(key)
            merged.insert(0, option)
    return merged


def parse_tmpfs(spec: str) -> Mount:
    """--tmpfs "/run[:options]", options as mount(8) takes them for tmpfs."""
    target, _, data = spec.partition(":")
    options = merge_tmpfs_options(data.split(",")) if data else []
    readonly = "ro" in options
    kept = tuple(o for o in options if o not in ("ro", "rw"))
    if _clean(target) == "/":
        raise InvalidArgument("invalid specification: destination can't be '/'")
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid mount path: '{target}' mount path must be absolute")
    return Mount("tmpfs", "", _clean(target), readonly, kept)


# -- argparse flags -> RunOptions


def _rational(text: str) -> float:
    """--cpus as a float ("1.5", "3/2"), as parse_cpus reads it."""
    from fractions import Fraction  # see parse_cpus

    return float(Fraction(text))


def from_flags(args) -> RunOptions:
    """RunOptions from the `capsa run`/`create` flags (argparse names), every
    value checked now, so that a bad flag fails before anything is made."""
    for spec in args.volume:
        parse_volume(spec)
    for spec in args.mount:
        parse_mount(spec)
    for spec in args.tmpfs:
        parse_tmpfs(spec)
    for text in args.ulimit:
        parse_ulimit(text)
    parse_restart(args.restart or DEFAULT_RESTART)
    if args.stop_signal:
        parse_signal(args.stop_signal)
    if args.cpus:
        parse_cpus(args.cpus)
    if args.cpuset_cpus:
        parse_cpuset(args.cpuset_cpus)
    if args.hostname:
        parse_hostname(args.hostname)
    health = _health_flags(args)
    network = _network_flags(args)
    return RunOptions(
        image=args.image, command=list(args.command) or None,
        entrypoint=None if args.entrypoint is None else [args.entrypoint] if args.entrypoint else [],
        env=[parse_env(e) for e in args.env], env_files=list(args.env_file), workdir=args.workdir,
        user=args.user, group_add=list(args.group_add), hostname=args.hostname, tty=args.tty,
        stdin=args.interactive, read_only=args.read_only, privileged=args.privileged,
        cap_add=list(args.cap_add), cap_drop=list(args.cap_drop),
        security_opt=[_security_opt(o) for o in args.security_opt],
        volumes=list(args.volume), mounts=list(args.mount), tmpfs=list(args.tmpfs),
        labels=dict(parse_label(label) for label in args.label),
        memory=parse_bytes(args.memory) if args.memory else None,
        memory_swap=parse_memory_swap(args.memory_swap) if args.memory_swap else None,
        cpus=_rational(args.cpus) if args.cpus else None, cpu_shares=args.cpu_shares,
        cpuset_cpus=args.cpuset_cpus, pids_limit=args.pids_limit, ulimits=list(args.ulimit),
        stop_signal=args.stop_signal, stop_timeout=args.stop_timeout, init=args.init or None,
        restart=args.restart or DEFAULT_RESTART, **health,
        log_opts=[o if "=" in o else o + "=" for o in args.log_opt], runtime=args.runtime, **network,
        name=args.name, rm=args.rm, detach=args.detach,
    )  # fmt: skip


def _network_flags(args) -> dict:
    from capsa.network import ports

    for spec in args.publish:
        ports.parse_publish(spec)
    for server in args.dns:
        _ip_address(server, "dns")
    return {"network": args.network or "bridge", "network_aliases": list(args.network_alias),
            "publish": list(args.publish), "publish_all": args.publish_all,
            "expose": [key for spec in args.expose for key in ports.parse_expose(spec)],
            "dns": list(args.dns), "dns_search": list(args.dns_search), "dns_option": list(args.dns_option),
            "add_host": [":".join(parse_add_host(entry)) for entry in args.add_host]}  # fmt: skip


def parse_add_host(entry: str) -> tuple[str, str]:
    """--add-host "name:address" (Docker also takes "name=address")."""
    name, sep, address = entry.replace("=", ":", 1).partition(":")
    if not sep or not name:
        raise InvalidArgument(f"bad format for add-host: {entry!r}")
    _ip_address(address.strip("[]"), "add-host")
    return name, address


def _ip_address(text: str, flag: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid IP address in {flag}: {text}") from None


def _health_flags(args) -> dict:
    durations = {}
    for flag in ("interval", "timeout", "start_period"):
        text = getattr(args, f"health_{flag}", None)
        durations[flag] = parse_duration(text) if text else None
        if durations[flag] is not None and durations[flag] < 0:
            raise InvalidArgument(f"--health-{flag.replace('_', '-')} cannot be negative")
    retries = args.health_retries
    if retries is not None and retries < 0:
        raise InvalidArgument("--health-retries cannot be negative")
    given = args.health_cmd or retries is not None or any(v is not None for v in durations.values())
    if args.no_healthcheck and given:
        raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
    return {"health_cmd": args.health_cmd, "health_interval": durations["interval"],
            "health_timeout": durations["timeout"], "health_start_period": durations["start_period"],
            "health_retries": retries, "no_healthcheck": args.no_healthcheck}  # fmt: skip


def _security_opt(text: str) -> str:
    """Checked; seccomp=FILE becomes seccomp=<the file's JSON>, as Docker's
    CLI sends it, so the container keeps the profile it was created with."""
    key, value = parse_security_opt(text)
    if key != "seccomp" or value in ("unconfined", "builtin") or value.lstrip().startswith("{"):
        return text
    import json

    try:
        with open(value, "rb") as f:
            profile = json.loads(f.read())
    except OSError as err:
        raise InvalidArgument(f"opening seccomp profile ({value}) failed: {err.strerror.lower()}") from None
    except ValueError as err:
        raise InvalidArgument(f"compacting json for seccomp profile ({value}) failed: {err}") from None
    return "seccomp=" + json.dumps(profile, separators=(",", ":"), ensure_ascii=False)
