"""capsa.fastjson must read and write exactly what the json package does."""

import json

import pytest

from capsa import fastjson
from capsa.runtime import spec

VALUES = [spec.default(), spec.default(rootless=True), {}, [], {"a": []}, "é\u2603",
          {"x": {"y": [1, 2.5, {"z": None, "t": True}]}, "ü": "ß"}, 0, -7, 1e100]  # fmt: skip


@pytest.mark.parametrize("value", VALUES)
def test_round_trip_matches_json(value):
    assert fastjson.loads(fastjson.dumps(value)) == value
    assert fastjson.dumps(value) == json.dumps(value)
    assert fastjson.dumps(value, indent="  ") == json.dumps(value, indent=2)
    assert fastjson.loads(json.dumps(value, indent=4).encode()) == value


@pytest.mark.parametrize("text", ["", "{", '{"a":1} x', "nul", "[1,]", '{"a" 1}', "\ufeff"])
def test_bad_input_raises_value_error_with_a_position(text):
    with pytest.raises(ValueError, match="line 1 column"):
        fastjson.loads(text)


def test_bytes_with_bom_and_whitespace():
    assert fastjson.loads(b'\xef\xbb\xbf \n {"a": [1]} \n') == {"a": [1]}
