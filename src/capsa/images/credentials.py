"""Registry credentials, kept in Docker's config.json format.

The file is `$CAPSA_CONFIG/config.json` when CAPSA_CONFIG is set, else
`~/.capsa/config.json` (Docker's is ~/.docker/config.json, same layout):

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"},
               "https://index.docker.io/v1/": {"auth": "…"}}}

Docker Hub's entry is keyed "https://index.docker.io/v1/", as Docker keys
it; `get("docker.io")` finds it and `store("docker.io", …)` writes it. Keys
written as URLs ("https://host/v1/") match their host. Other keys in the
file are kept as they are. Credential helpers ("credsStore") are not used.
The file is replaced atomically and is readable by its owner only.
"""

import base64
import binascii
import contextlib
import json
import os
import tempfile

from capsa.errors import InvalidArgument
from capsa.images.content import fsync_dir

HUB_KEY = "https://index.docker.io/v1/"
HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


def path() -> str:
    directory = os.environ.get("CAPSA_CONFIG") or os.path.join(os.path.expanduser("~"), ".capsa")
    return os.path.join(directory, "config.json")


def get(host: str) -> tuple[str, str] | None:
    """(user, password) stored for HOST, or None."""
    config_path = path()
    auths = _auths(load(config_path), config_path)
    for key in _keys_for(host, auths):
        entry = auths[key]
        if isinstance(entry, dict) and (found := _decode(entry, key, config_path)):
            return found
    return None


def store(host: str, user: str, password: str) -> None:
    """Remember USER and PASSWORD for HOST, replacing what was there."""
    config_path = path()
    config = load(config_path)
    auths = _auths(config, config_path)
    for key in _keys_for(host, auths):
        del auths[key]
    auths[key_for(host)] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    save(config_path, config)


def erase(host: str) -> bool:
    """Forget HOST's credentials; False if there were none."""
    config_path = path()
    config = load(config_path)
    auths = _auths(config, config_path)
    keys = _keys_for(host, auths)
    for key in keys:
        del auths[key]
    if keys:
        save(config_path, config)
    return bool(keys)


def key_for(host: str) -> str:
    """The auths key Docker uses for HOST."""
    host = host_of(host)
    return HUB_KEY if host == "docker.io" else host


def host_of(key: str) -> str:
    """The host an auths key names: "https://host/v1/" -> "host"."""
    host = key.partition("://")[2] or key
    host = host.split("/", 1)[0]
    return "docker.io" if host in HUB_HOSTS else host


def _keys_for(host: str, auths: dict) -> list[str]:
    """Every key naming HOST, Docker's own spelling of it first."""
    wanted, exact = host_of(host), key_for(host)
    return sorted((key for key in auths if host_of(key) == wanted), key=lambda key: key != exact)


def _auths(config: dict, config_path: str) -> dict:
    """CONFIG's "auths" object, added if missing."""
    auths = config.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise InvalidArgument(f"failed to read {config_path}: \"auths\" is not a JSON object")
    return auths


def _decode(entry: dict, key: str, config_path: str) -> tuple[str, str] | None:
    encoded = entry.get("auth")
    if not encoded:
        # Older files keep the two fields instead of "auth".
        user, password = entry.get("username"), entry.get("password")
        return (user, password) if user and password is not None else None
    try:
        user, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, TypeError) as err:
        raise InvalidArgument(f"failed to read credentials for {key} from {config_path}: "
                              f"bad \"auth\" value: {err}") from err  # fmt: skip
    if not colon:
        raise InvalidArgument(f"failed to read credentials for {key} from {config_path}: "
                              "\"auth\" is not base64 of user:password")  # fmt: skip
    return user, password


def load(config_path: str) -> dict:
    """The whole config file; {} if there is none."""
    try:
        with open(config_path, "rb") as f:
            config = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"failed to read {config_path}: {_one_line(err)}") from err
    if not isinstance(config, dict):
        raise InvalidArgument(f"failed to read {config_path}: not a JSON object")
    return config


def save(config_path: str, config: dict) -> None:
    """Replace the file atomically (temp file + fsync + rename), mode 0600."""
    directory = os.path.dirname(config_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=directory)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, config_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
