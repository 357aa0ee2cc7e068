"""A Docker token server (the `auth.token` realm of a distribution registry),
run by the tests on 127.0.0.1 in a thread.

    GET  /token?service=SERVICE&scope=repository:NAME:pull,push[&scope=...]
         [Authorization: Basic base64(user:password)]
    POST /token   (OAuth2 form: grant_type=password, username, password,
                   service, scope space-separated, client_id)

Anonymous clients get `pull` on repositories whose name starts with
"public/" and nothing else; USER:PASSWORD gets pull, push and delete
everywhere (and `*` on registry:catalog:*); wrong credentials get 401. A
missing or foreign `service` is a client bug: 400.

The answer is {"token", "access_token", "expires_in", "issued_at"}: a JWT
signed RS256 by a key whose self-signed certificate the registry trusts as
its `rootcertbundle`. distribution 2.8 finds the signing key from the JWT
header: `x5c` (the base64 DER chain, verified against rootcertbundle) or
`kid` (the libtrust key id of a key in rootcertbundle); this server sends
x5c, and can send kid instead (KEY_ID_STYLES).

Every request is recorded (`requests`, `token_requests`), so tests can
assert that a client fetched a token and with which scopes.
"""

import base64
import binascii
import datetime
import hashlib
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization

from certificates import SigningKey

EXPIRES_IN = 300
ISSUER = "capsa-token-server"
SERVICE = "capsa-registry"
KEY_ID_STYLES = ("x5c", "kid")
AUTHENTICATED_ACTIONS = frozenset({"pull", "push", "delete"})
ANONYMOUS_ACTIONS = frozenset({"pull"})
PUBLIC_PREFIX = "public/"


def libtrust_key_id(public_key) -> str:
    """The key id docker/libtrust gives PUBLIC_KEY: the first 240 bits of
    the SHA-256 of its DER SubjectPublicKeyInfo, base32, in 4-character
    groups joined by ':'."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


@dataclass
class TokenRequest:
    """One request the server answered."""

    method: str
    path: str
    account: str | None  # the authenticated user, None if anonymous
    scopes: list[str]
    status: int
    granted: list[dict] = field(default_factory=list)


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """TYPE:NAME:ACTIONS (NAME may itself hold ':' only before the last one)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


def grant(scopes: list[str], account: str | None) -> list[dict]:
    """The access claim for SCOPES: what ACCOUNT (None: anonymous) may do."""
    granted: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        parsed = parse_scope(scope)
        if parsed is None:
            continue
        kind, name, actions = parsed
        if kind == "repository":
            if account is not None:
                allowed = AUTHENTICATED_ACTIONS
            elif name.startswith(PUBLIC_PREFIX):
                allowed = ANONYMOUS_ACTIONS
            else:
                allowed = frozenset()
            if "*" in actions and account is not None:
                actions = sorted(AUTHENTICATED_ACTIONS)
        elif kind == "registry" and name == "catalog":
            allowed = frozenset({"*"}) if account is not None else frozenset()
        else:
            allowed = frozenset()
        have = granted.setdefault((kind, name), [])
        have.extend(a for a in actions if a in allowed and a not in have)
    return [{"type": kind, "name": name, "actions": actions}
            for (kind, name), actions in granted.items()]  # fmt: skip


class TokenServer:
    """The token server on 127.0.0.1:PORT (a free port), realm `url`.

    >>> server = TokenServer(signing_key, "capsa", "s3cret")
    >>> server.start(); server.realm   # http://127.0.0.1:PORT/token
    >>> server.stop()
    """

    def __init__(self, signing_key: SigningKey, username: str, password: str,
                 service: str = SERVICE, issuer: str = ISSUER,
                 key_id_style: str = "x5c"):  # fmt: skip
        if key_id_style not in KEY_ID_STYLES:
            raise ValueError(f"key_id_style must be one of {KEY_ID_STYLES}")
        self.signing_key = signing_key
        self.username = username
        self.password = password
        self.service = service
        self.issuer = issuer
        self.key_id_style = key_id_style
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def token_requests(self) -> int:
        """How many tokens were asked for (whatever the answer)."""
        with self._lock:
            return len(self.requests)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        owner = self

        class Handler(_TokenHandler):
            server_owner = owner

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="capsa-token-server", daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def record(self, entry: TokenRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def check_credentials(self, username: str, password: str) -> bool:
        return (secrets.compare_digest(username, self.username)
                and secrets.compare_digest(password, self.password))  # fmt: skip

    def issue(self, account: str | None, access: list[dict]) -> dict:
        """The JSON answer holding a token for ACCOUNT granting ACCESS."""
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": account or "", "aud": self.service,
                  "exp": now + EXPIRES_IN, "nbf": now - 1, "iat": now,
                  "jti": secrets.token_hex(16), "access": access}  # fmt: skip
        cert = self.signing_key.cert
        if self.key_id_style == "x5c":
            der = cert.public_bytes(serialization.Encoding.DER)
            headers = {"x5c": [base64.b64encode(der).decode()]}
        else:
            headers = {"kid": libtrust_key_id(cert.public_key())}
        token = jwt.encode(claims, self.signing_key.key, algorithm="RS256", headers=headers)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        return {"token": token, "access_token": token, "expires_in": EXPIRES_IN,
                "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip


def _errors(code: str, message: str) -> dict:
    return {"errors": [{"code": code, "message": message}]}


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server_owner: TokenServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: requests are recorded
        pass

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path != "/token":
            return self._answer(url.path, None, [], 404, {"error": "not found"})
        account, ok = self._basic_account()
        self._token(url.path, query, account, ok)

    def do_POST(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if url.path != "/token":
            return self._answer(url.path, None, [], 404, {"error": "not found"})
        if form.get("grant_type", [""])[0] != "password":
            return self._answer(url.path, None, [], 400, _errors("UNSUPPORTED", "grant_type"))
        username = form.get("username", [""])[0]
        ok = self.server_owner.check_credentials(username, form.get("password", [""])[0])
        scopes = [s for scope in form.get("scope", []) for s in scope.split(" ") if s]
        self._token(url.path, {**form, "scope": scopes}, username, ok)

    def _basic_account(self) -> tuple[str | None, bool]:
        """(user, credentials right); (None, True) without credentials."""
        header = self.headers.get("Authorization", "")
        if not header:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            username, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        return username, self.server_owner.check_credentials(username, password)

    def _token(self, path: str, query: dict, account: str | None, ok: bool) -> None:
        owner = self.server_owner
        scopes = query.get("scope", [])
        if not ok:
            return self._answer(path, account, scopes, 401,
                                _errors("UNAUTHORIZED", "wrong user name or password"),
                                {"WWW-Authenticate": f'Basic realm="{ISSUER}"'})  # fmt: skip
        service = query.get("service", [""])[0]
        if service != owner.service:
            return self._answer(path, account, scopes, 400,
                                _errors("DENIED", f"unknown service {service!r}"))
        access = grant(scopes, account)
        self._answer(path, account, scopes, 200, owner.issue(account, access), granted=access)

    def _answer(self, path, account, scopes, status, body, headers=None, granted=None):
        self.server_owner.record(TokenRequest(self.command, path, account, list(scopes),
                                              status, granted or []))  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
