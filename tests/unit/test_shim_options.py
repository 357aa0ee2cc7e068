"""capsa-shim's command line: flags, defaults, and what is refused before anything starts."""

import os
import subprocess
import sys

import pytest

from capsa.errors import InvalidArgument
from capsa.shim.options import parse_args, parse_duration, parse_signal, parse_size

RUNTIME = sys.executable  # any executable file will do


def base(*extra) -> list[str]:
    return ["--id", "c1", "--bundle", "/b", "--state-dir", "/run/s", "--runtime", RUNTIME,
            "--log-path", "/var/log/c1.log", *extra]  # fmt: skip


def test_defaults():
    opts = parse_args(base())
    assert (opts.id, opts.bundle, opts.state_dir, opts.runtime) == ("c1", "/b", "/run/s", RUNTIME)
    assert opts.runtime_root is None and opts.runtime_args == []
    assert (opts.log_max_size, opts.log_max_files) == (10 << 20, 3)
    assert not opts.tty and not opts.stdin and opts.health is None
    assert str(opts.restart) == "no"
    assert opts.stop_signal == 15 and not opts.stop_signal_given
    assert opts.path("shim.sock") == "/run/s/shim.sock"


def test_every_flag():
    opts = parse_args(base(
        "--runtime-root", "/run/rt", "--runtime-arg", "--systemd-cgroup", "--runtime-arg=--debug",
        "--log-max-size", "1m", "--log-max-file=5", "--tty", "--stdin",
        "--restart", "on-failure:4", "--health-cmd", '["/bin/sh","-c","true"]',
        "--health-interval", "500ms", "--health-timeout", "2", "--health-retries", "0",
        "--health-start-period", "1m", "--stop-signal", "SIGQUIT"))  # fmt: skip
    assert opts.runtime_root == "/run/rt" and opts.runtime_args == ["--systemd-cgroup", "--debug"]
    assert (opts.log_max_size, opts.log_max_files, opts.tty, opts.stdin) == (1 << 20, 5, True, True)
    assert str(opts.restart) == "on-failure:4"
    check = opts.health
    assert check.argv == ["/bin/sh", "-c", "true"]
    assert (check.interval, check.timeout, check.retries, check.start_period) == (0.5, 2, 3, 60)
    assert opts.stop_signal == 3 and opts.stop_signal_given


def test_help_asks_for_nothing_else():
    assert parse_args(["--help"]) is None


@pytest.mark.parametrize("argv, message", [
    (base("--bogus"), "unknown flag '--bogus'"),
    (base("extra"), "unknown flag 'extra'"),
    (base("--tty=1"), "takes no value"),
    (base("--restart"), "needs a value"),
    (["--id", "c1"], "missing --bundle"),
    (base("--bundle", "relative"), "must be an absolute path"),
    (base("--id", "../x"), "invalid container id"),
    (base("--runtime", "/nonexistent/runc"), "is not an executable"),
    (base("--runtime", "/"), "is not an executable"),
    (base("--restart", "sometimes"), "invalid restart policy"),
    (base("--log-max-size", "-1"), "invalid value"),
    (base("--log-max-file", "0"), "invalid value"),
    (base("--stop-signal", "SIGNOPE"), "unknown signal"),
    (base("--health-cmd", "true"), "JSON array"),
    (base("--health-cmd", "[]"), "non-empty JSON array"),
    (base("--health-cmd", '["x"]', "--health-interval", "0"), "invalid value"),
    (base("--health-cmd", '["x"]', "--health-timeout", "soon"), "invalid value"),
])  # fmt: skip
def test_bad_command_lines_are_refused(argv, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_args(argv)


@pytest.mark.parametrize("text, seconds", [
    ("30", 30), ("1.5", 1.5), ("250ms", 0.25), ("2s", 2), ("1m", 60), ("1h", 3600), ("0", 0),
])  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "s", "-1", "1d", "nan", "inf", "1e999"])
def test_bad_durations(text):
    with pytest.raises(InvalidArgument):
        parse_duration(text, "x")


def test_sizes_and_signals():
    assert [parse_size(t, "x") for t in ("0", "100", "2k", "10m", "1g", "3MB")] == \
        [0, 100, 2048, 10 << 20, 1 << 30, 3 << 20]  # fmt: skip
    assert [parse_signal(s) for s in ("9", "KILL", "sigterm", "SIGUSR2")] == [9, 9, 15, 12]
    for bad in ("0", "65", "SIG_IGN", "NSIG", ""):
        with pytest.raises(InvalidArgument):
            parse_signal(bad)


def test_a_bad_command_line_is_one_json_error_line():
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    code = "import sys; from capsa.shim.main import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, "--id", "x"], capture_output=True,
                            text=True, env={"PYTHONPATH": src}, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == '{"error": "missing --bundle"}\n' and result.stderr == ""


@pytest.mark.parametrize("modules", ["capsa.shim.main, capsa.shim.service, capsa.shim.health",
                                     "capsa.shim.execs",
                                     "capsa.linux.tty, capsa.linux.fdpass"])  # a tty's shim: fmt: skip
def test_the_shim_imports_only_the_lean_path(modules):
    """capsa-shim is on `capsa run`'s start-up path: no json, re, enum, socket,
    subprocess, typing, ctypes or argparse (see capsa.fastjson for the reason);
    and every running container keeps one: no os, heapq or runtime (see
    capsa.shim)."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    code = (f"import sys; sys.path.insert(0, {src!r}); before = set(sys.modules);"
            f" import {modules};"
            " print(' '.join(sorted(set(sys.modules) - before)))")  # fmt: skip
    loaded = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                                text=True, check=True).stdout.split())  # fmt: skip
    heavy = {"json", "re", "enum", "socket", "subprocess", "typing", "ctypes", "argparse",
             "selectors", "threading", "asyncio", "dataclasses", "logging",
             "os", "_collections_abc", "heapq", "struct", "capsa.runtime.cli",
             "capsa.runtime.state", "capsa.runtime.container"}  # fmt: skip
    assert not loaded & heavy
    assert all(m.split(".")[0] in sys.stdlib_module_names or m.startswith("capsa")
               for m in loaded)  # fmt: skip
    if "main" in modules:
        assert "capsa.shim.execs" not in loaded  # loaded at the first exec: an idle shim stays lean
    capsa = {m for m in loaded if m.startswith("capsa.")}
    assert all(m.startswith(("capsa.shim", "capsa.linux", "capsa.runtime", "capsa.fastjson",
                             "capsa.errors", "capsa.atomicfile")) for m in capsa)  # fmt: skip
