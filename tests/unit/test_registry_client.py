"""The distribution-spec client against a fake registry (httpx.MockTransport),
and the scheme and TLS decisions of hosts.py against real sockets on 127.0.0.1."""

import base64
import datetime
import hashlib
import http.server
import json
import re
import socket
import ssl
import struct
import threading

import httpx
import pytest

from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, NotFound, Unsupported
from capsa.images import auth, hosts, mediatypes, reference
from capsa.images.content import ContentStore
from capsa.images.registry import Registry

HOST = "127.0.0.1:5000"
USER, PASSWORD = "capsa", "s3cret"
REALM = "http://auth.test/token"
SERVICE = "fake-registry"

_ROUTE = re.compile(r"/v2/(?P<name>.+?)/(?:(?P<kind>manifests|blobs)/(?P<ref>[^/]+)|blobs/uploads/(?P<upload>[^/]*))$")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def errors(status: int, code: str, message: str, **headers) -> httpx.Response:
    """A distribution error answer, streamed as a real one is (not read yet)."""
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
    headers.update({"Content-Type": "application/json", "Content-Length": str(len(body))})
    return httpx.Response(status, headers=headers, stream=Stream(body))


def grants(scopes: list[str]) -> set[tuple[str, str]]:
    """{(repository, action)} that SCOPES ("repository:NAME:pull,push") ask for."""
    return {(scope.split(":")[1], action) for scope in scopes for action in scope.split(":")[2].split(",")}


class Stream(httpx.SyncByteStream):
    """DATA in 64 KiB pieces, as off a socket; the connection breaks after
    BREAK_AFTER bytes if given."""

    def __init__(self, data: bytes, break_after: int | None = None):
        self.data, self.break_after = data, break_after

    def __iter__(self):
        end = len(self.data) if self.break_after is None else self.break_after
        for start in range(0, end, 65536):
            yield self.data[start:min(start + 65536, end)]
        if self.break_after is not None:
            raise httpx.ReadError("connection reset by peer")


class FakeRegistry:
    """A registry, its token server (auth.test) and its blob storage
    (storage.test) in one MockTransport handler; it records every request."""

    def __init__(self, auth_kind: str | None = None, host: str = HOST):
        self.auth_kind = auth_kind
        self.host = host
        self.blobs: dict[str, bytes] = {}
        self.repos: dict[str, set[str]] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.tokens: dict[str, set[tuple[str, str]]] = {}
        self.log: list[httpx.Request] = []
        self.token_log: list[httpx.Request] = []
        self.expires_in = 300
        self.token_key = "token"
        self.honour_range = True
        self.redirect_blobs = False
        self.break_after: int | None = None
        self.absolute_locations = False
        self.lie_about_digest = False

    # -- test setup

    def add_blob(self, name: str, data: bytes) -> str:
        digest = sha(data)
        self.blobs[digest] = data
        self.repos.setdefault(name, set()).add(digest)
        return digest

    def add_manifest(self, name: str, tag: str, body: bytes, media_type: str = mediatypes.OCI_MANIFEST) -> str:
        digest = sha(body)
        self.manifests[(name, tag)] = self.manifests[(name, digest)] = (media_type, body)
        return digest

    def requests_to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.log if r.url.host == host]

    # -- serving

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        if request.url.host == "auth.test":
            return self.token(request)
        if request.url.host == "storage.test":
            return self.serve_blob(request, self.blobs[request.url.path.rsplit("/", 1)[1]])
        assert request.url.netloc.decode() == self.host, request.url
        if request.url.path == "/v2/":
            return self.check_auth(request, []) or httpx.Response(200, json={})
        match = _ROUTE.fullmatch(request.url.path)
        if match is None:
            return errors(404, "NOT_FOUND", "no route")
        name = match["name"]
        action = "pull" if request.method in ("GET", "HEAD") else "push"
        needed = [f"repository:{name}:{action}"]
        if "from" in request.url.params:
            needed.append(f"repository:{request.url.params['from']}:pull")
        if denied := self.check_auth(request, needed):
            return denied
        if match["kind"] == "manifests":
            return self.manifest(request, name, match["ref"])
        if match["kind"] == "blobs":
            return self.blob(request, name, match["ref"])
        return self.upload(request, name, match["upload"])

    def check_auth(self, request: httpx.Request, needed: list[str]) -> httpx.Response | None:
        given = request.headers.get("authorization", "")
        if self.auth_kind == "basic" and given != basic(USER, PASSWORD):
            return errors(401, "UNAUTHORIZED", "authentication required",
                          **{"WWW-Authenticate": 'Basic realm="fake"'})  # fmt: skip
        if self.auth_kind == "bearer":
            granted = self.tokens.get(given.removeprefix("Bearer "), set())
            if not given.startswith("Bearer ") or not grants(needed) <= granted:
                scope = f',scope="{" ".join(needed)}"' if needed else ""
                challenge = f'Bearer realm="{REALM}",service="{SERVICE}"{scope}'
                return errors(401, "UNAUTHORIZED", "authentication required", **{"WWW-Authenticate": challenge})
        return None

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_log.append(request)
        assert request.url.params["service"] == SERVICE
        given = request.headers.get("authorization")
        if given is not None and given != basic(USER, PASSWORD):
            return httpx.Response(401, json={"details": "incorrect username or password"})
        granted = grants(request.url.params.get_list("scope"))
        if given is None:  # anonymous: pull only
            granted = {(name, action) for name, action in granted if action == "pull"}
        token = f"tok{len(self.tokens)}"
        self.tokens[token] = granted
        return httpx.Response(200, json={self.token_key: token, "expires_in": self.expires_in})

    def manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            body = request.read()
            digest = self.add_manifest(name, ref, body, request.headers["content-type"])
            return httpx.Response(201, headers={"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"})
        if (name, ref) not in self.manifests:
            return errors(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, body = self.manifests[(name, ref)]
        claimed = sha(b"lie") if self.lie_about_digest else sha(body)
        headers = {"Content-Type": media_type, "Docker-Content-Digest": claimed}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)

    def blob(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        if digest not in self.repos.get(name, ()):
            return errors(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(self.blobs[digest]))})
        if self.redirect_blobs:
            return httpx.Response(307, headers={"Location": f"http://storage.test/data/{digest}?sig=x"})
        return self.serve_blob(request, self.blobs[digest])

    def serve_blob(self, request: httpx.Request, data: bytes) -> httpx.Response:
        start = 0
        if (asked := request.headers.get("range")) and self.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1])
            if start >= len(data):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        headers = {"Content-Length": str(len(body))}
        status = 200
        if start:
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
        break_after, self.break_after = self.break_after, None
        return httpx.Response(status, headers=headers, stream=Stream(body, break_after))

    def upload(self, request: httpx.Request, name: str, upload: str) -> httpx.Response:
        params = request.url.params
        if request.method == "POST":
            if "mount" in params and params["mount"] in self.repos.get(params["from"], ()):
                self.repos.setdefault(name, set()).add(params["mount"])
                return httpx.Response(201, headers={"Docker-Content-Digest": params["mount"]})
            upload = f"u{len(self.uploads)}"
            self.uploads[upload] = bytearray()
            return httpx.Response(202, headers={"Location": self.location(name, upload)})
        if upload not in self.uploads:
            return errors(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        assert params.get("_state") == upload  # the Location's own query is kept
        if request.method == "DELETE":
            del self.uploads[upload]
            return httpx.Response(204)
        self.uploads[upload] += request.read()
        if request.method == "PATCH":
            return httpx.Response(202, headers={"Location": self.location(name, upload)})
        data = bytes(self.uploads.pop(upload))
        if sha(data) != params["digest"]:
            return errors(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        self.add_blob(name, data)
        return httpx.Response(201, headers={"Docker-Content-Digest": sha(data)})

    def location(self, name: str, upload: str) -> str:
        path = f"/v2/{name}/blobs/uploads/{upload}?_state={upload}"
        return f"https://{self.host}{path}" if self.absolute_locations else path


@pytest.fixture(autouse=True)
def fresh_schemes():
    hosts.forget_schemes()
    yield
    hosts.forget_schemes()


@pytest.fixture
def store(tmp_path):
    return ContentStore(str(tmp_path / "content"))


def client(fake: FakeRegistry, creds: tuple[str, str] | None = None, config: hosts.Config | None = None) -> Registry:
    return Registry(config or hosts.Config(), credentials=lambda host: creds, transport=httpx.MockTransport(fake))


def ref(text: str = f"{HOST}/app:v1") -> reference.Reference:
    return reference.parse(text)


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "layers": []}).encode()
LAYER = bytes(range(256)) * 4096  # 1 MiB, several chunks


# -- manifests


def test_get_manifest_by_tag_and_by_digest():
    fake = FakeRegistry()
    digest = fake.add_manifest("app", "v1", MANIFEST)
    with client(fake) as registry:
        assert registry.get_manifest(ref()) == (digest, mediatypes.OCI_MANIFEST, MANIFEST)
        assert registry.get_manifest(ref(), digest) == (digest, mediatypes.OCI_MANIFEST, MANIFEST)
        assert registry.head_manifest(ref()) == digest
        assert registry.head_manifest(ref(f"{HOST}/app:nope")) is None
    first = fake.log[0]
    assert first.headers["accept"] == mediatypes.ACCEPT
    assert first.url.scheme == "https"  # verified TLS worked: no fallback
    assert hosts.known_scheme(HOST) == "https"


def test_manifest_not_found():
    with client(FakeRegistry()) as registry, pytest.raises(NotFound) as err:
        registry.get_manifest(ref())
    assert str(err.value) == f"manifest for {HOST}/app:v1 not found"


def test_manifest_with_another_digest_fails_verification():
    fake = FakeRegistry()
    fake.add_manifest("app", "v1", MANIFEST)
    fake.manifests[("app", sha(b"other"))] = (mediatypes.OCI_MANIFEST, MANIFEST)
    with client(fake) as registry:
        with pytest.raises(InvalidArgument, match="failed verification: its content has digest"):
            registry.get_manifest(ref(), sha(b"other"))
        fake.lie_about_digest = True
        with pytest.raises(InvalidArgument, match="failed verification: the registry says"):
            registry.get_manifest(ref())


@pytest.mark.parametrize("media_type", [*mediatypes.DOCKER_SCHEMA1, "application/json"])
def test_schema1_is_refused(media_type):
    fake = FakeRegistry()
    fake.add_manifest("app", "v1", json.dumps({"schemaVersion": 1, "name": "app", "fsLayers": []}).encode(),
                      media_type)  # fmt: skip
    with client(fake) as registry, pytest.raises(Unsupported) as err:
        registry.get_manifest(ref())
    assert "is a Docker schema 1 manifest, which capsa does not support" in str(err.value)


def test_put_manifest():
    fake = FakeRegistry()
    with client(fake) as registry:
        assert registry.put_manifest(ref(), mediatypes.OCI_MANIFEST, MANIFEST) == sha(MANIFEST)
    assert fake.manifests[("app", "v1")] == (mediatypes.OCI_MANIFEST, MANIFEST)


# -- authorization


def test_bearer_token_is_fetched_once_and_reused():
    fake = FakeRegistry("bearer")
    fake.add_manifest("app", "v1", MANIFEST)
    digest = fake.add_blob("app", b"config")
    with client(fake) as registry:
        registry.get_manifest(ref())
        registry.get_manifest(ref())
        assert registry.blob_exists(ref(), digest)
    [pull, push] = fake.token_log
    assert pull.url.params.get_list("scope") == ["repository:app:pull"]
    assert "authorization" not in pull.headers and "account" not in pull.url.params
    assert push.url.params.get_list("scope") == ["repository:app:pull,push"]
    # Once the host has challenged, a new scope's token is fetched before asking.
    statuses = [r.headers.get("authorization", "none")[:6] for r in fake.requests_to("127.0.0.1")]
    assert statuses == ["none", "Bearer", "Bearer", "Bearer"]


def test_a_known_bearer_challenge_fetches_tokens_before_asking():
    fake = FakeRegistry("bearer")
    fake.add_manifest("app", "v1", MANIFEST)
    fake.add_manifest("other", "v1", MANIFEST)
    with client(fake) as registry:
        registry.get_manifest(ref())
        registry.get_manifest(ref(f"{HOST}/other:v1"))
    requests = fake.requests_to("127.0.0.1")
    assert len(requests) == 3  # 401, retry, then straight to the answer
    assert [r.url.params.get_list("scope") for r in fake.token_log] == [["repository:app:pull"],
                                                                          ["repository:other:pull"]]  # fmt: skip


def test_tokens_expire(monkeypatch):
    fake = FakeRegistry("bearer")
    fake.token_key = "access_token"
    fake.expires_in = 10  # below the spec's minimum: 60 s
    fake.add_manifest("app", "v1", MANIFEST)
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    with client(fake) as registry:
        registry.get_manifest(ref())
        now[0] += 50
        registry.get_manifest(ref())
        assert len(fake.token_log) == 1
        now[0] += 30
        registry.get_manifest(ref())
        assert len(fake.token_log) == 2


def test_bearer_with_credentials_and_mount_scopes():
    fake = FakeRegistry("bearer")
    digest = fake.add_blob("base", b"layer")
    with client(fake, (USER, PASSWORD)) as registry:
        assert registry.mount_blob(ref(), digest, "base") is True
    [token] = fake.token_log
    assert token.headers["authorization"] == basic(USER, PASSWORD)
    assert token.url.params["account"] == USER
    assert sorted(token.url.params.get_list("scope")) == ["repository:app:pull,push", "repository:base:pull"]
    assert digest in fake.repos["app"]


def test_token_server_refusing_credentials():
    fake = FakeRegistry("bearer")
    fake.add_manifest("app", "v1", MANIFEST)
    with client(fake, (USER, "wrong")) as registry, pytest.raises(FailedPrecondition) as err:
        registry.get_manifest(ref())
    assert str(err.value) == f"failed to authenticate to {HOST}: incorrect username or password"


def test_anonymous_token_without_push_access():
    fake = FakeRegistry("bearer")
    with client(fake) as registry, pytest.raises(FailedPrecondition) as err:
        registry.put_manifest(ref(), mediatypes.OCI_MANIFEST, MANIFEST)
    assert str(err.value) == (f"failed to authenticate to {HOST}: unauthorized: authentication required "
                              f"(no credentials for {HOST})")  # fmt: skip
    assert len(fake.token_log) == 1  # the retry is made once


def test_basic_auth():
    fake = FakeRegistry("basic")
    digest = fake.add_manifest("app", "v1", MANIFEST)
    with client(fake, (USER, PASSWORD)) as registry:
        assert registry.get_manifest(ref())[0] == digest
        assert registry.head_manifest(ref()) == digest
    sent = [r.headers.get("authorization") for r in fake.log]
    assert sent == [None, basic(USER, PASSWORD), basic(USER, PASSWORD)]


@pytest.mark.parametrize("creds,why", [(None, f"(no credentials for {HOST})"), ((USER, "bad"), "required")])
def test_basic_auth_refused(creds, why):
    fake = FakeRegistry("basic")
    with client(fake, creds) as registry, pytest.raises(FailedPrecondition) as err:
        registry.get_manifest(ref())
    assert str(err.value).startswith(f"failed to authenticate to {HOST}: unauthorized: authentication required")
    assert str(err.value).endswith(why)


@pytest.mark.parametrize("kind", ["basic", "bearer", None])
def test_check_login(kind):
    fake = FakeRegistry(kind)
    with client(fake) as registry:
        registry.check_login(HOST, USER, PASSWORD)
        if kind:
            with pytest.raises(FailedPrecondition, match=f"^failed to log in to {HOST}: "):
                registry.check_login(HOST, USER, "wrong")


def test_check_login_message_for_basic():
    with client(FakeRegistry("basic")) as registry, pytest.raises(FailedPrecondition) as err:
        registry.check_login(HOST, USER, "wrong")
    assert str(err.value) == f"failed to log in to {HOST}: unauthorized: authentication required"


def test_401_without_a_challenge_and_other_errors_are_one_line():
    def handler(request):
        if request.url.path.endswith("/v1"):
            return errors(401, "UNAUTHORIZED", "authentication required")
        if request.url.path.endswith("/v2"):
            return errors(500, "UNKNOWN", "unknown error")
        if request.url.path.endswith("/v3"):
            return errors(403, "DENIED", "requested access to the resource is denied")
        return httpx.Response(502, content=b"<html>bad gateway</html>")

    with Registry(hosts.Config(), credentials=lambda h: None, transport=httpx.MockTransport(handler)) as registry:
        messages = []
        for tag, kind in (("v1", FailedPrecondition), ("v2", CapsaError), ("v3", FailedPrecondition), ("v4", CapsaError)):
            with pytest.raises(kind) as err:
                registry.get_manifest(ref(f"{HOST}/x:{tag}"))
            messages.append(str(err.value))
    assert messages == [
        f"failed to fetch manifest {HOST}/x:v1: 401 unauthorized: authentication required",
        f"failed to fetch manifest {HOST}/x:v2: 500 unknown: unknown error",
        f"failed to fetch manifest {HOST}/x:v3: 403 denied: requested access to the resource is denied",
        f"failed to fetch manifest {HOST}/x:v4: 502 bad gateway",
    ]


# -- blobs


def fetch(registry, store, digest, size, seen=None, ref_=None):
    with store.ingest(digest, size) as ingest:
        registry.fetch_blob(ref_ or ref(), digest, size, ingest, on_data=seen.append if seen is not None else None)


def test_fetch_blob_streams_and_commits(store):
    fake = FakeRegistry()
    digest = fake.add_blob("app", LAYER)
    seen = []
    with client(fake) as registry:
        fetch(registry, store, digest, len(LAYER), seen)
    assert store.read(digest) == LAYER
    assert b"".join(seen) == LAYER and len(seen) > 1
    assert fake.log[0].headers["accept-encoding"] == "identity"


def test_redirected_blob_request_drops_authorization(store):
    fake = FakeRegistry("bearer")
    fake.redirect_blobs = True
    digest = fake.add_blob("app", LAYER)
    with client(fake) as registry:
        fetch(registry, store, digest, len(LAYER))
    [storage] = fake.requests_to("storage.test")
    assert "authorization" not in storage.headers
    assert storage.url.params["sig"] == "x"
    assert fake.requests_to("127.0.0.1")[-1].headers["authorization"].startswith("Bearer ")
    assert store.read(digest) == LAYER


def partial(store, digest, data: bytes) -> None:
    with store.ingest(digest, None) as ingest:
        ingest.write(data)


def test_resume_with_range_from_a_partial_ingest(store):
    fake = FakeRegistry()
    fake.redirect_blobs = True  # the Range survives the redirect
    digest = fake.add_blob("app", LAYER)
    partial(store, digest, LAYER[:300_000])
    seen = []
    with client(fake) as registry:
        fetch(registry, store, digest, len(LAYER), seen)
    [storage] = fake.requests_to("storage.test")
    assert storage.headers["range"] == "bytes=300000-"
    assert b"".join(seen) == LAYER  # the bytes already on disk first, each byte once
    assert store.read(digest) == LAYER


def test_server_ignoring_range_restarts_the_download(store):
    fake = FakeRegistry()
    fake.honour_range = False
    digest = fake.add_blob("app", LAYER)
    partial(store, digest, LAYER[:1000])
    seen = []
    with client(fake) as registry:
        fetch(registry, store, digest, len(LAYER), seen)
    assert fake.log[0].headers["range"] == "bytes=1000-"
    assert b"".join(seen) == LAYER
    assert store.read(digest) == LAYER


def test_unsatisfiable_range_fetches_the_blob_whole(store):
    fake = FakeRegistry()
    digest = fake.add_blob("app", LAYER)
    partial(store, digest, b"x" * 10)
    fake.blobs[digest] = fake.blobs[digest][:5]  # now shorter than the partial file: 416
    with client(fake) as registry, pytest.raises(InvalidArgument):
        fetch(registry, store, digest, None)
    assert [r.headers.get("range") for r in fake.log] == ["bytes=10-", None]


def test_complete_partial_file_needs_no_request(store):
    fake = FakeRegistry()
    digest = fake.add_blob("app", LAYER)
    partial(store, digest, LAYER)
    seen = []
    with client(fake) as registry:
        fetch(registry, store, digest, len(LAYER), seen)
    assert fake.log == [] and b"".join(seen) == LAYER and store.has(digest)


def test_digest_mismatch_is_not_stored(store):
    fake = FakeRegistry()
    digest = fake.add_blob("app", LAYER)
    fake.blobs[digest] = b"Y" * len(LAYER)
    with client(fake) as registry, pytest.raises(InvalidArgument, match="failed verification"):
        fetch(registry, store, digest, len(LAYER))
    assert not store.has(digest)
    with store.ingest(digest, len(LAYER)) as ingest:
        assert ingest.offset == 0  # bad bytes are not kept for a resume


def test_broken_connection_keeps_the_partial_file_for_a_resume(store):
    fake = FakeRegistry()
    digest = fake.add_blob("app", LAYER)
    fake.break_after = 400_000
    with client(fake) as registry:
        with pytest.raises(CapsaError) as err:
            fetch(registry, store, digest, len(LAYER))
        assert str(err.value).startswith(f"failed to download blob {digest}: ")
        assert not store.has(digest)
        with store.ingest(digest, len(LAYER)) as ingest:
            kept = ingest.offset
        assert 0 < kept <= 400_000  # what the last full chunk held
        seen = []
        fetch(registry, store, digest, len(LAYER), seen)
    assert fake.log[-1].headers["range"] == f"bytes={kept}-"
    assert b"".join(seen) == LAYER and store.read(digest) == LAYER


def test_blob_not_found(store):
    with client(FakeRegistry()) as registry, pytest.raises(NotFound) as err:
        fetch(registry, store, sha(b"x"), 1)
    assert str(err.value) == f"failed to fetch blob {sha(b'x')} of {HOST}/app: 404 blob unknown: blob unknown to registry"


def test_blob_stored_meanwhile_is_replayed_from_the_store(store):
    digest = store.put(b"config")
    seen = []
    with client(FakeRegistry()) as registry, store.ingest(digest, 6) as ingest:
        registry.fetch_blob(ref(), digest, 6, ingest, on_data=seen.append)
    assert seen == [b"config"]


# -- push


@pytest.mark.parametrize("absolute", [False, True])
def test_upload_blob(tmp_path, absolute):
    fake = FakeRegistry("bearer")
    fake.absolute_locations = absolute
    path = tmp_path / "layer"
    path.write_bytes(b"head" + LAYER)
    digest = sha(LAYER)
    with client(fake, (USER, PASSWORD)) as registry, open(path, "rb") as f:
        assert not registry.blob_exists(ref(), digest)
        f.seek(4)
        registry.upload_blob(ref(), digest, len(LAYER), f)
        assert registry.blob_exists(ref(), digest)
    assert fake.blobs[digest] == LAYER
    methods = [(r.method, r.url.path.rsplit("/", 1)[1]) for r in fake.requests_to("127.0.0.1")]
    assert methods == [("HEAD", digest), ("HEAD", digest), ("POST", ""), ("PATCH", "u0"), ("PUT", "u0"), ("HEAD", digest)]
    put = fake.requests_to("127.0.0.1")[4]
    assert put.url.params["digest"] == digest and put.url.params["_state"] == "u0"
    assert len(fake.token_log) == 1


def test_upload_with_wrong_digest_is_refused_and_cancelled(tmp_path):
    fake = FakeRegistry()
    path = tmp_path / "layer"
    path.write_bytes(b"data")
    with client(fake) as registry, open(path, "rb") as f, pytest.raises(InvalidArgument) as err:
        registry.upload_blob(ref(), sha(b"other"), 4, f)
    assert "400 digest invalid: provided digest did not match uploaded content" in str(err.value)
    assert fake.log[-1].method == "DELETE"


def test_mount_refused_cancels_the_upload_it_started():
    fake = FakeRegistry()
    with client(fake) as registry:
        assert registry.mount_blob(ref(), sha(b"missing"), "base") is False
    assert [r.method for r in fake.log] == ["POST", "DELETE"]
    assert fake.uploads == {}


# -- reaching hosts: scheme, TLS, errors


def not_tls_error() -> httpx.ConnectError:
    cause = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:992)")
    cause.reason = "WRONG_VERSION_NUMBER"
    err = httpx.ConnectError(str(cause))
    err.__cause__ = cause
    return err


def https_fails_with(error_factory, fake):
    def handler(request):
        if request.url.scheme == "https":
            raise error_factory()
        return fake(request)

    return handler


def test_insecure_host_falls_back_to_http_once_per_process():
    fake = FakeRegistry()
    digest = fake.add_manifest("app", "v1", MANIFEST)
    attempts = []
    handler = https_fails_with(lambda: attempts.append(1) or not_tls_error(), fake)
    for _ in range(2):
        with Registry(hosts.Config(), credentials=lambda h: None, transport=httpx.MockTransport(handler)) as registry:
            assert registry.get_manifest(ref())[0] == digest
    assert len(attempts) == 1 and hosts.known_scheme(HOST) == "http"
    assert all(r.url.scheme == "http" for r in fake.log)


def test_listed_insecure_registry_falls_back_too():
    fake = FakeRegistry(host="registry.example:5000")
    fake.add_manifest("app", "v1", MANIFEST)
    handler = https_fails_with(not_tls_error, fake)
    config = hosts.Config(insecure_registries=("registry.example:5000",))
    with Registry(config, credentials=lambda h: None, transport=httpx.MockTransport(handler)) as registry:
        registry.get_manifest(ref("registry.example:5000/app:v1"))
    assert hosts.known_scheme("registry.example:5000") == "http"


def test_secure_host_never_falls_back():
    fake = FakeRegistry(host="registry.example:5000")
    handler = https_fails_with(not_tls_error, fake)
    with Registry(hosts.Config(), credentials=lambda h: None, transport=httpx.MockTransport(handler)) as registry:
        with pytest.raises(CapsaError) as err:
            registry.get_manifest(ref("registry.example:5000/app:v1"))
    assert str(err.value).startswith("failed to reach registry registry.example:5000: it does not speak TLS")
    assert fake.log == []


def test_certificate_failure_is_reported_not_a_reason_to_fall_back():
    def verify_error():
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_message = "self-signed certificate"
        err = httpx.ConnectError(str(cause))
        err.__cause__ = cause
        return err

    fake = FakeRegistry()
    with client_with(https_fails_with(verify_error, fake)) as registry, pytest.raises(CapsaError) as err:
        registry.get_manifest(ref())
    assert str(err.value) == f"failed to reach registry {HOST}: certificate verify failed: self-signed certificate"
    assert fake.log == [] and hosts.known_scheme(HOST) is None


def client_with(handler) -> Registry:
    return Registry(hosts.Config(), credentials=lambda h: None, transport=httpx.MockTransport(handler))


def test_connection_refused_is_one_line():
    port = closed_port()
    with Registry(hosts.Config(), credentials=lambda h: None) as registry, pytest.raises(CapsaError) as err:
        registry.get_manifest(ref(f"127.0.0.1:{port}/app:v1"))
    assert str(err.value) == f"failed to reach registry 127.0.0.1:{port}: connection refused"


def test_docker_hub_endpoint_and_insecure_hosts():
    assert hosts.endpoint("docker.io") == "registry-1.docker.io"
    assert hosts.endpoint(HOST) == HOST
    config = hosts.Config(insecure_registries=("myreg:5000", "10.1.0.0/16"))
    insecure = ["localhost", "localhost:5000", "127.0.0.1", "127.8.9.10:443", "[::1]:5000", "myreg:5000", "10.1.2.3:80"]
    secure = ["docker.io", "myreg", "myreg:5001", "10.2.0.1:5000", "example.com", "localhost.example.com"]
    assert all(hosts.is_insecure(host, config) for host in insecure)
    assert not any(hosts.is_insecure(host, config) for host in secure)


def test_config_file(tmp_path, monkeypatch):
    path = tmp_path / "capsa.json"
    monkeypatch.setenv("CAPSA_CONFIG_FILE", str(path))
    assert hosts.load_config() == hosts.Config((), 3, 5)
    path.write_text(json.dumps({"insecure-registries": ["a:5000"], "max-concurrent-downloads": 7, "debug": True}))
    assert hosts.load_config() == hosts.Config(("a:5000",), 7, 5)
    for broken in ("{", '{"insecure-registries": "a"}', '{"max-concurrent-uploads": 0}'):
        path.write_text(broken)
        with pytest.raises(InvalidArgument) as err:
            hosts.load_config()
        assert str(err.value).startswith(f"failed to read {path}: ") and "\n" not in str(err.value)


# -- real sockets on 127.0.0.1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PlainRegistry(http.server.BaseHTTPRequestHandler):
    """/v2/app/manifests/v1 over whatever socket it is given."""

    def do_GET(self):
        body = MANIFEST if self.path == "/v2/app/manifests/v1" else b"{}"
        self.send_response(200 if self.path in ("/v2/", "/v2/app/manifests/v1") else 404)
        self.send_header("Content-Type", mediatypes.OCI_MANIFEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(context: ssl.SSLContext | None = None) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PlainRegistry)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def write_self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capsa test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return str(cert_path), str(key_path)


def tls_server_context(tmp_path) -> tuple[ssl.SSLContext, str]:
    cert, key = write_self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


def connect_error(url: str, verify) -> httpx.ConnectError:
    with pytest.raises(httpx.ConnectError) as err:
        httpx.get(url, verify=verify, timeout=5)
    return err.value


def test_speaks_no_tls_on_real_sockets(serve, tmp_path):
    plain = serve()
    assert hosts.speaks_no_tls(connect_error(f"https://127.0.0.1:{plain}/v2/", ssl.create_default_context()))
    refused = connect_error(f"https://127.0.0.1:{closed_port()}/v2/", ssl.create_default_context())
    assert not hosts.speaks_no_tls(refused)
    assert hosts.describe_connect_error(refused) == "connection refused"
    context, _ = tls_server_context(tmp_path)
    untrusted = connect_error(f"https://127.0.0.1:{serve(context)}/v2/", ssl.create_default_context())
    assert not hosts.speaks_no_tls(untrusted)
    assert hosts.describe_connect_error(untrusted).startswith("certificate verify failed: ")


def test_speaks_no_tls_when_the_server_resets(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def reset():
            conn, _ = listener.accept()
            conn.recv(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        threading.Thread(target=reset, daemon=True).start()
        err = connect_error(f"https://127.0.0.1:{listener.getsockname()[1]}/", ssl.create_default_context())
    assert hosts.speaks_no_tls(err)


def test_plain_http_registry_on_loopback_is_reached_over_http(serve):
    host = f"127.0.0.1:{serve()}"
    with Registry(hosts.Config(), credentials=lambda h: None) as registry:
        assert registry.get_manifest(ref(f"{host}/app:v1"))[2] == MANIFEST
        assert hosts.known_scheme(host) == "http"
        assert registry.get_manifest(ref(f"{host}/app:v1"))[2] == MANIFEST


def test_certs_d_ca_is_trusted(serve, tmp_path, monkeypatch):
    context, cert = tls_server_context(tmp_path)
    host = f"127.0.0.1:{serve(context)}"
    with Registry(hosts.Config(), credentials=lambda h: None) as registry, pytest.raises(CapsaError) as err:
        registry.get_manifest(ref(f"{host}/app:v1"))
    assert "certificate verify failed" in str(err.value)
    certs_d = tmp_path / "certs.d"
    (certs_d / host).mkdir(parents=True)
    (certs_d / host / "ca.crt").write_bytes(open(cert, "rb").read())
    monkeypatch.setenv("CAPSA_CERTS_D", str(certs_d))
    with Registry(hosts.Config(), credentials=lambda h: None) as registry:
        assert registry.get_manifest(ref(f"{host}/app:v1"))[2] == MANIFEST
    assert hosts.known_scheme(host) == "https"


def test_client_certificate_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSA_CERTS_D", str(tmp_path))
    directory = tmp_path / "reg:5000"
    directory.mkdir()
    cert, key = write_self_signed(tmp_path)
    (directory / "client.cert").write_bytes(open(cert, "rb").read())
    (directory / "client.key").write_bytes(open(key, "rb").read())
    assert hosts.client_certificates(str(directory)) == [(f"{directory}/client.cert", f"{directory}/client.key")]
    hosts.ssl_context("reg:5000")
    (directory / "client.key").unlink()
    with pytest.raises(InvalidArgument, match="client.key is missing for .*client.cert"):
        hosts.ssl_context("reg:5000")


def test_token_cache_is_shared_between_threads():
    fake = FakeRegistry("bearer")
    fake.add_manifest("app", "v1", MANIFEST)
    with client(fake) as registry:
        registry.get_manifest(ref())
        threads = [threading.Thread(target=registry.get_manifest, args=(ref(),)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(fake.token_log) == 1
