"""Manifests, indexes and image configs: parsed, checked, and the platform
chosen from an index, as the OCI image-spec and Docker's schema 2 define them.

Everything read from a registry or an archive passes through here before it
is trusted: descriptors must have a media type, a valid digest and a size.
"""

import platform as host_platform

from capsa import fastjson as json
from capsa.errors import InvalidArgument, NotFound, Unsupported
from capsa.images import digest as digests
from capsa.images import mediatypes
from capsa.record import field, record

# Kernel machine names → OCI architecture and variant.
_MACHINES = {"x86_64": ("amd64", ""), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
             "armv6l": ("arm", "v6"), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
             "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}  # fmt: skip


@record(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: "Platform") -> bool:
        """OTHER (from an index) can run where SELF is wanted; arm64's
        variant defaults to v8, and no variant asked means any."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        want, have = self.variant, other.variant
        if self.architecture == "arm64":
            want, have = want or "v8", have or "v8"
        return not self.variant or want == have


def host() -> Platform:
    arch, variant = _MACHINES.get(host_platform.machine(), (host_platform.machine(), ""))
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InvalidArgument(f"invalid platform {text!r}: want os/arch[/variant]")
    return Platform(*(p.lower() for p in parts))


@record(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        out = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@record(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@record(frozen=True)
class Config:
    raw: dict
    diff_ids: list[str]
    platform: Platform
    created: str


def loads(body: bytes, what: str):
    try:
        value = json.loads(body)
    except ValueError as err:
        raise InvalidArgument(f"failed to parse {what}: {err}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"failed to parse {what}: not a JSON object")
    return value


def media_type_of(body: bytes, declared: str, what: str) -> str:
    """The media type of a manifest or index: the body's own mediaType,
    else the one it was served with (OCI allows an empty field)."""
    doc = loads(body, what)
    if doc.get("schemaVersion") == 1 or declared in mediatypes.DOCKER_SCHEMA1:
        raise Unsupported(f"{what} is a Docker schema 1 manifest, which capsa does not support")
    kind = doc.get("mediaType") or declared
    if kind not in mediatypes.INDEXES + mediatypes.MANIFESTS:
        kind = mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST if "layers" in doc else kind
    if kind not in mediatypes.INDEXES + mediatypes.MANIFESTS:
        raise Unsupported(f"{what} has unsupported media type {kind!r}")
    return kind


def _descriptor(raw, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"failed to parse {what}: a descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidArgument(f"failed to parse {what}: a descriptor has no mediaType")
    if not isinstance(digest, str):
        raise InvalidArgument(f"failed to parse {what}: a descriptor has no digest")
    digests.validate(digest)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"failed to parse {what}: descriptor {digest} has no valid size")
    found = raw.get("platform")
    plat = None
    if isinstance(found, dict):
        plat = Platform(str(found.get("os", "")), str(found.get("architecture", "")),
                        str(found.get("variant", "")))  # fmt: skip
    return Descriptor(media_type, digest, size, plat, raw.get("annotations") or {})


def parse_index(body: bytes, what: str) -> list[Descriptor]:
    doc = loads(body, what)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidArgument(f"failed to parse {what}: no manifests list")
    return [_descriptor(raw, what) for raw in manifests]


def select(index: list[Descriptor], wanted: Platform, what: str) -> Descriptor:
    for desc in index:
        if desc.media_type in mediatypes.MANIFESTS and desc.platform and wanted.matches(desc.platform):
            return desc
    offered = ", ".join(str(d.platform) for d in index if d.platform) or "none"
    raise NotFound(f"{what} has no manifest for platform {wanted} (it has: {offered})")


def parse_manifest(body: bytes, what: str) -> Manifest:
    doc = loads(body, what)
    kind = media_type_of(body, "", what)
    if kind not in mediatypes.MANIFESTS:
        raise InvalidArgument(f"failed to parse {what}: it is an index, not a manifest")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument(f"failed to parse {what}: no layers list")
    return Manifest(kind, _descriptor(doc.get("config"), what), [_descriptor(raw, what) for raw in layers])


def parse_config(body: bytes, what: str) -> Config:
    doc = loads(body, what)
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or rootfs.get("type") != "layers":
        raise InvalidArgument(f"failed to parse {what}: rootfs must be of type layers with diff_ids")
    for diff_id in diff_ids:
        if not isinstance(diff_id, str):
            raise InvalidArgument(f"failed to parse {what}: a diff_id is not a string")
        digests.validate(diff_id)
    plat = Platform(str(doc.get("os", "")), str(doc.get("architecture", "")), str(doc.get("variant", "")))
    created = doc.get("created")
    return Config(doc, diff_ids, plat, created if isinstance(created, str) else "")
