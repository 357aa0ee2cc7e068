"""capsa-shim's json-file log: entries, line splitting, partial lines, rotation."""

import json
import os

import pytest

from capsa.shim import logfile
from capsa.shim.logfile import PARTIAL_MAX, JsonFileLog, rfc3339nano, split_lines


def entries(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def fixed_clock():
    return "2024-05-01T12:00:00.5Z"


def test_entries_are_docker_json_file_lines(tmp_path):
    log = JsonFileLog(str(tmp_path / "c.log"), clock=fixed_clock)
    log.write("stdout", b"hello\n")
    log.write("stderr", b"oops\n")
    log.close()
    with open(tmp_path / "c.log") as f:
        first = f.readline()
    assert first == '{"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00.5Z"}\n'
    assert entries(tmp_path / "c.log")[1] == {"log": "oops\n", "stream": "stderr",
                                              "time": "2024-05-01T12:00:00.5Z"}  # fmt: skip


def test_output_is_split_at_newlines_and_lines_are_joined_across_reads(tmp_path):
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write("stdout", b"a\nb\nc")
    log.write("stdout", b"d\n")
    log.write("stderr", b"x")
    log.write("stdout", b"e")
    log.flush()  # the stream ended: unfinished lines are written as they are
    assert [(e["stream"], e["log"]) for e in entries(tmp_path / "c.log")] == [
        ("stdout", "a\n"), ("stdout", "b\n"), ("stdout", "cd\n"), ("stdout", "e"),
        ("stderr", "x")]  # fmt: skip


def test_a_partial_line_of_16k_is_flushed_as_its_own_entry():
    done, rest = split_lines(b"", b"x" * (PARTIAL_MAX + 10))
    assert done == [b"x" * PARTIAL_MAX] and rest == b"x" * 10
    done, rest = split_lines(b"", b"y" * (2 * PARTIAL_MAX + 5) + b"\n")
    assert [len(d) for d in done] == [PARTIAL_MAX, PARTIAL_MAX, 6] and rest == b""
    assert split_lines(b"", b"z" * (PARTIAL_MAX - 1)) == ([], b"z" * (PARTIAL_MAX - 1))


def test_partial_entries_do_not_cut_a_character_in_two():
    data = b"a" * (PARTIAL_MAX - 1) + "é".encode() + b"b"
    done, rest = split_lines(b"", data)
    assert done == [b"a" * (PARTIAL_MAX - 1)]
    assert rest == "éb".encode()


def test_bytes_that_are_not_utf8_become_replacement_characters(tmp_path):
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write("stdout", b"\xff ok \xe2\x82\xac\n")
    log.close()
    assert entries(tmp_path / "c.log")[0]["log"] == "\ufffd ok \u20ac\n"


def test_rotation_keeps_max_files_in_all(tmp_path):
    path = str(tmp_path / "c.log")
    line_size = len(logfile.encode_entry(b"0123456789\n", "stdout", fixed_clock()))
    log = JsonFileLog(path, max_size=3 * line_size, max_files=3, clock=fixed_clock)
    for i in range(20):
        log.write("stdout", f"{i:010d}\n".encode())
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["c.log", "c.log.1", "c.log.2"]
    for name in ("c.log", "c.log.1", "c.log.2"):
        assert os.path.getsize(tmp_path / name) <= 3 * line_size
    numbers = [int(e["log"]) for name in ("c.log.2", "c.log.1", "c.log")
               for e in entries(tmp_path / name)]  # fmt: skip
    assert numbers == list(range(12, 20))  # the newest, in order, nothing lost in between


def test_rotation_happens_within_one_read_of_many_lines(tmp_path):
    path = str(tmp_path / "c.log")
    line_size = len(logfile.encode_entry(b"x\n", "stdout", fixed_clock()))
    log = JsonFileLog(path, max_size=2 * line_size, max_files=2, clock=fixed_clock)
    log.write("stdout", b"x\n" * 5)
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["c.log", "c.log.1"]
    assert len(entries(tmp_path / "c.log")) == 1 and len(entries(tmp_path / "c.log.1")) == 2


def test_max_file_one_truncates_and_size_zero_never_rotates(tmp_path):
    path = str(tmp_path / "one.log")
    log = JsonFileLog(path, max_size=200, max_files=1)
    for _ in range(10):
        log.write("stdout", b"a line of some length\n")
    log.close()
    assert os.listdir(tmp_path) == ["one.log"] and os.path.getsize(path) <= 200
    path = str(tmp_path / "all.log")
    log = JsonFileLog(path, max_size=0)
    for _ in range(100):
        log.write("stdout", b"a line of some length\n")
    log.close()
    assert len(entries(path)) == 100


def test_an_entry_bigger_than_max_size_is_still_written(tmp_path):
    path = str(tmp_path / "c.log")
    log = JsonFileLog(path, max_size=10, max_files=2)
    log.write("stdout", b"longer than ten bytes\n")
    log.write("stdout", b"again\n")
    log.close()
    assert entries(tmp_path / "c.log.1")[0]["log"] == "longer than ten bytes\n"
    assert entries(tmp_path / "c.log")[0]["log"] == "again\n"


def test_a_new_log_continues_an_existing_file(tmp_path):
    path = str(tmp_path / "c.log")
    JsonFileLog(path).write("stdout", b"first\n")
    log = JsonFileLog(path)
    assert log.size == os.path.getsize(path)
    log.write("stdout", b"second\n")
    assert [e["log"] for e in entries(path)] == ["first\n", "second\n"]


@pytest.mark.parametrize("ns, text", [
    (1714564800_123456789, "2024-05-01T12:00:00.123456789Z"),
    (1714564800_120000000, "2024-05-01T12:00:00.12Z"),
    (1714564800_000000000, "2024-05-01T12:00:00Z"),
    (1714564800_000000001, "2024-05-01T12:00:00.000000001Z"),
])  # fmt: skip
def test_times_are_rfc3339nano_as_go_prints_them(ns, text):
    assert rfc3339nano(ns) == text
