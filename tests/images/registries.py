"""Debian's distribution registry (`docker-registry serve CONFIG.yml`),
started by the tests on 127.0.0.1 and stopped by the pid they started.

Kinds (start_registry(KIND, base)):
  open       no auth, plain HTTP
  htpasswd   Basic auth (USERNAME:PASSWORD, bcrypt htpasswd), plain HTTP
  token      Bearer tokens from a TokenServer run here (token_server.py)
  tls        no auth, HTTPS with a server certificate for 127.0.0.1 and
             localhost signed by a CA made here (`ca`)

Each registry keeps everything under its own directory: config.yml,
registry.log, and `storage`, the filesystem driver's root, so a test can
reach a blob's bytes at storage/docker/registry/v2/blobs/sha256/XX/HEX/data
(`blob_path`). The port is free at run time: a socket bound to port 0
picks it, and a registry that loses the race for it is started again on
another one.
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import bcrypt
import httpx

from certificates import write_server_certificates, write_signing_key
from token_server import ISSUER, SERVICE, TokenServer

REGISTRY = "docker-registry"
USERNAME = "capsa"
PASSWORD = "s3cret"
KINDS = ("open", "htpasswd", "token", "tls")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A port nothing listens on at the moment of asking (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_htpasswd(path: str, username: str, password: str) -> None:
    """One bcrypt entry: distribution ignores any other hash."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    with open(path, "w") as f:
        f.write(f"{username}:{hashed}\n")


class PortTaken(Exception):
    """The registry could not bind the port it was given."""


class Registry:
    """One running `docker-registry` and what tests need to reach it.

    host      "127.0.0.1:PORT"
    url       "http://127.0.0.1:PORT" (https for tls)
    storage   the filesystem driver's root directory
    username, password   for htpasswd and token (None for open and tls)
    ca        the CA's PEM path (tls; None otherwise)
    cert_dir  a directory holding only ca.crt, for skopeo --*-cert-dir (tls)
    token_server, token_requests   (token)
    """

    def __init__(self, kind: str, directory: str):
        self.kind = kind
        self.dir = directory
        self.storage = os.path.join(directory, "storage")
        self.config_path = os.path.join(directory, "config.yml")
        self.log = os.path.join(directory, "registry.log")
        self.username: str | None = None
        self.password: str | None = None
        self.ca: str | None = None
        self.cert_dir: str | None = None
        self.token_server: TokenServer | None = None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.auth_config: dict = {}  # the config's `auth` section
        self.tls_config: dict = {}  # {"tls": {certificate, key}} for the `http` section

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_config else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def tls(self) -> bool:
        return bool(self.tls_config)

    @property
    def token_requests(self) -> int:
        """How many token requests the token server answered (token only)."""
        if self.token_server is None:
            raise AttributeError(f"the {self.kind} registry has no token server")
        return self.token_server.token_requests

    def blob_path(self, digest: str) -> str:
        """Where the registry keeps the bytes of blob DIGEST."""
        algorithm, hexdigest = digest.split(":", 1)
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs",
                            algorithm, hexdigest[:2], hexdigest, "data")  # fmt: skip

    def write_certs_d(self, directory: str) -> str:
        """DIRECTORY/HOST:PORT/ca.crt (the certs.d layout); returns DIRECTORY."""
        if self.ca is None:
            raise ValueError(f"the {self.kind} registry has no CA")
        target = os.path.join(directory, self.host)
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(self.ca, os.path.join(target, "ca.crt"))
        return directory

    def skopeo_flags(self, prefix: str = "", creds: bool = True) -> list[str]:
        """skopeo's flags to reach this registry: PREFIX "src", "dest" or ""
        (inspect); CREDS adds --*-creds where the registry has a user."""
        dash = f"--{prefix}-" if prefix else "--"
        flags = [f"{dash}cert-dir={self.cert_dir}"] if self.tls else [f"{dash}tls-verify=false"]
        if creds and self.username:
            flags.append(f"{dash}creds={self.username}:{self.password}")
        return flags

    def config(self) -> dict:
        return {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": self.storage},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": "capsa-test-secret",
                     "headers": {"X-Content-Type-Options": ["nosniff"]}, **self.tls_config},
            **({"auth": self.auth_config} if self.auth_config else {}),
        }  # fmt: skip

    def start(self) -> None:
        os.makedirs(self.storage, exist_ok=True)
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                self._start_once()
                return
            except PortTaken:
                continue
        raise RuntimeError(f"{REGISTRY}: no free port after {PORT_ATTEMPTS} attempts")

    def _start_once(self) -> None:
        # YAML is a superset of JSON: a JSON document is a valid config.yml.
        with open(self.config_path, "w") as f:
            json.dump(self.config(), f, indent=2)
        # REGISTRY_* variables override the config file: keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([REGISTRY, "serve", self.config_path],
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)  # fmt: skip
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        verify = ssl.create_default_context(cafile=self.ca) if self.ca else False
        while True:
            if self.process.poll() is not None:
                tail = self.log_tail()
                if "address already in use" in tail:
                    raise PortTaken(self.host)
                raise RuntimeError(f"{REGISTRY} exited {self.process.returncode}:\n{tail}")
            try:
                answer = httpx.get(f"{self.url}/v2/", verify=verify, timeout=1.0)
                if answer.status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{REGISTRY} did not answer on {self.url} "
                                   f"in {START_TIMEOUT}s:\n{self.log_tail()}")  # fmt: skip
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the registry's pid, then SIGKILL after STOP_TIMEOUT."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def close(self) -> None:
        """Stop everything this registry started."""
        self.stop()
        if self.token_server is not None:
            self.token_server.stop()


def start_registry(kind: str, directory: str) -> Registry:
    """A running registry of KIND with its files under DIRECTORY (created)."""
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; one of {KINDS}")
    if shutil.which(REGISTRY) is None:
        raise FileNotFoundError(f"{REGISTRY} is not installed")
    os.makedirs(directory, exist_ok=True)
    registry = Registry(kind, directory)
    try:
        if kind == "htpasswd":
            registry.username, registry.password = USERNAME, PASSWORD
            htpasswd = os.path.join(directory, "htpasswd")
            write_htpasswd(htpasswd, USERNAME, PASSWORD)
            registry.auth_config = {"htpasswd": {"realm": "capsa-registry", "path": htpasswd}}
        elif kind == "token":
            registry.username, registry.password = USERNAME, PASSWORD
            signer = write_signing_key(os.path.join(directory, "signer"))
            registry.token_server = TokenServer(signer, USERNAME, PASSWORD)
            registry.token_server.start()
            registry.auth_config = {"token": {"realm": registry.token_server.realm,
                                        "service": SERVICE, "issuer": ISSUER,
                                        "rootcertbundle": signer.cert_path}}  # fmt: skip
        elif kind == "tls":
            certs = write_server_certificates(os.path.join(directory, "tls"))
            registry.ca = certs.ca
            registry.cert_dir = os.path.join(directory, "cert-dir")
            os.makedirs(registry.cert_dir, exist_ok=True)
            shutil.copyfile(certs.ca, os.path.join(registry.cert_dir, "ca.crt"))
            registry.tls_config = {"tls": {"certificate": certs.cert, "key": certs.key}}
        registry.start()
    except BaseException:
        registry.close()
        raise
    return registry
