"""JSON through the `_json` C accelerator, without the `json` package.

`import json` pulls in `re` and `enum` and costs about 15 ms on the machines
capsa is measured on: more than all of a container's start-up work. The
runtime and the shim read and write JSON through these two functions, which
drive the same C scanner and encoder `json` itself uses. Errors raise
ValueError (json's JSONDecodeError is a subclass of it).
"""

import _json

_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Decoder:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Decoder())
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)  # fmt: skip
_WHITESPACE = " \t\n\r"


def loads(data: str | bytes):
    """Parse one JSON document."""
    if isinstance(data, (bytes, bytearray)):
        # "utf-8-sig" would import one more codec module; drop a BOM by hand.
        data = bytes(data[3:] if data[:3] == b"\xef\xbb\xbf" else data).decode()
    start = len(data) - len(data.lstrip(_WHITESPACE))
    try:
        value, end = _scan(data, start)
    except (StopIteration, SystemError, ValueError):
        value, end = None, -1
    if end < 0 or data[end:].strip(_WHITESPACE):
        # The C scanner only builds a readable message when json.decoder is
        # loaded; bad input is rare, so let the json package explain it.
        import json

        json.loads(data)
    return value


def dumps(value, indent: str | None = None) -> str:
    """JSON with non-ASCII escaped: compact, or pretty with `indent` per level."""
    if indent is None:
        return "".join(_encode(value, 0))
    return _pretty(value, indent, "")


def _pretty(value, indent: str, prefix: str) -> str:
    inner = prefix + indent
    if isinstance(value, dict) and value:
        items = (f"{inner}{_encode(str(k), 0)[0]}: {_pretty(v, indent, inner)}"
                 for k, v in value.items())  # fmt: skip
        return "{\n" + ",\n".join(items) + f"\n{prefix}}}"
    if isinstance(value, (list, tuple)) and value:
        items = (inner + _pretty(v, indent, inner) for v in value)
        return "[\n" + ",\n".join(items) + f"\n{prefix}]"
    return "".join(_encode(value, 0))
