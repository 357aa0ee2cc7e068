"""capsa-runtime's command line without root: flags, signals, ids, `spec`, errors.

Nothing here starts a container; commands that would touch the host run
against a --root in tmp_path and fail before they could.
"""

import json
import os
import re
import signal
from types import SimpleNamespace

import pytest

from capsa.errors import InvalidArgument
from capsa.runtime import cli, spec, state
from capsa.runtime.cli import Flag, main, parse_flags, parse_signal

FLAGS = [
    Flag("bundle", "b", value=True),
    Flag("force", "f"),
    Flag("preserve-fds", value=True, default=0),
    Flag("label", value=True, default=[]),
]


def parse(*argv):
    return parse_flags(list(argv), FLAGS)


# --- flags -------------------------------------------------------------------------


def test_defaults_when_no_flag_is_given():
    opts, args = parse("c1")
    assert opts == {"bundle": None, "force": None, "preserve_fds": 0, "label": []}
    assert args == ["c1"]


@pytest.mark.parametrize("argv", [["--bundle", "/b", "c1"], ["-bundle", "/b", "c1"],
                                  ["--bundle=/b", "c1"], ["-b", "/b", "c1"],
                                  ["-b=/b", "c1"]])  # fmt: skip
def test_a_value_flag_in_every_go_spelling(argv):
    opts, args = parse(*argv)
    assert opts["bundle"] == "/b" and args == ["c1"]


def test_a_value_may_start_with_a_dash_or_be_empty():
    assert parse("--bundle", "-weird", "c1")[0]["bundle"] == "-weird"
    assert parse("--bundle=", "c1")[0]["bundle"] == ""


def test_a_value_keeps_its_equals_signs():
    assert parse("--bundle=a=b", "c1")[0]["bundle"] == "a=b"


@pytest.mark.parametrize("token, expected", [("--force", True), ("-f", True),
                                             ("--force=true", True), ("--force=false", False),
                                             ("--force=0", False),
                                             ("--force=1", True)])  # fmt: skip
def test_boolean_flags(token, expected):
    assert parse(token, "c1")[0]["force"] is expected


def test_flags_stop_at_the_first_argument():
    """As Go's flag package: what follows the id is an argument, even `-9`."""
    opts, args = parse("-f", "c1", "--bundle", "/b")
    assert opts["force"] is True and opts["bundle"] is None
    assert args == ["c1", "--bundle", "/b"]


def test_double_dash_ends_the_flags():
    opts, args = parse("-f", "--", "-c1", "x")
    assert opts["force"] is True and args == ["-c1", "x"]


def test_a_lone_dash_is_an_argument():
    assert parse("-", "x")[1] == ["-", "x"]


def test_a_list_flag_accumulates_without_touching_its_default():
    opts, _ = parse("--label", "a", "--label=b", "c1")
    assert opts["label"] == ["a", "b"]
    assert FLAGS[3].default == []
    assert parse("c1")[0]["label"] == []


@pytest.mark.parametrize("argv, message", [(["--bogus", "c1"], "-bogus"),
                                           (["-x"], "-x"),
                                           (["--bundle"], "-bundle"),
                                           (["-b"], "-b")])  # fmt: skip
def test_unknown_flags_and_missing_values_are_refused(argv, message):
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        parse(*argv)


@pytest.mark.parametrize("value, expected", [(0, 0), ("0", 0), ("3", 3), ("12", 12)])
def test_preserve_fds_counts(value, expected):
    assert cli._count_flag(value, "preserve-fds") == expected


@pytest.mark.parametrize("value", ["", "-1", "x", "1.5", " 3", "1_0", "٣", -1, None])
def test_preserve_fds_refuses_what_is_not_a_count(value):
    with pytest.raises(InvalidArgument, match="preserve-fds"):
        cli._count_flag(value, "preserve-fds")


def test_create_options_are_absolute_and_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts, args = parse_flags(["-b", "bundle", "--preserve-fds", "2", "--no-pivot", "c1"],
                             cli.COMMANDS["create"].flags)  # fmt: skip
    options = cli._create_options(SimpleNamespace(systemd_cgroup=False), opts)
    assert options.bundle == str(tmp_path / "bundle")
    assert options.preserve_fds == 2 and options.no_pivot is True
    assert options.no_new_keyring is None or options.no_new_keyring is False
    assert args == ["c1"]


def test_every_command_of_runc_that_issue_two_names_exists():
    assert set(cli.COMMANDS) >= {"spec", "create", "start", "run", "state", "kill", "delete",
                                 "list"}  # fmt: skip
    flags = {name: {f.name for f in c.flags} for name, c in cli.COMMANDS.items()}
    assert flags["create"] >= {"bundle", "pid-file", "console-socket", "no-pivot",
                               "no-new-keyring", "preserve-fds"}  # fmt: skip
    assert flags["run"] >= flags["create"] | {"detach"}
    assert flags["kill"] == {"all"} and flags["delete"] == {"force"}
    assert flags["list"] == {"format", "quiet"} and flags["spec"] == {"bundle", "rootless"}
    assert {f.name for f in cli.GLOBAL_FLAGS} >= {"root", "log", "log-format", "debug"}


# --- signals -----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["KILL", "SIGKILL", "9", "kill", "sigkill", "SigKill"])
def test_every_spelling_of_sigkill(raw):
    assert parse_signal(raw) == signal.SIGKILL


@pytest.mark.parametrize("raw, expected", [("TERM", signal.SIGTERM), ("HUP", signal.SIGHUP),
                                           ("SIGUSR1", signal.SIGUSR1), ("WINCH", 28),
                                           ("SIGCHLD", signal.SIGCHLD), ("15", 15),
                                           ("64", 64), ("0", 0)])  # fmt: skip
def test_signal_names_and_numbers(raw, expected):
    assert parse_signal(raw) == expected


def test_realtime_signals():
    assert parse_signal("RTMIN") == signal.SIGRTMIN
    assert parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    assert parse_signal("RTMAX-1") == signal.SIGRTMAX - 1
    assert parse_signal("SIGRTMAX") == signal.SIGRTMAX


@pytest.mark.parametrize("raw", ["FOO", "SIGFOO", "65", "99", "-9", "", "SIG", "SIG_IGN",
                                 "SIG_DFL", "SIG_BLOCK", "NSIG", "RTMIN+99", "RTMAX-99",
                                 "RTMIN+", "RTMIN+x", "RTMIN+٣", "9x", "٩", " 9",
                                 "KILL "])  # fmt: skip
def test_unknown_signals_are_refused(raw):
    with pytest.raises(InvalidArgument):
        parse_signal(raw)


# --- container ids -----------------------------------------------------------------


@pytest.mark.parametrize("container_id", ["c1", "a-b_c.d+e", "A" * 200, "-", "..a", "a..b",
                                          "0"])  # fmt: skip
def test_valid_ids(container_id):
    state.check_id(container_id)


@pytest.mark.parametrize("container_id", ["", ".", "..", "a/b", "../x", "/abs", "a b",
                                          "a\nb", "a\0b", "ü", "a:b", "a*"])  # fmt: skip
def test_invalid_ids(container_id):
    with pytest.raises(InvalidArgument):
        state.check_id(container_id)


def test_load_refuses_an_invalid_id_before_touching_the_disk(tmp_path):
    with pytest.raises(InvalidArgument):
        state.load(str(tmp_path), "../escape")


# --- spec --------------------------------------------------------------------------


def test_the_default_spec_validates_and_matches_runc():
    config = spec.default()
    spec.validate(config)
    assert config["process"]["terminal"] is True and config["process"]["args"] == ["sh"]
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert [n["type"] for n in config["linux"]["namespaces"]] == \
        ["pid", "network", "ipc", "uts", "mount"]  # fmt: skip
    caps = config["process"]["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted", "ambient"}
    assert all(v == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"] for v in caps.values())
    assert config["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024,
                                             "soft": 1024}]  # fmt: skip


def test_the_default_spec_is_a_fresh_copy_each_time():
    first = spec.default()
    first["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    first["mounts"].clear()
    first["linux"]["maskedPaths"].clear()
    second = spec.default()
    assert "CAP_SYS_ADMIN" not in second["process"]["capabilities"]["bounding"]
    assert second["mounts"] and second["linux"]["maskedPaths"]
    assert "CAP_SYS_ADMIN" not in second["process"]["capabilities"]["effective"]


def test_the_rootless_spec_maps_the_caller():
    config = spec.default(rootless=True)
    spec.validate(config)
    linux = config["linux"]
    kinds = [n["type"] for n in linux["namespaces"]]
    assert "user" in kinds and "network" not in kinds
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in linux
    sysfs = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert sysfs["type"] == "none" and sysfs["source"] == "/sys" and "rbind" in sysfs["options"]
    devpts = next(m for m in config["mounts"] if m["type"] == "devpts")
    assert "gid=5" not in devpts["options"]
    assert spec.default() != config, "rootless changed the shared default"


def test_cmd_spec_writes_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["spec", "--bundle", str(tmp_path)]) == 0
    written = (tmp_path / "config.json").read_text()
    assert json.loads(written) == spec.default()
    assert oct((tmp_path / "config.json").stat().st_mode & 0o777) == "0o644"
    assert main(["spec", "--bundle", str(tmp_path)]) == 1
    assert (tmp_path / "config.json").read_text() == written
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "config.json" in err


def test_cmd_spec_rootless(tmp_path):
    assert main(["spec", "--rootless", "-b", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == spec.default(rootless=True)


def test_cmd_spec_into_a_missing_directory_fails_cleanly(tmp_path, capsys):
    assert main(["spec", "--bundle", str(tmp_path / "missing")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --- main: usage, errors, logs -----------------------------------------------------


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_version_and_help(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.startswith("capsa-runtime version ")
    code, out, _ = run_main(capsys, "--help")
    assert code == 0 and "create" in out and "--root" in out
    code, out, _ = run_main(capsys)
    assert code == 0 and "usage" in out
    code, out, _ = run_main(capsys, "kill", "--help")
    assert code == 0 and "--all" in out


@pytest.mark.parametrize("argv, fragment", [
    (["frob"], "frob"),
    (["--bogus"], "-bogus"),
    (["state"], "state"),
    (["start"], "start"),
    (["kill"], "kill"),
    (["delete", "a", "b"], "delete"),
    (["list", "x"], "list"),
    (["--log-format", "xml", "list"], "xml"),
    (["list", "--format", "yaml"], "yaml"),
])  # fmt: skip
def test_usage_errors_print_one_line(tmp_path, capsys, argv, fragment):
    code, out, err = run_main(capsys, "--root", str(tmp_path / "root"), *argv)
    assert code != 0 and out == ""
    assert fragment in one_line(err)
    assert not (tmp_path / "root").exists()


def test_an_unknown_signal_fails_before_looking_for_the_container(tmp_path, capsys):
    code, _, err = run_main(capsys, "--root", str(tmp_path), "kill", "nope", "FOO")
    assert code != 0 and "FOO" in one_line(err)


@pytest.mark.parametrize("command", ["state", "start", "kill", "delete"])
def test_an_unknown_container(tmp_path, capsys, command):
    code, _, err = run_main(capsys, "--root", str(tmp_path), command, "nope")
    assert code != 0 and "nope" in one_line(err)


def test_delete_force_of_an_unknown_container_is_quiet(tmp_path, capsys):
    assert run_main(capsys, "--root", str(tmp_path), "delete", "-f", "nope") == (0, "", "")


def test_list_of_a_missing_root(tmp_path, capsys):
    root = str(tmp_path / "none")
    assert run_main(capsys, "--root", root, "list", "-q") == (0, "", "")
    assert run_main(capsys, "--root", root, "list", "--format", "json") == (0, "null\n", "")
    code, out, _ = run_main(capsys, "--root", root, "list")
    assert code == 0 and out.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]


TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"


def test_log_json(tmp_path, capsys):
    log = tmp_path / "log"
    code, _, err = run_main(capsys, "--root", str(tmp_path), "--log", str(log),
                            "--log-format", "json", "state", "nope")  # fmt: skip
    assert code == 1 and "nope" in one_line(err)
    (line,) = log.read_text().splitlines()
    entry = json.loads(line)
    assert list(entry) == ["level", "msg", "time"]
    assert entry["level"] == "error" and "nope" in entry["msg"]
    assert re.fullmatch(TIME, entry["time"])


def test_log_text(tmp_path, capsys):
    log = tmp_path / "log"
    run_main(capsys, "--root", str(tmp_path), "--log", str(log), "delete", 'no"pe')
    (line,) = log.read_text().splitlines()
    match = re.fullmatch(r'time="([^"]+)" level=error msg="(.*)"', line)
    assert match and re.fullmatch(TIME, match[1])
    assert json.loads(f'"{match[2]}"').count('no"pe') == 1


def test_log_file_of_a_usage_error(tmp_path, capsys):
    """containerd reads the last error line of --log, also for a bad command."""
    log = tmp_path / "log"
    code, _, _ = run_main(capsys, "--log", str(log), "--log-format", "json", "frob")
    assert code != 0
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"


def test_debug_shows_a_traceback_for_os_errors(tmp_path, capsys):
    with pytest.raises(OSError):
        main(["--debug", "spec", "--bundle", str(tmp_path / "missing")])
