"""capsa-shim's command line, parsed and checked before anything starts.

    capsa-shim --id ID --bundle DIR --state-dir DIR --runtime PATH
               [--runtime-root DIR] [--runtime-arg ARG]... --log-path FILE
               [--log-max-size BYTES] [--log-max-file N] [--tty] [--stdin] [--start-on-attach]
               [--restart no|always|unless-stopped|on-failure[:N]]
               [--health-cmd JSON-ARGV [--health-interval S] [--health-timeout S]
                [--health-retries N] [--health-start-period S]]
               [--stop-signal SIG]

A small table parser, not argparse: argparse imports re and enum, which cost
more than the shim's own start-up. Values always take the next word, so
`--runtime-arg --systemd-cgroup` works.
"""

import _signal
import posix
from _stat import S_ISDIR

from capsa import fastjson
from capsa.errors import InvalidArgument
from capsa.shim.logfile import DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE
from capsa.shim.restart import RestartPolicy

# name: (takes a value, default); lists collect repeated flags.
FLAGS = {
    "id": (True, None), "bundle": (True, None), "state-dir": (True, None),
    "runtime": (True, None), "runtime-root": (True, None), "runtime-arg": (True, []),
    "log-path": (True, None), "log-max-size": (True, str(DEFAULT_MAX_SIZE)),
    "log-max-file": (True, str(DEFAULT_MAX_FILES)), "tty": (False, False),
    "stdin": (False, False), "restart": (True, "no"), "health-cmd": (True, None),
    "health-interval": (True, "30"), "health-timeout": (True, "30"),
    "health-retries": (True, "3"), "health-start-period": (True, "0"),
    "stop-signal": (True, None), "start-on-attach": (False, False), "help": (False, False),
}  # fmt: skip
REQUIRED = ("id", "bundle", "state-dir", "runtime", "log-path")
PATHS = ("bundle", "state-dir", "runtime", "runtime-root", "log-path")
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+.-")


class Healthcheck:
    """Docker's HealthConfig: argv run in the container, times in seconds."""

    def __init__(self, argv: list[str], interval: float = 30.0, timeout: float = 30.0,
                 retries: int = 3, start_period: float = 0.0):  # fmt: skip
        self.argv = argv
        self.interval = interval
        self.timeout = timeout
        self.retries = retries
        self.start_period = start_period


class Options:
    """What one shim supervises, and how."""

    def __init__(self, values: dict):
        self.id: str = values["id"]
        self.bundle: str = values["bundle"]
        self.state_dir: str = values["state-dir"]
        self.runtime: str = values["runtime"]
        self.runtime_root: str | None = values["runtime-root"]
        self.runtime_args: list[str] = values["runtime-arg"]
        self.log_path: str = values["log-path"]
        self.log_max_size = parse_size(values["log-max-size"], "log-max-size")
        self.log_max_files = _count(values["log-max-file"], "log-max-file", minimum=1)
        self.tty: bool = values["tty"]
        self.stdin: bool = values["stdin"]
        self.start_on_attach: bool = values["start-on-attach"]
        self.restart = RestartPolicy.parse(values["restart"])
        self.stop_signal_given = values["stop-signal"] is not None
        self.stop_signal = parse_signal(values["stop-signal"] or "SIGTERM")
        self.health = _healthcheck(values) if values["health-cmd"] is not None else None

    def path(self, name: str) -> str:
        """A file in the state directory."""
        return f"{self.state_dir}/{name}"


def parse_args(argv: list[str]) -> Options | None:
    """Options from argv, or None when --help was asked for."""
    values = {name: (list(default) if isinstance(default, list) else default)
              for name, (_, default) in FLAGS.items()}  # fmt: skip
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token[2:].partition("=") if token.startswith("--") else (token, "", "")
        if name not in FLAGS or not token.startswith("--"):
            raise InvalidArgument(f"unknown flag {token!r}")
        takes_value, default = FLAGS[name]
        if takes_value and not eq:
            i += 1
            if i >= len(argv):
                raise InvalidArgument(f"flag --{name} needs a value")
            value = argv[i]
        elif not takes_value:
            if eq:
                raise InvalidArgument(f"flag --{name} takes no value")
            value = True
        if isinstance(default, list):
            values[name].append(value)
        else:
            values[name] = value
        i += 1
    if values["help"]:
        return None
    for name in REQUIRED:
        if values[name] is None:
            raise InvalidArgument(f"missing --{name}")
    for name in PATHS:
        if values[name] is not None and not values[name].startswith("/"):
            raise InvalidArgument(f"--{name} must be an absolute path: {values[name]!r}")
    check_id(values["id"])
    if not posix.access(values["runtime"], posix.X_OK) or _is_dir(values["runtime"]):
        raise InvalidArgument(f"runtime {values['runtime']} is not an executable file")
    return Options(values)


def _is_dir(path: str) -> bool:
    try:
        return S_ISDIR(posix.stat(path).st_mode)
    except OSError:
        return False


def check_id(container_id: str) -> None:
    if not container_id or not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id {container_id!r}")


def _healthcheck(values: dict) -> Healthcheck:
    try:
        argv = fastjson.loads(values["health-cmd"])
    except ValueError:
        raise InvalidArgument("--health-cmd must be a JSON array of strings") from None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidArgument("--health-cmd must be a non-empty JSON array of strings")
    retries = _count(values["health-retries"], "health-retries", minimum=0)
    return Healthcheck(
        argv, interval=parse_duration(values["health-interval"], "health-interval", positive=True),
        timeout=parse_duration(values["health-timeout"], "health-timeout", positive=True),
        retries=retries or 3,  # Docker: 0 means the default
        start_period=parse_duration(values["health-start-period"], "health-start-period"),
    )  # fmt: skip


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZES = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30}  # fmt: skip


def parse_duration(text: str, flag: str, positive: bool = False) -> float:
    """Seconds: "1.5", or with one unit as Docker prints them: "500ms", "30s", "1m", "1h"."""
    number, unit = _split_unit(text.strip().lower())
    scale = _UNITS.get(unit or "s")
    try:
        seconds = float(number) * scale if scale and number else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf") or (positive and seconds == 0):  # NaN fails too
        raise InvalidArgument(f"invalid value {text!r} for --{flag}")
    return seconds


def parse_size(text: str, flag: str) -> int:
    """Bytes: "1048576", "512k", "10m", "1g"."""
    number, unit = _split_unit(text.strip().lower())
    scale = _SIZES.get(unit)
    if scale is None or not number.isascii() or not number.isdigit():
        raise InvalidArgument(f"invalid value {text!r} for --{flag}")
    return int(number) * scale


def _split_unit(text: str) -> tuple[str, str]:
    end = len(text)
    while end and text[end - 1].isalpha():
        end -= 1
    return text[:end], text[end:]


def _count(text: str, flag: str, minimum: int = 0) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < minimum:
        raise InvalidArgument(f"invalid value {text!r} for --{flag}")
    return int(text)


def parse_signal(raw: str) -> int:
    """TERM, SIGTERM, term and 15 all name SIGTERM (as runc and docker read them)."""
    if raw.isascii() and raw.isdigit():
        signum = int(raw)
        if 0 < signum < _signal.NSIG:
            return signum
        raise InvalidArgument(f"invalid signal {raw}")
    name = raw.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    value = getattr(_signal, name, None)
    if isinstance(value, int) and not name.startswith("SIG_") and value > 0:
        return value
    raise InvalidArgument(f"unknown signal {raw!r}")
