"""events: stats and oom events as JSON lines, in runc's format."""

import json
import os
import subprocess
import time

import pytest
from running import one_line_error, start, wait_status

RUNC_DATA_KEYS = ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                  "network_interfaces"]  # fmt: skip


def events(runtime, *args, timeout=20) -> subprocess.CompletedProcess:
    return runtime("events", *args, timeout=timeout)


def lines_of(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def limited(bundle, memory=64 << 20, pids=40):
    bundle.linux["resources"].update({"memory": {"limit": memory}, "pids": {"limit": pids}})
    bundle.write()


def test_stats_prints_one_line_as_runc_does(runtime, bundle):
    limited(bundle)
    start(runtime, bundle, "c1", "sh", "-c", "sleep 60 & exec sleep 61")
    result = events(runtime, "--stats", "c1")
    assert result.stdout.count(b"\n") == 1 and b", " not in result.stdout  # compact
    event = json.loads(result.stdout)
    assert list(event) == ["type", "id", "data"]
    assert event["type"] == "stats" and event["id"] == "c1"
    data = event["data"]
    assert list(data) == RUNC_DATA_KEYS
    assert data["pids"] == {"current": 2, "limit": 40}
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert 0 < data["memory"]["usage"]["usage"] < 64 << 20
    assert list(data["memory"]["usage"]) == ["limit", "usage", "max", "failcnt"]
    assert set(data["cpu"]["usage"]) >= {"total", "kernel", "user"}
    assert data["cpu"]["usage"]["total"] > 0
    assert len(data["cpu"]["usage"]["percpu"]) == os.cpu_count()
    assert data["cpu"]["throttling"] == {}  # Go's omitempty: never throttled
    assert data["cpuset"]["cpus"] == list(range(os.cpu_count()))
    raw = data["memory"]["raw"]
    assert list(raw) == sorted(raw) and "total_rss" in raw
    assert data["intel_rdt"] == {} and data["network_interfaces"] is None


def _shape(value):
    """The keys of nested objects (lists: of their first item), without values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_shape(value[0])]
    return type(value).__name__ if value is not None else None


def test_stats_have_the_shape_runc_gives_the_same_container(runtime, bundle, tmp_path):
    """runc 1.1.5 on the same bundle: same fields, in the same order."""
    limited(bundle)
    bundle.args("sleep", "60")
    start(runtime, bundle, "c1")
    runc = ["runc", "--root", str(tmp_path / "runc")]
    subprocess.run(runc + ["run", "-d", "--bundle", str(bundle), "r1"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)  # fmt: skip
    try:
        theirs = json.loads(subprocess.run(runc + ["events", "--stats", "r1"], check=True,
                                           capture_output=True, timeout=30).stdout)
    finally:
        subprocess.run(runc + ["delete", "--force", "r1"], timeout=30)
    ours = json.loads(events(runtime, "--stats", "c1").stdout)
    for event in (ours, theirs):
        event["id"] = "x"
        memory = event["data"]["memory"]
        memory.pop("cache", None)  # omitempty: present only when non-zero
        memory["raw"] = sorted(memory["raw"])
        usage = event["data"]["cpu"]["usage"]
        for key in ("percpu", "percpu_kernel", "percpu_user"):
            usage.pop(key, None)  # omitempty; zero lists are dropped
        event["data"]["blkio"] = {}  # depends on what each container happened to read
        # runc's v1 driver ignores hybrid's cgroup2 hugetlb; capsa reports it.
        event["data"]["hugetlb"] = {}
        for entry in memory.values():
            if isinstance(entry, dict):
                entry.pop("usage", None)
                entry.pop("max", None)
    assert _shape(ours) == _shape(theirs)
    assert list(ours["data"]) == list(theirs["data"])


def test_events_stream_stats_until_the_container_stops(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "1")
    began = time.monotonic()
    result = events(runtime, "--interval", "200ms", "c1")
    elapsed = time.monotonic() - began
    stream = lines_of(result)
    assert elapsed < 5
    assert 2 <= len(stream) <= 6
    assert all(event["type"] == "stats" and event["id"] == "c1" for event in stream)
    assert runtime.state("c1")["status"] == "stopped"


def test_events_report_an_oom_kill(runtime, bundle):
    bundle.linux["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    # The shell's child is OOM-killed; the init lives on a moment, then exits.
    start(runtime, bundle, "c1", "sh", "-c",
          "sleep 0.3; sh -c 'x=$(head -c 67108864 /dev/zero | tr \\\\0 a)'; sleep 0.5")
    began = time.monotonic()
    result = events(runtime, "--interval", "30s", "c1")
    assert time.monotonic() - began < 10  # not held back by the interval
    assert b'{"type":"oom","id":"c1"}\n' in result.stdout
    assert all(event["type"] == "oom" for event in lines_of(result))


def test_events_of_a_paused_container(runtime, bundle):
    start(runtime, bundle, "c1", "sleep", "60")
    runtime("pause", "c1")
    event = json.loads(events(runtime, "--stats", "c1").stdout)
    assert event["data"]["pids"]["current"] == 1


@pytest.mark.parametrize("flags, message", [
    (["--interval", "0"], "greater than 0"),
    (["--interval", "-1s"], "greater than 0"),
    (["--interval", "5"], "missing unit"),
    (["--interval", "1x"], "unknown unit"),
    (["--interval", "soon"], "invalid duration"),
])  # fmt: skip
def test_bad_intervals(runtime, bundle, flags, message):
    start(runtime, bundle, "c1", "sleep", "60")
    assert message in one_line_error(runtime("events", *flags, "c1", check=False))


def test_events_of_stopped_and_unknown_containers(runtime, bundle):
    assert "does not exist" in one_line_error(runtime("events", "nope", check=False))
    assert "does not exist" in one_line_error(runtime("events", "--stats", "nope",
                                                      check=False))  # fmt: skip
    start(runtime, bundle, "c1", "true")
    wait_status(runtime, "c1", "stopped")
    assert "not running" in one_line_error(runtime("events", "c1", check=False))
    assert "not running" in one_line_error(runtime("events", "--stats", "c1", check=False))
