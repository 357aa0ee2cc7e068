"""Image references ("busybox", "host:5000/a/b:tag@sha256:…") with Docker's
grammar and normalisation (github.com/distribution/reference).

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] component ( "/" component )*
    domain     := host [ ":" port ]     host: DNS-like name, IPv4, or [IPv6]
    component  := [a-z0-9]+ ( separator [a-z0-9]+ )*   separator: . _ __ or dashes
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}

The first component is a domain only if it holds a "." or a ":" or is
"localhost"; otherwise the name lives on Docker Hub ("docker.io"), where a
one-component path gets the "library/" namespace. "index.docker.io" is the
same registry as "docker.io". `parse` adds the tag "latest" when there is
neither a tag nor a digest:

    parse("busybox")                -> docker.io/library/busybox:latest
    parse("127.0.0.1:5000/x@sha256:…").familiar_name -> 127.0.0.1:5000/x
"""

import re

from capsa.errors import InvalidArgument
from capsa.images import digest as digests
from capsa.record import record

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@record(frozen=True)
class Reference:
    """A normalised reference: always a domain, a full path, and a tag or a
    digest (or both, as "name:tag@digest", where the digest decides)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository: "docker.io/library/busybox"."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Docker's short form: "busybox", "user/app", "127.0.0.1:5000/x"."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        short = self.path.removeprefix(OFFICIAL_PREFIX)
        return short if "/" not in short else self.path

    def familiar(self) -> str:
        """The short form with the tag and digest: "busybox:latest"."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> "Reference":
        """NAME:TAG, without the digest this reference may carry."""
        return Reference(self.domain, self.path, check_tag(tag, f"{self.name}:{tag}"), None)

    def with_digest(self, digest: str) -> "Reference":
        """NAME@DIGEST, without the tag this reference may carry."""
        return Reference(self.domain, self.path, None, check_digest(digest, f"{self.name}@{digest}"))

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse(text: str) -> Reference:
    """TEXT as a normalised reference; InvalidArgument if it is not one."""
    if not text:
        raise _invalid(text, "repository name must have at least one component")
    if _IMAGE_ID.fullmatch(text):
        raise _invalid(text, "a 64-character hexadecimal string is an image ID, not a name")
    rest, at, digest = text.partition("@")
    name, tag = split_tag(rest)
    domain, path = split_domain(name)
    check_name(domain, path, text)
    if tag is not None:
        check_tag(tag, text)
    if at:
        check_digest(digest, text)
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest if at else None)


def split_tag(text: str) -> tuple[str, str | None]:
    """("name", "tag"); a ":" before the last "/" is a port, not a tag."""
    colon = text.rfind(":")
    if colon < 0 or "/" in text[colon:]:
        return text, None
    return text[:colon], text[colon + 1:]


def split_domain(name: str) -> tuple[str, str]:
    """("docker.io", "library/busybox") for "busybox": Docker's rule for
    telling a registry host from a namespace."""
    first, slash, rest = name.partition("/")
    if slash and (first == "localhost" or "." in first or ":" in first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def check_name(domain: str, path: str, text: str) -> None:
    if not _DOMAIN.fullmatch(domain):
        raise _invalid(text, f"{domain!r} is not a valid registry host")
    if path.lower() != path:
        raise _invalid(text, "repository name must be lowercase")
    if not _PATH.fullmatch(path):
        raise _invalid(text, "repository name components are lowercase letters and digits "
                             "joined by '.', '_', '__' or '-', separated by '/'")  # fmt: skip
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _invalid(text, f"repository name must not be more than {NAME_MAX} characters")


def check_tag(tag: str, text: str) -> str:
    if not _TAG.fullmatch(tag):
        raise _invalid(text, f"invalid tag {tag!r}: up to 128 letters, digits, '_', '.' "
                             "and '-', not starting with '.' or '-'")  # fmt: skip
    return tag


def check_digest(digest: str, text: str) -> str:
    try:
        return digests.validate(digest)
    except InvalidArgument as err:
        raise _invalid(text, str(err)) from None


def _invalid(text: str, why: str) -> InvalidArgument:
    return InvalidArgument(f'invalid reference format: "{text}": {why}')
