"""Registry authorization: WWW-Authenticate challenges, Basic credentials
and Docker's token protocol (distribution's docs/spec/auth/token.md).

A request without authorization that gets a 401 carries a challenge:

    WWW-Authenticate: Bearer realm="https://auth.example/token",service="registry.example",
                      scope="repository:app:pull"
    WWW-Authenticate: Basic realm="capsa-registry"

For Basic, the host's credentials go on the retried request. For Bearer,
the client asks the realm for a token (GET realm?service=S&scope=A&scope=B,
with the credentials as Basic if there are any, anonymously otherwise),
reads "token" (or "access_token") and "expires_in" (60 s when absent) from
the answer, and retries once with "Authorization: Bearer <token>". Tokens
are kept per (host, scopes) until they expire, and the host's challenge is
remembered, so later requests carry authorization from the start:

    authorizer = Authorizer(fetch, credentials.get)
    header = authorizer.header(host, scopes)           # None at first
    ... send; on a 401:
    if authorizer.authorize(host, scopes, response):   # False: no challenge
        ... send again with authorizer.header(host, scopes); a second 401
        raises unauthorized(host, response)

Scopes are "repository:NAME:pull" or "repository:NAME:pull,push"; a
cross-repository mount adds "repository:FROM:pull".
"""

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable

import httpx

from capsa.errors import FailedPrecondition
from capsa.record import field, record

DEFAULT_EXPIRES_IN = 60
EXPIRY_MARGIN = 5  # seconds: a token about to expire is not sent
ERROR_BODY_MAX = 64 << 10

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"[ \t,]*({_TOKEN})")
_PARAM = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:({_TOKEN})|"((?:[^"\\]|\\.)*)")[ \t]*(?:,|$)')
_TOKEN68 = re.compile(r"[ \t]*([A-Za-z0-9._~+/-]+=*)[ \t]*(?:,|$)")
_ESCAPE = re.compile(r"\\(.)")

Credentials = Callable[[str], tuple[str, str] | None]
Fetch = Callable[[str, list[tuple[str, str]], dict[str, str]], httpx.Response]


def pull_scope(path: str) -> str:
    return f"repository:{path}:pull"


def push_scope(path: str) -> str:
    return f"repository:{path}:pull,push"


class Unauthorized(FailedPrecondition):
    """The registry or its token server refused the request's credentials."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"failed to authenticate to {host}: {reason}")
        self.host = host
        self.reason = reason


@record(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header; scheme lowercased."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in the WWW-Authenticate header VALUES (RFC 7235):
    several per header, parameters as tokens or quoted strings."""
    challenges = []
    for value in values:
        pos = 0
        while match := _SCHEME.match(value, pos):
            scheme, pos = match.group(1).lower(), match.end()
            params, token68 = {}, None
            if not _PARAM.match(value, pos) and (token := _TOKEN68.match(value, pos)):
                token68, pos = token.group(1), token.end()
            while param := _PARAM.match(value, pos):
                name, bare, quoted = param.groups()
                params[name.lower()] = bare if bare is not None else _ESCAPE.sub(r"\1", quoted)
                pos = param.end()
            challenges.append(Challenge(scheme, params, token68))
    return challenges


def error_detail(response: httpx.Response) -> str:
    """What a registry or token server says went wrong: the distribution
    error body {"errors": [{"code", "message"}]} as "code: message",
    Docker Hub's {"details"}, OAuth's {"error_description"}; else ""."""
    try:
        body = json.loads(response.content[:ERROR_BODY_MAX])
    except (httpx.ResponseNotRead, ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(body, dict):
        return ""
    errors = body.get("errors")
    if isinstance(errors, list):
        parts = [_describe(error) for error in errors if isinstance(error, dict)]
        return "; ".join(part for part in parts if part)
    for key in ("details", "error_description", "error", "message"):
        if isinstance(body.get(key), str) and body[key]:
            return " ".join(body[key].split())
    return ""


def _describe(error: dict) -> str:
    code = str(error.get("code") or "").lower().replace("_", " ")
    message = " ".join(str(error.get("message") or "").split())
    return f"{code}: {message}" if code and message else code or message


def unauthorized(host: str, response: httpx.Response, anonymous: bool = False) -> Unauthorized:
    reason = error_detail(response) or "unauthorized"
    return Unauthorized(host, f"{reason} (no credentials for {host})" if anonymous else reason)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Authorizer:
    """Authorization headers for one process's requests to registries.

    FETCH(url, params, headers) performs a GET (the token request);
    CREDENTIALS(host) gives (user, password) or None, asked once per host.
    Thread-safe: layers are fetched in parallel."""

    def __init__(self, fetch: Fetch, credentials: Credentials):
        self.fetch = fetch
        self.lookup = credentials
        self._credentials: dict[str, tuple[str, str] | None] = {}
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def credentials(self, host: str) -> tuple[str, str] | None:
        with self._lock:
            if host not in self._credentials:
                self._credentials[host] = self.lookup(host)
            return self._credentials[host]

    def anonymous(self, host: str) -> bool:
        return self.credentials(host) is None

    def header(self, host: str, scopes: Iterable[str]) -> str | None:
        """The Authorization value for a request to HOST needing SCOPES, once
        HOST has challenged; fetches a token when none is cached."""
        with self._lock:
            challenge = self._challenges.get(host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            found = self.credentials(host)
            return basic(*found) if found else None
        scopes = frozenset(scopes)
        with self._lock:
            value, expires = self._tokens.get((host, scopes), (None, 0.0))
        if value is not None and time.monotonic() < expires:
            return value
        return self._new_token(host, challenge, scopes, sorted(scopes))

    def authorize(self, host: str, scopes: Iterable[str], response: httpx.Response) -> bool:
        """Answer the 401 RESPONSE: remember its challenge and get fresh
        authorization for SCOPES. False if it has no challenge capsa speaks."""
        challenges = {c.scheme: c for c in parse_challenges(response.headers.get_list("www-authenticate"))}
        challenge = challenges.get("bearer") or challenges.get("basic")
        if challenge is None:
            return False
        with self._lock:
            self._challenges[host] = challenge
        if challenge.scheme == "basic":
            if self.credentials(host) is None:
                raise unauthorized(host, response, anonymous=True)
            return True
        scopes = list(dict.fromkeys(scopes))
        # The registry may name a scope the caller did not think of.
        asked = [scope for scope in challenge.params.get("scope", "").split() if not _covered(scope, scopes)]
        self._new_token(host, challenge, frozenset(scopes), scopes + asked)
        return True

    def _new_token(self, host: str, challenge: Challenge, key: frozenset[str], scopes: list[str]) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise Unauthorized(host, f"its bearer challenge has no usable realm: {realm!r}")
        params = [("service", challenge.params["service"])] if "service" in challenge.params else []
        params += [("scope", scope) for scope in scopes]
        headers = {}
        if found := self.credentials(host):
            params.append(("account", found[0]))
            headers["Authorization"] = basic(*found)
        response = self.fetch(realm, params, headers)
        if response.status_code in (401, 403):
            raise unauthorized(host, response, anonymous=not found)
        if response.status_code != 200:
            detail = error_detail(response) or response.reason_phrase.lower()
            raise Unauthorized(host, f"token server {realm} answered {response.status_code} {detail}")
        token, expires_in = _read_token(host, response)
        value = f"Bearer {token}"
        with self._lock:
            self._tokens[(host, key)] = (value, time.monotonic() + expires_in - EXPIRY_MARGIN)
        return value


def _covered(scope: str, scopes: list[str]) -> bool:
    """SCOPE ("repository:app:push") asks for nothing SCOPES do not."""
    kind, _, actions = scope.rpartition(":")
    wanted = set(actions.split(","))
    return any(other.rpartition(":")[0] == kind and wanted <= set(other.rpartition(":")[2].split(","))
               for other in scopes)  # fmt: skip


def _read_token(host: str, response: httpx.Response) -> tuple[str, int]:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise Unauthorized(host, "the token server's answer has no token")
    expires_in = body.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < DEFAULT_EXPIRES_IN:
        expires_in = DEFAULT_EXPIRES_IN  # the spec's minimum, as Docker
    return token, expires_in
