"""A client of the OCI distribution-spec API (a registry's /v2/).

One Registry serves one command: it keeps an httpx client per host (safe
to share between the threads that fetch layers), an Authorizer that answers
401s (auth.py), and the scheme decision for insecure hosts (hosts.py).

    registry = Registry()
    digest, media_type, body = registry.get_manifest(ref)
    with store.ingest(layer.digest, layer.size) as ingest:
        registry.fetch_blob(ref, layer.digest, layer.size, ingest, on_data=unpacker.feed)

Manifests are verified against the digest they were asked by (and against
Docker-Content-Digest when asked by tag); blobs are verified by the Ingest.
Redirects (registries send blob GETs to their storage) are followed here,
not by httpx, so that a request leaving the registry's origin never carries
its Authorization header. Tests pass `transport` (an httpx.MockTransport).
"""

import json
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

import httpx

from capsa import __version__
from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, NotFound, Unsupported
from capsa.images import auth, credentials, hosts, mediatypes
from capsa.images import digest as digests
from capsa.images.content import Ingest
from capsa.images.reference import Reference

CHUNK = 256 << 10
MANIFEST_MAX = 4 << 20  # containerd's limit too
MAX_REDIRECTS = 5
TIMEOUT = httpx.Timeout(30.0)
USER_AGENT = f"capsa/{__version__}"

_FAILURES = {400: InvalidArgument, 401: FailedPrecondition, 403: FailedPrecondition,
             404: NotFound, 405: Unsupported}  # fmt: skip
_PLAIN_TYPES = ("", "application/json", "text/plain", "application/octet-stream")

Body = bytes | Callable[[], Iterator[bytes]] | None


class Registry:
    """Talks to registries on behalf of one command (pull, push, login).

    config       hosts.Config (insecure registries); read from the config file if None
    credentials  host -> (user, password) | None; credentials.get by default
    transport    an httpx transport for every connection (tests)
    """

    def __init__(self, config: hosts.Config | None = None,
                 credentials: auth.Credentials = credentials.get,
                 transport: httpx.BaseTransport | None = None):  # fmt: skip
        self.config = config if config is not None else hosts.load_config()
        self.credentials = credentials
        self.transport = transport
        self.auth = auth.Authorizer(self._fetch_token, credentials)
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- manifests

    def get_manifest(self, ref: Reference, reference_or_digest: str | None = None) -> tuple[str, str, bytes]:
        """(digest, media type, body) of REF's manifest or index, or of the
        one REFERENCE_OR_DIGEST (a tag or a digest) names in REF's repository."""
        wanted = reference_or_digest or ref.digest or ref.tag
        by_digest = ":" in wanted  # a tag cannot hold a ":"
        shown = f"{ref.name}@{wanted}" if by_digest else f"{ref.name}:{wanted}"
        if by_digest:
            digests.validate(wanted)
        response = self._api(ref, "GET", f"manifests/{wanted}", [auth.pull_scope(ref.path)],
                             f"fetch manifest {shown}", headers={"Accept": mediatypes.ACCEPT},
                             stream=True, redirects=True)  # fmt: skip
        try:
            if response.status_code == 404:
                raise NotFound(f"manifest for {shown} not found")
            if response.status_code != 200:
                raise _failure(response, f"fetch manifest {shown}")
            body = _read_limited(response, MANIFEST_MAX, f"manifest {shown}")
        finally:
            response.close()
        media_type = _media_type(response, body)
        if _is_schema1(media_type, body):
            raise Unsupported(f"{shown} is a Docker schema 1 manifest, which capsa does not support; "
                              "push it again with a current client")  # fmt: skip
        digest = digests.of_bytes(body)
        if by_digest and digest != wanted:
            raise InvalidArgument(f"manifest {shown} failed verification: its content has digest {digest}")
        claimed = response.headers.get("docker-content-digest", "")
        if not by_digest and claimed.startswith(f"{digests.ALGORITHM}:") and claimed != digest:
            raise InvalidArgument(f"manifest {shown} failed verification: the registry says {claimed}, "
                                  f"its content has digest {digest}")  # fmt: skip
        return digest, media_type, body

    def head_manifest(self, ref: Reference) -> str | None:
        """The digest REF names at the registry, from a HEAD; None if the
        registry does not say (or has no such manifest)."""
        wanted = ref.digest or ref.tag
        response = self._api(ref, "HEAD", f"manifests/{wanted}", [auth.pull_scope(ref.path)],
                             f"check manifest {ref}", headers={"Accept": mediatypes.ACCEPT},
                             redirects=True)  # fmt: skip
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _failure(response, f"check manifest {ref}")
        claimed = response.headers.get("docker-content-digest", "")
        try:
            return digests.validate(claimed)
        except InvalidArgument:
            return None

    def put_manifest(self, ref: Reference, media_type: str, body: bytes) -> str:
        """Push BODY as REF's manifest (by tag, or by digest if REF has no tag); its digest."""
        digest = digests.of_bytes(body)
        target = ref.tag or ref.digest
        what = f"push manifest {ref}"
        response = self._api(ref, "PUT", f"manifests/{target}", [auth.push_scope(ref.path)], what,
                             headers={"Content-Type": media_type}, body=body)  # fmt: skip
        if response.status_code not in (200, 201):
            raise _failure(response, what)
        claimed = response.headers.get("docker-content-digest", "")
        if claimed.startswith(f"{digests.ALGORITHM}:") and claimed != digest:
            raise CapsaError(f"failed to {what}: the registry stored it as {claimed}, not {digest}")
        return digest

    # -- blobs

    def fetch_blob(self, ref: Reference, digest: str, size: int | None, ingest: Ingest,
                   on_data: Callable[[bytes], None] | None = None) -> None:  # fmt: skip
        """Download blob DIGEST of REF's repository into INGEST and commit it
        (which verifies it). A partial download resumes with a Range request;
        ON_DATA sees every byte of the blob once, in order, also those already
        on disk. A broken connection keeps the partial file for next time."""
        digests.validate(digest)
        if ingest.done:  # a concurrent pull stored it meanwhile
            _replay(ingest.store.path(digest), None, on_data)
            return
        if size is not None and ingest.offset == size:
            _replay(ingest.partial, size, on_data)
            ingest.commit()
            return
        what = f"fetch blob {digest} of {ref.name}"
        for attempt in (1, 2):
            offset = ingest.offset
            headers = {"Accept-Encoding": "identity"}  # the bytes as stored, never decoded
            if offset:
                headers["Range"] = f"bytes={offset}-"
            response = self._api(ref, "GET", f"blobs/{digest}", [auth.pull_scope(ref.path)], what,
                                 headers=headers, stream=True, redirects=True)  # fmt: skip
            try:
                status = response.status_code
                if status == 206 and _range_start(response) == offset:
                    _replay(ingest.partial, offset, on_data)
                elif status == 200:
                    ingest.restart()  # the server ignored the Range: take the whole body
                elif offset and status in (206, 416) and attempt == 1:
                    ingest.restart()  # it cannot serve the rest: fetch it whole
                    continue
                else:
                    raise _failure(response, what)
                _stream_into(response, ingest, on_data, digest)
                break
            finally:
                response.close()
        ingest.commit()

    def blob_exists(self, ref: Reference, digest: str) -> bool:
        """Whether REF's repository has blob DIGEST (asked with push scope:
        this is the push's question)."""
        what = f"check blob {digest} of {ref.name}"
        response = self._api(ref, "HEAD", f"blobs/{digests.validate(digest)}", [auth.push_scope(ref.path)], what,
                             redirects=True)  # fmt: skip
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise _failure(response, what)
        return True

    def mount_blob(self, ref: Reference, digest: str, from_path: str) -> bool:
        """Ask the registry to link blob DIGEST from repository FROM_PATH into
        REF's; False if it would not (and then nothing was started)."""
        what = f"mount blob {digest} from {from_path} into {ref.name}"
        params = {"mount": digests.validate(digest), "from": from_path}
        scopes = [auth.push_scope(ref.path), auth.pull_scope(from_path)]
        response = self._api(ref, "POST", "blobs/uploads/", scopes, what, headers={"Content-Length": "0"},
                             params=params)  # fmt: skip
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            # The registry began an ordinary upload instead: give it back.
            self._cancel_upload(ref, _location(response, what))
            return False
        raise _failure(response, what)

    def upload_blob(self, ref: Reference, digest: str, size: int, file: BinaryIO) -> None:
        """Push SIZE bytes of FILE (from its current position) as blob DIGEST:
        POST to start an upload, PATCH the bytes, PUT ?digest= to finish."""
        what = f"upload blob {digest} to {ref.name}"
        scopes = [auth.push_scope(ref.path)]
        start = file.tell()
        response = self._api(ref, "POST", "blobs/uploads/", scopes, what, headers={"Content-Length": "0"})
        if response.status_code != 202:
            raise _failure(response, what)
        location = _location(response, what)
        try:
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            response = self._send(ref.domain, "PATCH", location, scopes, what, headers=headers,
                                  body=lambda: _read_from(file, start, size))  # fmt: skip
            if response.status_code != 202:
                raise _failure(response, what)
            location = _location(response, what).copy_merge_params({"digest": digests.validate(digest)})
            response = self._send(ref.domain, "PUT", location, scopes, what, headers={"Content-Length": "0"})
            if response.status_code not in (201, 204):
                raise _failure(response, what)
        except CapsaError:
            self._cancel_upload(ref, location)
            raise
        claimed = response.headers.get("docker-content-digest", "")
        if claimed.startswith(f"{digests.ALGORITHM}:") and claimed != digest:
            raise CapsaError(f"failed to {what}: the registry stored it as {claimed}")

    def _cancel_upload(self, ref: Reference, location: httpx.URL) -> None:
        try:
            self._send(ref.domain, "DELETE", location, [auth.push_scope(ref.path)], "cancel upload")
        except CapsaError:
            pass  # best effort: the registry purges stale uploads itself

    # -- login

    def check_login(self, host: str, user: str | None = None, password: str | None = None) -> None:
        """Check that HOST accepts USER and PASSWORD (or the stored
        credentials) by asking its /v2/ with authorization."""
        lookup = self.credentials if user is None else (lambda _host: (user, password))
        authorizer = auth.Authorizer(self._fetch_token, lookup)
        try:
            response = self._send(host, "GET", "/v2/", [], f"log in to {host}", authorizer=authorizer)
        except auth.Unauthorized as err:
            raise FailedPrecondition(f"failed to log in to {host}: {err.reason}") from err
        if response.status_code != 200:
            raise _failure(response, f"log in to {host}")

    # -- HTTP

    def _api(self, ref: Reference, method: str, tail: str, scopes: list[str], what: str,
             **kwargs) -> httpx.Response:  # fmt: skip
        """A request for /v2/<REF's repository>/TAIL."""
        return self._send(ref.domain, method, f"/v2/{ref.path}/{tail}", scopes, what, **kwargs)

    def _send(self, host: str, method: str, target: str | httpx.URL, scopes: list[str], what: str, *,
              headers: dict | None = None, authorizer: auth.Authorizer | None = None,
              **options) -> httpx.Response:  # fmt: skip
        """One API request to HOST with authorization: a 401 is answered
        (auth.py) and the request sent once more. TARGET is a path under
        the registry's root or an absolute URL (an upload's Location).
        OPTIONS: params, body, stream, redirects (see _exchange)."""
        authorizer = authorizer or self.auth
        for attempt in (1, 2):
            request_headers = dict(headers or {})
            if value := authorizer.header(host, scopes):
                request_headers["Authorization"] = value
            response = self._exchange(host, method, target, request_headers, what, **options)
            if response.status_code != 401:
                return response
            _read_error(response)
            if attempt == 2:
                raise auth.unauthorized(host, response, anonymous=authorizer.anonymous(host))
            if not authorizer.authorize(host, scopes, response):
                return response
        raise AssertionError("unreachable")

    def _exchange(self, host: str, method: str, target: str | httpx.URL, headers: dict, what: str,
                  params: dict | None = None, body: Body = None, stream: bool = False,
                  redirects: bool = False) -> httpx.Response:  # fmt: skip
        """Send one request, choosing HOST's scheme on the first one, and
        follow REDIRECTS (GET, HEAD) without Authorization off the origin.
        BODY is bytes, or a function giving the chunks (read again on a retry)."""
        url, probing = self._url(host, target, params)
        try:
            response = self._send_once(method, url, headers, body, stream)
        except httpx.TransportError as err:
            if not (probing and hosts.speaks_no_tls(err)):
                raise _unreachable(f"registry {host}", err, what) from err
            hosts.remember_scheme(host, "http")  # it does not speak TLS at all
            return self._exchange(host, method, target, headers, what, params, body, stream, redirects)
        if probing:
            hosts.remember_scheme(host, "https")
        for _ in range(MAX_REDIRECTS):
            if not (redirects and response.has_redirect_location):
                break
            response.close()
            origin, url = response.url, response.url.join(response.headers["location"])
            if _origin(url) != _origin(origin):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            try:
                response = self._send_once(method, url, headers, body, stream)
            except httpx.TransportError as err:
                raise _unreachable(url.netloc.decode(), err, what) from err
        return response

    def _send_once(self, method: str, url: httpx.URL, headers: dict, body: Body,
                   stream: bool) -> httpx.Response:  # fmt: skip
        client = self._client(url)
        content = body() if callable(body) else body
        request = client.build_request(method, url, headers=headers, content=content)
        return client.send(request, stream=stream)

    def _url(self, host: str, target: str | httpx.URL, params: dict | None) -> tuple[httpx.URL, bool]:
        """The URL for TARGET, and whether this request decides HOST's scheme."""
        probing = False
        if isinstance(target, httpx.URL) or "://" in target:
            url = httpx.URL(target)
        else:
            scheme = hosts.known_scheme(host)
            probing = scheme is None and hosts.is_insecure(host, self.config)
            url = httpx.URL(f"{scheme or 'https'}://{hosts.endpoint(host)}{target}")
        return (url.copy_merge_params(params) if params else url), probing

    def _client(self, url: httpx.URL) -> httpx.Client:
        netloc = url.netloc.decode()
        with self._lock:
            client = self._clients.get(netloc)
            if client is None:
                tls = {"transport": self.transport} if self.transport else {"verify": hosts.ssl_context(netloc)}
                client = httpx.Client(timeout=TIMEOUT, headers={"User-Agent": USER_AGENT}, **tls)
                self._clients[netloc] = client
        return client

    def _fetch_token(self, url: str, params: list[tuple[str, str]], headers: dict) -> httpx.Response:
        realm = httpx.URL(url)
        try:
            return self._client(realm).get(realm, params=params, headers=headers)
        except httpx.TransportError as err:
            why = hosts.describe_connect_error(err)
            raise CapsaError(f"failed to reach token server {url}: {why}") from err


def _unreachable(place: str, err: httpx.TransportError, what: str) -> CapsaError:
    """PLACE ("registry HOST", or where a redirect led) could not be
    reached, or the exchange for WHAT broke off."""
    if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout)):
        return CapsaError(f"failed to reach {place}: {hosts.describe_connect_error(err)}")
    return CapsaError(f"failed to {what}: {hosts.describe_connect_error(err)}")


def _failure(response: httpx.Response, what: str) -> CapsaError:
    """The one-line error for an unexpected answer, by status class."""
    detail = auth.error_detail(_read_error(response)) or response.reason_phrase.lower()
    return _FAILURES.get(response.status_code, CapsaError)(f"failed to {what}: {response.status_code} {detail}")


def _read_error(response: httpx.Response) -> httpx.Response:
    """Read an error answer's body (if not read yet), so that its message can be shown."""
    try:
        response.read()
    except (httpx.TransportError, httpx.StreamError):
        pass  # error_detail() then finds no body
    finally:
        response.close()
    return response


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise InvalidArgument(f"{what} is larger than {limit >> 20} MiB")
    return bytes(data)


def _media_type(response: httpx.Response, body: bytes) -> str:
    """The Content-Type, or the body's own mediaType when the server sent a generic one."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if media_type in _PLAIN_TYPES:
        try:
            declared = json.loads(body).get("mediaType")
        except (ValueError, AttributeError, UnicodeDecodeError):
            declared = None
        if isinstance(declared, str) and declared:
            return declared
    return media_type


def _is_schema1(media_type: str, body: bytes) -> bool:
    if media_type in mediatypes.DOCKER_SCHEMA1:
        return True
    if media_type in mediatypes.INDEXES or media_type in mediatypes.MANIFESTS:
        return False
    try:
        return json.loads(body).get("schemaVersion") == 1
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206 answer: "Content-Range: bytes 100-999/1000"."""
    unit, _, spec = response.headers.get("content-range", "").partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _stream_into(response: httpx.Response, ingest: Ingest, on_data: Callable | None, digest: str) -> None:
    try:
        for chunk in response.iter_raw(CHUNK):
            ingest.write(chunk)
            if on_data:
                on_data(chunk)
    except httpx.TransportError as err:
        raise CapsaError(f"failed to download blob {digest}: {hosts.describe_connect_error(err)}") from err


def _replay(path: str, length: int | None, on_data: Callable | None) -> None:
    """Feed ON_DATA the first LENGTH bytes (all if None) of the file at PATH."""
    if on_data is None or length == 0:
        return
    with open(path, "rb") as f:
        remaining = length
        while remaining is None or remaining > 0:
            chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            on_data(chunk)
            if remaining is not None:
                remaining -= len(chunk)


def _read_from(file: BinaryIO, start: int, size: int) -> Iterator[bytes]:
    file.seek(start)
    remaining = size
    while remaining > 0 and (chunk := file.read(min(CHUNK, remaining))):
        remaining -= len(chunk)
        yield chunk


def _location(response: httpx.Response, what: str) -> httpx.URL:
    location = response.headers.get("location")
    if not location:
        raise CapsaError(f"failed to {what}: the registry's {response.status_code} answer has no Location")
    return response.url.join(location)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port
