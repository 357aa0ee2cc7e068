"""Errors are answers: bad input to capsa-runtime fails with one line and changes nothing.

Each case checks the exit code, that stderr is a single line (no traceback),
that no state directory is left under --root, and (through the autouse
leak check) that no cgroup, mount, namespace or process is left on the host.
"""

import json
import os
import re
import subprocess
import time

import pytest


def assert_fails(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit, exactly one line on stderr naming the fragments; returns it."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0, f"succeeded: {result.args}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def create(runtime, bundle, container_id: str, *flags, check=False):
    """`create`, its output in files (the fixture's runtime never uses pipes:
    a container that was wrongly created would hold them open)."""
    return runtime("create", "--bundle", str(bundle), *flags, container_id, check=check,
                   stdin=subprocess.DEVNULL)  # fmt: skip


def running(runtime, bundle, container_id: str = "c1") -> int:
    """A started `sleep 30` container; returns its init pid."""
    bundle.args("sleep", "30")
    create(runtime, bundle, container_id, check=True)
    runtime("start", container_id)
    state = runtime.state(container_id)
    assert state["status"] == "running"
    return state["pid"]


def wait_stopped(runtime, container_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while runtime.state(container_id)["status"] != "stopped":
        assert time.monotonic() < deadline, f"{container_id} did not stop"
        time.sleep(0.01)


# --- arguments, flags and commands -------------------------------------------------


@pytest.mark.parametrize("command", ["create", "start", "run", "state", "kill", "delete"])
def test_a_missing_id_is_an_error(runtime, bundle, command):
    assert_fails(runtime(command, check=False, cwd=str(bundle), stdin=subprocess.DEVNULL))
    assert runtime.ids() == []


@pytest.mark.parametrize("args", [["state", "a", "b"], ["start", "a", "b"],
                                  ["delete", "a", "b"], ["kill", "a", "KILL", "b"],
                                  ["list", "extra"], ["spec", "extra"]])  # fmt: skip
def test_too_many_arguments_is_an_error(runtime, tmp_path, args):
    assert_fails(runtime(*args, check=False, cwd=tmp_path))
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("command", ["state", "start", "kill", "delete"])
def test_an_unknown_id_is_an_error(runtime, command):
    assert_fails(runtime(command, "nope", check=False), "nope")
    assert runtime.ids() == []


@pytest.mark.parametrize("container_id", ["../escape", "a/b", "..", ".", "a b", "ü", "a\nb"])
def test_an_invalid_id_is_refused(runtime, bundle, tmp_path, container_id):
    bundle.args("true")
    assert_fails(create(runtime, bundle, container_id))
    assert runtime.ids() == []
    assert not (tmp_path / "escape").exists()


def test_state_of_an_invalid_id_is_refused(runtime):
    assert_fails(runtime("state", "../..", check=False))


@pytest.mark.parametrize("args", [["--bogus", "list"], ["list", "--bogus"],
                                  ["create", "--bogus", "c1"], ["kill", "-x", "c1"],
                                  ["delete", "--forced", "c1"], ["create", "--bundle"],
                                  ["--root"]])  # fmt: skip
def test_a_bad_flag_is_an_error(runtime, bundle, args):
    bundle.args("true")
    assert_fails(runtime(*args, check=False, cwd=str(bundle), stdin=subprocess.DEVNULL))
    assert runtime.ids() == []


@pytest.mark.parametrize("value", ["abc", "-1", ""])
def test_a_bad_preserve_fds_is_an_error(runtime, bundle, value):
    bundle.args("true")
    assert_fails(create(runtime, bundle, "c1", "--preserve-fds", value), "preserve-fds")
    assert runtime.ids() == []


def test_an_unknown_command_is_an_error(runtime):
    assert_fails(runtime("frobnicate", "c1", check=False), "frobnicate")


def test_an_unknown_list_format_is_an_error(runtime):
    assert_fails(runtime("list", "--format", "yaml", check=False), "yaml")


def test_an_unknown_log_format_is_an_error(runtime):
    assert_fails(runtime("--log-format", "xml", "list", check=False), "xml")


# --- signals -----------------------------------------------------------------------


@pytest.mark.parametrize("signame", ["FOO", "SIGFOO", "99", "65", "-9", "SIG", "SIG_IGN",
                                     "RTMIN+99", "9x", ""])  # fmt: skip
def test_an_unknown_signal_is_an_error_and_sends_nothing(runtime, bundle, signame):
    pid = running(runtime, bundle)
    args = ["kill", "c1", signame] if not signame.startswith("-") else \
        ["kill", "c1", "--", signame]  # fmt: skip
    assert_fails(runtime(*args, check=False))
    assert runtime.state("c1") == {**runtime.state("c1"), "status": "running", "pid": pid}


def test_signal_zero_checks_the_container_is_alive(runtime, bundle):
    """As kill(2) and runc: 0 sends nothing, and fails once the init is gone."""
    running(runtime, bundle)
    runtime("kill", "c1", "0")
    assert runtime.state("c1")["status"] == "running"
    runtime("kill", "c1", "KILL")
    wait_stopped(runtime, "c1")
    assert_fails(runtime("kill", "c1", "0", check=False))


# --- duplicate ids -----------------------------------------------------------------


def test_a_duplicate_id_fails_and_leaves_the_first_alone(runtime, bundle, tmp_path):
    bundle.args("sleep", "30")
    create(runtime, bundle, "c1", check=True)
    first = runtime.state("c1")
    state_json = os.path.join(runtime.root, "c1", "state.json")
    with open(state_json, "rb") as f:
        saved = f.read()
    pid_file = tmp_path / "second.pid"
    assert_fails(create(runtime, bundle, "c1", "--pid-file", str(pid_file)), "c1")
    assert not pid_file.exists()
    assert runtime.state("c1") == first
    with open(state_json, "rb") as f:
        assert f.read() == saved
    runtime("start", "c1")
    assert runtime.state("c1")["status"] == "running"


def test_a_duplicate_id_of_a_running_container(runtime, bundle):
    pid = running(runtime, bundle)
    assert_fails(create(runtime, bundle, "c1"))
    assert_fails(runtime("run", "--bundle", str(bundle), "c1", check=False,
                         stdin=subprocess.DEVNULL))  # fmt: skip
    assert runtime.state("c1")["pid"] == pid
    assert runtime.state("c1")["status"] == "running"


# --- broken bundles ----------------------------------------------------------------


def _invalid_json(bundle):
    (bundle.path / "config.json").write_text('{"ociVersion": "1.2.0", "process": ')


def _not_an_object(bundle):
    (bundle.path / "config.json").write_text("[]")


def _no_config(bundle):
    (bundle.path / "config.json").unlink()


def _drop(key):
    def edit(bundle):
        del bundle.config[key]
        bundle.write()

    edit.__name__ = f"_no_{key}"
    return edit


def _edit(fn):
    def edit(bundle):
        fn(bundle.config)
        bundle.write()

    return edit


BROKEN = {
    "invalid json": (_invalid_json, "config.json"),
    "not an object": (_not_an_object, "config.json"),
    "no config.json": (_no_config, "config.json"),
    "no process": (_drop("process"), "process"),
    "no root": (_drop("root"), "root"),
    "no args": (_edit(lambda c: c["process"].update(args=[])), "args"),
    "unknown namespace": (_edit(lambda c: c["linux"]["namespaces"].append({"type": "bogus"})),
                          "bogus"),
    "duplicate namespace": (_edit(lambda c: c["linux"]["namespaces"].append({"type": "pid"})),
                            "pid"),
    "unknown capability": (_edit(lambda c: c["process"]["capabilities"]["bounding"].append(
        "CAP_BOGUS")), "CAP_BOGUS"),
    "unknown capability set": (_edit(lambda c: c["process"]["capabilities"].update(
        extra=["CAP_KILL"])), "extra"),
    "unknown rlimit": (_edit(lambda c: c["process"]["rlimits"].append(
        {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1})), "RLIMIT_BOGUS"),
    "relative mount destination": (_edit(lambda c: c["mounts"].append(
        {"destination": "relative", "type": "tmpfs", "source": "tmpfs"})), "relative"),
    "relative cwd": (_edit(lambda c: c["process"].update(cwd="relative")), "cwd"),
    "rootfs missing": (_edit(lambda c: c["root"].update(path="/nonexistent-rootfs")),
                       "/nonexistent-rootfs"),
    "no mount namespace": (_edit(lambda c: c["linux"].update(namespaces=[
        n for n in c["linux"]["namespaces"] if n["type"] != "mount"])), "mount"),
    "terminal without console socket": (_edit(lambda c: c["process"].update(terminal=True)),
                                        "console"),
    "program missing": (_edit(lambda c: c["process"].update(args=["no-such-program"])),
                        "no-such-program"),
    "missing cwd": (_edit(lambda c: c["process"].update(cwd="/no/such/dir")), "/no/such/dir"),
    "namespace path missing": (_edit(lambda c: [n.update(path="/proc/999999999/ns/net")
                                                for n in c["linux"]["namespaces"]
                                                if n["type"] == "network"]),
                               "/proc/999999999/ns/net"),
    "program missing by path": (_edit(lambda c: c["process"].update(args=["/no/such/program"])),
                                "/no/such/program"),
    "program not executable": (_edit(lambda c: c["process"].update(args=["/etc/passwd"])),
                               "/etc/passwd"),
}  # fmt: skip

@pytest.mark.parametrize("case", list(BROKEN))
def test_create_refuses_a_broken_bundle(runtime, bundle, tmp_path, case):
    breaks, fragment = BROKEN[case]
    breaks(bundle)
    pid_file = tmp_path / "pid"
    assert_fails(create(runtime, bundle, "c1", "--pid-file", str(pid_file)), fragment)
    assert runtime.ids() == []
    assert not pid_file.exists()


# `run` relays a terminal itself when given no --console-socket.
@pytest.mark.parametrize("case", [c for c in BROKEN if c != "terminal without console socket"])
def test_run_refuses_a_broken_bundle(runtime, bundle, case):
    breaks, fragment = BROKEN[case]
    breaks(bundle)
    result = runtime("run", "--bundle", str(bundle), "c1", check=False, stdin=subprocess.DEVNULL)
    assert_fails(result, fragment)
    assert runtime.ids() == []


def test_a_broken_bundle_does_not_disturb_other_containers(runtime, bundle, tmp_path):
    pid = running(runtime, bundle)
    _drop("process")(bundle)
    assert_fails(create(runtime, bundle, "c2"))
    assert runtime.ids() == ["c1"]
    assert runtime.state("c1")["pid"] == pid


def test_console_socket_without_terminal_is_an_error(runtime, bundle, tmp_path):
    bundle.args("true")
    assert_fails(create(runtime, bundle, "c1", "--console-socket", str(tmp_path / "s")))
    assert runtime.ids() == []


def test_an_unreachable_console_socket_is_an_error(runtime, bundle, tmp_path):
    bundle.process["terminal"] = True
    bundle.args("true")
    path = str(tmp_path / "nobody-listens")
    assert_fails(create(runtime, bundle, "c1", "--console-socket", path), path)
    assert runtime.ids() == []


def test_an_unwritable_pid_file_undoes_the_create(runtime, bundle, tmp_path):
    bundle.args("sleep", "30")
    path = str(tmp_path / "no" / "such" / "dir" / "pid")
    assert_fails(create(runtime, bundle, "c1", "--pid-file", path))
    assert runtime.ids() == []


def test_start_of_a_stopped_container_is_an_error(runtime, bundle):
    running(runtime, bundle)
    runtime("kill", "c1", "KILL")
    wait_stopped(runtime, "c1")
    assert_fails(runtime("start", "c1", check=False), "c1")
    assert runtime.state("c1")["status"] == "stopped"


# --- --log and --log-format --------------------------------------------------------


TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"


def test_log_json_writes_the_error_as_a_json_line(runtime, bundle, tmp_path):
    log = tmp_path / "log.json"
    _drop("process")(bundle)
    result = runtime("--log", str(log), "--log-format", "json", "create", "--bundle",
                     str(bundle), "c1", check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode != 0
    lines = log.read_text().splitlines()
    entry = json.loads(lines[-1])
    assert set(entry) == {"level", "msg", "time"}
    assert entry["level"] == "error" and "process" in entry["msg"]
    assert re.fullmatch(TIME, entry["time"])
    assert runtime.ids() == []


def test_log_text_writes_the_error_as_logfmt(runtime, tmp_path):
    log = tmp_path / "log.txt"
    result = runtime("--log", str(log), "state", "nope", check=False)
    assert result.returncode != 0
    line = log.read_text().splitlines()[-1]
    match = re.fullmatch(r'time="(?P<time>[^"]+)" level=error msg="(?P<msg>.*)"', line)
    assert match, line
    assert re.fullmatch(TIME, match["time"]) and "nope" in match["msg"]


def test_log_appends_and_success_writes_no_error(runtime, tmp_path):
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"earlier","time":"2020-01-01T00:00:00Z"}\n')
    runtime("--log", str(log), "--log-format", "json", "list")
    assert [json.loads(line)["level"] for line in log.read_text().splitlines()] == ["info"]
    runtime("--log", str(log), "--log-format", "json", "kill", "nope", "KILL", check=False)
    levels = [json.loads(line)["level"] for line in log.read_text().splitlines()]
    assert levels == ["info", "error"]


def test_log_json_escapes_the_message(runtime, tmp_path):
    log = tmp_path / "log.json"
    bundle_dir = tmp_path / 'we"ird\\dir'
    bundle_dir.mkdir()
    runtime("--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle_dir),
            "c1", check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    entry = json.loads(log.read_text().splitlines()[-1])
    assert str(bundle_dir) in entry["msg"]


# --- unreadable state ----------------------------------------------------------------


@pytest.mark.parametrize("content", [b"garbage", b"[1, 2]", b"\xff\xfe{", b""])
def test_an_unreadable_state_is_an_error_not_a_crash(runtime, bundle, content):
    pid = running(runtime, bundle, "c1")
    create(runtime, bundle, "c2", check=True)
    path = os.path.join(runtime.root, "c1", "state.json")
    with open(path, "rb") as f:
        saved = f.read()
    try:
        with open(path, "wb") as f:
            f.write(content)
        for args in (["state", "c1"], ["start", "c1"], ["kill", "c1", "KILL"],
                     ["delete", "c1"]):  # fmt: skip
            assert_fails(runtime(*args, check=False), "c1")
        listed = runtime("list", "-q")
        assert listed.stdout == b"c2\n", "one bad container hid the others"
        assert b"c1" in listed.stderr
    finally:
        with open(path, "wb") as f:
            f.write(saved)
    assert runtime.state("c1")["pid"] == pid
    assert runtime.state("c1")["status"] == "running"
