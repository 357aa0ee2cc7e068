"""capsa-shim's socket protocol: requests are checked, frames are Docker's."""

import json
import struct

import pytest

from capsa.errors import InvalidArgument
from capsa.shim.protocol import error_reply, frame, parse_request, read_frames, reply


def test_frames_are_dockers_multiplexed_stream_format():
    assert frame(1, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    data = frame(2, b"x" * 70000)
    assert data[:8] == bytes([2, 0, 0, 0]) + struct.pack(">I", 70000) and len(data) == 70008
    assert frame(1, b"") == b"\x01" + b"\x00" * 7


def test_frames_read_back_across_chunk_boundaries():
    stream = frame(1, b"out") + frame(2, b"err") + frame(1, b"tail")
    found, rest = read_frames(stream[:13])
    assert found == [(1, b"out")] and rest == stream[11:13]
    found, rest = read_frames(rest + stream[13:])
    assert found == [(2, b"err"), (1, b"tail")] and rest == b""


@pytest.mark.parametrize("line, op, fields", [
    (b'{"op":"status"}', "status", {}),
    (b'{"op":"wait"}', "wait", {}),
    (b'{"op":"kill","signal":15}', "kill", {"signal": 15, "disable_restart": None}),
    (b'{"op":"kill","signal":"HUP"}', "kill", {"signal": 1}),
    (b'{"op":"kill","signal":"SIGUSR1","disable_restart":false}', "kill",
     {"signal": 10, "disable_restart": False}),
    (b'{"op":"kill"}', "kill", {"signal": None}),
    (b'{"op":"stop","timeout":2.5}', "stop", {"timeout": 2.5, "signal": None}),
    (b'{"op":"stop"}', "stop", {"timeout": 10.0}),
    (b'{"op":"stop","timeout":0,"signal":"INT"}', "stop", {"timeout": 0.0, "signal": 2}),
    (b'{"op":"attach","stdin":true}', "attach", {"stdin": True}),
    (b'{"op":"attach"}', "attach", {"stdin": False}),
    (b'{"op":"resize","rows":24,"cols":80}', "resize", {"rows": 24, "cols": 80}),
    (b' {"op":"shutdown"} \r', "shutdown", {}),
    (b'{"op":"resize","rows":24,"cols":80,"exec":4242}', "resize", {"exec_pid": 4242}),
    (b'{"op":"resize","rows":24,"cols":80}', "resize", {"exec_pid": None}),
    (b'{"op":"exec","process":{"args":["sh"],"cwd":"/"}}', "exec",
     {"process": {"args": ["sh"], "cwd": "/"}, "stdin": False, "detach": False}),
    (b'{"op":"exec","process":{"args":["sh"],"terminal":true},"stdin":true,"detach":true}', "exec",
     {"process": {"args": ["sh"], "terminal": True}, "stdin": True, "detach": True}),
])  # fmt: skip
def test_requests_are_parsed(line, op, fields):
    request = parse_request(line)
    assert request.op == op
    for name, value in fields.items():
        assert getattr(request, name) == value


@pytest.mark.parametrize("line, message", [
    (b"", "not JSON"), (b"{", "not JSON"), (b"\xff", "not JSON"), (b"[]", "not a JSON object"),
    (b'{"op":"run"}', "unknown op 'run'"), (b'{}', "unknown op None"),
    (b'{"op":"kill","signal":"NOPE"}', "unknown signal"),
    (b'{"op":"kill","signal":true}', "bad signal"),
    (b'{"op":"kill","signal":99}', "invalid signal"),
    (b'{"op":"kill","disable_restart":1}', "must be true or false"),
    (b'{"op":"stop","timeout":-1}', "bad timeout"),
    (b'{"op":"stop","timeout":"5"}', "bad timeout"),
    (b'{"op":"attach","stdin":"yes"}', "must be true or false"),
    (b'{"op":"resize","rows":0,"cols":80}', "bad rows"),
    (b'{"op":"resize","rows":24}', "bad cols"),
    (b'{"op":"resize","rows":24,"cols":70000}', "bad cols"),
    (b'{"op":"resize","rows":24,"cols":80,"exec":"12"}', "bad exec"),
    (b'{"op":"resize","rows":24,"cols":80,"exec":0}', "bad exec"),
    (b'{"op":"exec"}', "process must be a JSON object"),
    (b'{"op":"exec","process":["sh"]}', "process must be a JSON object"),
    (b'{"op":"exec","process":{"cwd":"/"}}', "process.args must be a non-empty list of strings"),
    (b'{"op":"exec","process":{"args":[]}}', "process.args must be a non-empty list of strings"),
    (b'{"op":"exec","process":{"args":"sh"}}', "process.args must be a non-empty list of strings"),
    (b'{"op":"exec","process":{"args":["sh",1]}}', "process.args must be a non-empty list of strings"),
    (b'{"op":"exec","process":{"args":["sh"],"terminal":1}}', "process.terminal must be true or false"),
    (b'{"op":"exec","process":{"args":["sh"]},"stdin":"yes"}', "stdin must be true or false"),
    (b'{"op":"exec","process":{"args":["sh"]},"detach":null}', "detach must be true or false"),
])  # fmt: skip
def test_bad_requests_are_refused_with_a_reason(line, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_request(line)


def test_replies_are_one_json_line():
    assert json.loads(reply(exit_code=3)) == {"exit_code": 3}
    assert reply(ok=True).endswith(b"\n") and reply(ok=True).count(b"\n") == 1
    assert json.loads(error_reply("first line\nsecond")) == {"error": "first line"}
