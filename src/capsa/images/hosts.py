"""How to reach a registry host: its API endpoint, TLS trust, and whether
plain HTTP is allowed.

A host ("127.0.0.1:5000", "docker.io") is insecure, and may be reached over
plain HTTP, when it is localhost (any port), an address in 127.0.0.0/8 or
::1, or listed in the daemon config's "insecure-registries" (Docker's
daemon.json names). The config file is /etc/capsa/capsa.json, or
$CAPSA_CONFIG_FILE; a missing file means the defaults:

    {"insecure-registries": ["myregistry:5000", "10.0.0.0/8"],
     "max-concurrent-downloads": 3, "max-concurrent-uploads": 5}

TLS trusts the system's CAs plus every *.crt in the host's certs.d
directory, /etc/capsa/certs.d/<host:port>/ (the base is $CAPSA_CERTS_D when
set), and presents the client certificate NAME.cert with its key NAME.key
found there, as Docker does.

Scheme: a secure host is spoken to over verified HTTPS only. An insecure
host is tried over verified HTTPS first and falls back to HTTP only when the
server does not speak TLS at all (`speaks_no_tls`); a certificate it fails
to verify is reported, never a reason to drop TLS. The choice is remembered
per host for the life of the process.
"""

import glob
import ipaddress
import json
import os
import ssl
import threading

import httpx

from capsa.errors import InvalidArgument
from capsa.record import record

CONFIG_FILE = "/etc/capsa/capsa.json"
CERTS_D = "/etc/capsa/certs.d"
HUB = "docker.io"
HUB_ENDPOINT = "registry-1.docker.io"

# OpenSSL's reasons for a handshake answered by something that is not TLS.
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
                              "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
                              "UNEXPECTED_EOF_WHILE_READING"})  # fmt: skip

_schemes: dict[str, str] = {}
_schemes_lock = threading.Lock()


@record(frozen=True)
class Config:
    """The registry settings of the daemon config file."""

    insecure_registries: tuple[str, ...] = ()
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5


def config_path() -> str:
    return os.environ.get("CAPSA_CONFIG_FILE") or CONFIG_FILE


def load_config(file_path: str | None = None) -> Config:
    """The config file's registry settings; the defaults if it is missing."""
    file_path = file_path or config_path()
    try:
        with open(file_path, "rb") as f:
            data = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return Config()
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"failed to read {file_path}: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise InvalidArgument(f"failed to read {file_path}: not a JSON object")
    insecure = data.get("insecure-registries", [])
    if not isinstance(insecure, list) or not all(isinstance(entry, str) for entry in insecure):
        raise InvalidArgument(f"failed to read {file_path}: \"insecure-registries\" must be a list of strings")
    downloads = _positive(data, "max-concurrent-downloads", Config.max_concurrent_downloads, file_path)
    uploads = _positive(data, "max-concurrent-uploads", Config.max_concurrent_uploads, file_path)
    return Config(tuple(entry.rstrip("/") for entry in insecure), downloads, uploads)


def _positive(data: dict, key: str, default: int, file_path: str) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"failed to read {file_path}: \"{key}\" must be a positive integer")
    return value


def endpoint(host: str) -> str:
    """Where HOST's registry API answers: Docker Hub's is not "docker.io"."""
    return HUB_ENDPOINT if host == HUB else host


def hostname(host: str) -> str:
    """HOST without its port: "127.0.0.1" for "127.0.0.1:5000", "::1" for "[::1]:5000"."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] or host


def is_insecure(host: str, config: Config) -> bool:
    """Plain HTTP is allowed for HOST (see the module docstring)."""
    name = hostname(host)
    if name == "localhost" or host in config.insecure_registries:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    for entry in config.insecure_registries:
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def certs_dir(host: str) -> str:
    return os.path.join(os.environ.get("CAPSA_CERTS_D") or CERTS_D, endpoint(host))


def ssl_context(host: str) -> ssl.SSLContext:
    """Verified TLS: the system's CAs, HOST's certs.d CAs and client certificate."""
    context = ssl.create_default_context()
    directory = certs_dir(host)
    for ca in sorted(glob.glob(os.path.join(glob.escape(directory), "*.crt"))):
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as err:
            raise InvalidArgument(f"failed to load CA certificate {ca}: {err}") from err
    pairs = client_certificates(directory)
    if pairs:
        cert, key = pairs[0]  # an SSLContext holds one; Docker would offer each
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise InvalidArgument(f"failed to load client certificate {cert}: {err}") from err
    return context


def client_certificates(directory: str) -> list[tuple[str, str]]:
    """(NAME.cert, NAME.key) pairs in DIRECTORY; one without the other is an error."""
    certs = {path[:-5] for path in glob.glob(os.path.join(glob.escape(directory), "*.cert"))}
    keys = {path[:-4] for path in glob.glob(os.path.join(glob.escape(directory), "*.key"))}
    for stem in sorted(certs ^ keys):
        missing, present = (f"{stem}.key", f"{stem}.cert") if stem in certs else (f"{stem}.cert", f"{stem}.key")
        raise InvalidArgument(f"failed to load client certificate: {missing} is missing for {present}")
    return [(f"{stem}.cert", f"{stem}.key") for stem in sorted(certs)]


def known_scheme(host: str) -> str | None:
    """The scheme chosen for HOST earlier in this process, if any."""
    with _schemes_lock:
        return _schemes.get(host)


def remember_scheme(host: str, scheme: str) -> None:
    with _schemes_lock:
        _schemes[host] = scheme


def forget_schemes() -> None:
    """Drop every remembered choice (tests)."""
    with _schemes_lock:
        _schemes.clear()


def speaks_no_tls(err: BaseException) -> bool:
    """ERR (from a verified HTTPS connect) says the server does not speak
    TLS: the handshake got a non-TLS answer, or the connection was reset or
    closed during it. A failed certificate check says nothing of the kind."""
    if not isinstance(err, httpx.ConnectError):
        return False
    for cause in _causes(err):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return False
        if isinstance(cause, (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError)):
            return True
        if isinstance(cause, ssl.SSLError) and getattr(cause, "reason", None) in _NOT_TLS_REASONS:
            return True
    return False


def describe_connect_error(err: BaseException) -> str:
    """A short cause for a failed connection: "connection refused",
    "certificate verify failed: self-signed certificate", …"""
    if speaks_no_tls(err):
        return "it does not speak TLS (plain HTTP is used only for insecure registries)"
    for cause in _causes(err):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return f"tls handshake failed: {cause.reason.lower().replace('_', ' ')}"
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _causes(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
