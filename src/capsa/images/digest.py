"""Content digests ("sha256:<64 hex>"), as the image and distribution specs use them."""

from capsa.errors import InvalidArgument

ALGORITHM = "sha256"
HEX_LENGTH = 64
_HEX = frozenset("0123456789abcdef")


def validate(digest: str) -> str:
    """DIGEST if it is a well-formed sha256 digest, else InvalidArgument."""
    algorithm, _, encoded = digest.partition(":")
    if algorithm != ALGORITHM:
        raise InvalidArgument(f"invalid digest {digest!r}: only sha256 digests are supported")
    if len(encoded) != HEX_LENGTH or not _HEX.issuperset(encoded):
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256: and 64 lowercase hex digits")
    return digest


def hex_of(digest: str) -> str:
    return validate(digest).partition(":")[2]


def of_bytes(data: bytes) -> str:
    import hashlib  # 5 ms (OpenSSL): not for commands that only read the store

    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The image-spec's ChainID of each layer prefix: the first layer's is
    its DiffID, then sha256 of "<parent chain id> <diff id>"."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else of_bytes(f"{chains[-1]} {diff_id}".encode()))
    return chains
