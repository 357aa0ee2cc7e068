"""capsa.engine.options: every flag parser against Docker's behaviour and messages."""

import argparse
import json
import signal

import pytest

from capsa import record
from capsa.engine import options
from capsa.engine.options import Mount, RestartPolicy, Ulimit
from capsa.errors import InvalidArgument, NotFound, Unsupported


def fails(func, *args, message: str, kind=InvalidArgument):
    with pytest.raises(kind) as caught:
        func(*args)
    assert str(caught.value) == message


# -- sizes, CPUs


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("1", 1), ("256b", 256), ("1k", 1024), ("1K", 1024), ("1kb", 1024), ("1KiB", 1024),
    ("256m", 256 << 20), ("256M", 256 << 20), ("1g", 1 << 30), ("1.5g", 3 << 29), ("2t", 2 << 40),
    ("32 m", 32 << 20), ("1p", 1 << 50),
])  # fmt: skip
def test_parse_bytes(text, expected):
    assert options.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "m", "-1", "1x", "1mm", "1.2.3", "1 2m", " 1m", "1e3", "1mib2"])
def test_parse_bytes_refuses(text):
    fails(options.parse_bytes, text, message=f"invalid size: '{text}'")


def test_parse_memory_swap():
    assert options.parse_memory_swap("-1") == -1
    assert options.parse_memory_swap("1g") == 1 << 30
    fails(options.parse_memory_swap, "-2", message="invalid size: '-2'")


@pytest.mark.parametrize("text,expected", [
    ("1.5", (150000, 100000)), ("1", (100000, 100000)), ("0.01", (1000, 100000)), ("2", (200000, 100000)),
    ("3/2", (150000, 100000)), ("0", None), ("0.000000001", (0, 100000)),
])  # fmt: skip
def test_parse_cpus(text, expected):
    assert options.parse_cpus(text, host_cpus=2) == expected


@pytest.mark.parametrize("text,message", [
    ("abc", "failed to parse abc as a rational number"),
    ("", "failed to parse  as a rational number"),
    ("0.0000000001", "value is too precise"),
    ("3", "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
    ("-1", "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
])  # fmt: skip
def test_parse_cpus_refuses(text, message):
    fails(options.parse_cpus, text, 2, message=message)


def test_parse_cpuset():
    assert options.parse_cpuset("0-1", available={0, 1}) == "0-1"
    assert options.parse_cpuset("0,1", available={0, 1, 2}) == "0,1"
    fails(options.parse_cpuset, "0-", {0}, message="invalid value 0- for cpuset cpus: invalid format: 0-")
    fails(options.parse_cpuset, "3-1", {0, 1, 2, 3},
          message="invalid value 3-1 for cpuset cpus: invalid range format: 3-1")  # fmt: skip
    fails(options.parse_cpuset, "0-4", {0, 1, 2, 5},
          message="requested CPUs are not available - requested 0-4, available: 0-2,5")  # fmt: skip


# -- ulimits, restart, signals, durations


@pytest.mark.parametrize("text,expected", [
    ("nofile=1024", Ulimit("nofile", 1024, 1024)),
    ("nofile=1024:2048", Ulimit("nofile", 1024, 2048)),
    ("core=-1", Ulimit("core", -1, -1)),
    ("core=0:infinity", Ulimit("core", 0, -1)),
    ("memlock=infinity", Ulimit("memlock", -1, -1)),
    ("nproc=10:-1", Ulimit("nproc", 10, -1)),
])  # fmt: skip
def test_parse_ulimit(text, expected):
    assert options.parse_ulimit(text) == expected


@pytest.mark.parametrize("text,message", [
    ("nofile", "invalid ulimit argument: nofile"),
    ("as=1", "invalid ulimit type: as"),
    ("files=1", "invalid ulimit type: files"),
    ("nofile=1:2:3", "too many limit value arguments - 1:2:3, can only have up to two, `soft[:hard]`"),
    ("nofile=2048:1024", "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024"),
    ("nofile=-1:1024",
     "ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: 1024"),
    ("nofile=abc", 'strconv.ParseInt: parsing "abc": invalid syntax'),
    ("nofile=1:", 'strconv.ParseInt: parsing "": invalid syntax'),
])  # fmt: skip
def test_parse_ulimit_refuses(text, message):
    fails(options.parse_ulimit, text, message=message)


def test_ulimit_to_rlimit():
    assert Ulimit("nofile", 1024, -1).to_rlimit() == {"type": "RLIMIT_NOFILE", "soft": 1024,
                                                      "hard": 2**64 - 1}  # fmt: skip


@pytest.mark.parametrize("text,expected", [
    ("", RestartPolicy("no", 0)), ("no", RestartPolicy("no", 0)), ("always", RestartPolicy("always", 0)),
    ("unless-stopped", RestartPolicy("unless-stopped", 0)), ("on-failure", RestartPolicy("on-failure", 0)),
    ("on-failure:3", RestartPolicy("on-failure", 3)), ("always:0", RestartPolicy("always", 0)),
])  # fmt: skip
def test_parse_restart(text, expected):
    assert options.parse_restart(text) == expected


@pytest.mark.parametrize("text,message", [
    (":3", "invalid restart policy format: no policy provided before colon"),
    ("on-failure:x", "invalid restart policy format: maximum retry count must be an integer"),
    ("always:3", "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ("no:-1", ("invalid restart policy: maximum retry count can only be used with 'on-failure' "
              "and cannot be negative")),
    ("on-failure:-1", "invalid restart policy: maximum retry count cannot be negative"),
    ("sometimes", ("invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
                  "'on-failure', or 'unless-stopped'")),
])  # fmt: skip
def test_parse_restart_refuses(text, message):
    fails(options.parse_restart, text, message=message)


@pytest.mark.parametrize("text,expected", [
    ("SIGTERM", 15), ("TERM", 15), ("term", 15), ("sigkill", 9), ("15", 15), ("9", 9), ("SIGUSR1", 10),
    ("SIGRTMIN", signal.SIGRTMIN), ("RTMIN+3", signal.SIGRTMIN + 3), ("SIGRTMAX-1", signal.SIGRTMAX - 1),
    ("CLD", 17), ("IOT", 6), ("64", 64),
])  # fmt: skip
def test_parse_signal(text, expected):
    assert options.parse_signal(text) == expected


@pytest.mark.parametrize("text", ["", "0", "65", "-1", "SIGFOO", "SIG", "RTMIN+16", "15s"])
def test_parse_signal_refuses(text):
    fails(options.parse_signal, text, message=f"invalid signal: {text}")


@pytest.mark.parametrize("text,seconds", [
    ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0), ("0", 0.0), ("1h2m3s4ms", 3723.004),
    ("100us", 0.0001), ("100µs", 0.0001), ("10ns", 1e-8), (".5s", 0.5), ("1.s", 1.0), ("-2s", -2.0),
    ("+1m", 60.0),
])  # fmt: skip
def test_parse_duration(text, seconds):
    assert options.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,message", [
    ("", 'time: invalid duration ""'), ("abc", 'time: invalid duration "abc"'),
    ("30", 'time: missing unit in duration "30"'), ("1m30", 'time: missing unit in duration "1m30"'),
    ("30x", 'time: unknown unit "x" in duration "30x"'), (".s", 'time: invalid duration ".s"'),
    ("-", 'time: invalid duration "-"'), ("1S", 'time: unknown unit "S" in duration "1S"'),
])  # fmt: skip
def test_parse_duration_refuses(text, message):
    fails(options.parse_duration, text, message=message)


# -- environment, labels, hostname, security options


def test_parse_env(monkeypatch):
    monkeypatch.setenv("CAPSA_TEST_SET", "from host")
    monkeypatch.delenv("CAPSA_TEST_UNSET", raising=False)
    assert options.parse_env("A=1") == "A=1"
    assert options.parse_env("A=") == "A="
    assert options.parse_env("A=b=c") == "A=b=c"
    assert options.parse_env("CAPSA_TEST_SET") == "CAPSA_TEST_SET=from host"
    assert options.parse_env("CAPSA_TEST_UNSET") == "CAPSA_TEST_UNSET"  # unsets it in the container
    fails(options.parse_env, "=x", message="invalid environment variable: =x")


def test_parse_env_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("NOT_ON_HOST", raising=False)
    path = tmp_path / "env"
    path.write_bytes(b'\xef\xbb\xbfA=1\n# a comment\n\nQUOTED="q"\r\nFROM_HOST\nNOT_ON_HOST\n'
                     b"  LEADING=x \nEMPTY=\n  # indented comment\nA=2")  # fmt: skip
    assert options.parse_env_file(str(path)) == ["A=1", 'QUOTED="q"', "FROM_HOST=h", "LEADING=x ", "EMPTY=", "A=2"]


def test_parse_env_file_keeps_values_as_written(tmp_path):
    path = tmp_path / "env"
    path.write_text("A='single'\nB=\"double\"\nC=with spaces  \nD=a=b\nE=$HOME\n")
    assert options.parse_env_file(str(path)) == ["A='single'", 'B="double"', "C=with spaces  ", "D=a=b", "E=$HOME"]


@pytest.mark.parametrize("content,message", [
    (b"A B=1\n", "variable 'A B' contains whitespaces"),
    (b"A\tB\n", "variable 'A\tB' contains whitespaces"),
    (b"OK=1\n=value\n", "no variable name on line '=value'"),
    (b"OK=1\nA=\xff\n", "invalid utf8 bytes at line 2"),
])  # fmt: skip
def test_parse_env_file_refuses(tmp_path, content, message):
    path = tmp_path / "env"
    path.write_bytes(content)
    fails(options.parse_env_file, str(path), message=f"invalid env file ({path}): {message}")


def test_parse_env_file_missing(tmp_path):
    fails(options.parse_env_file, str(tmp_path / "nope"), kind=NotFound,
          message=f"open {tmp_path / 'nope'}: no such file or directory")  # fmt: skip


def test_parse_label():
    assert options.parse_label("a=b") == ("a", "b")
    assert options.parse_label("a") == ("a", "")
    assert options.parse_label("a=b=c") == ("a", "b=c")
    assert options.parse_label("  a=b ") == ("a", "b ")
    fails(options.parse_label, "=b", message="invalid label '=b': empty name")
    fails(options.parse_label, "a b=c", message="label 'a b' contains whitespaces")


def test_parse_hostname():
    assert options.parse_hostname("web-1.example") == "web-1.example"
    for bad in ("-x", "x-", "a_b", "a" * 65, "a..b"):
        fails(options.parse_hostname, bad, message=f"invalid hostname format: {bad}")


@pytest.mark.parametrize("text,expected", [
    ("no-new-privileges", ("no-new-privileges", "true")), ("no-new-privileges=false", ("no-new-privileges", "false")),
    ("seccomp=unconfined", ("seccomp", "unconfined")), ("seccomp:unconfined", ("seccomp", "unconfined")),
    ("apparmor=unconfined", ("apparmor", "unconfined")), ("systempaths=unconfined", ("systempaths", "unconfined")),
    ("label=disable", ("label", "disable")), ("writable-cgroups=true", ("writable-cgroups", "true")),
])  # fmt: skip
def test_parse_security_opt(text, expected):
    assert options.parse_security_opt(text) == expected


@pytest.mark.parametrize("text,message", [
    ("seccomp", 'invalid --security-opt: "seccomp"'), ("seccomp=", 'invalid --security-opt: "seccomp="'),
    ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("systempaths=confined", 'invalid --security-opt 2: "systempaths=confined"'),
])  # fmt: skip
def test_parse_security_opt_refuses(text, message):
    fails(options.parse_security_opt, text, message=message)


# -- -v


@pytest.mark.parametrize("spec,expected", [
    ("/home:/home", Mount("bind", "/home", "/home", False, ("rprivate",))),
    ("/tmp:/tmp2:ro", Mount("bind", "/tmp", "/tmp2", True, ("rprivate", "rro"))),
    ("/tmp:/tmp3:rw", Mount("bind", "/tmp", "/tmp3", False, ("rprivate",))),
    ("/tmp:/tmp5:ro-non-recursive", Mount("bind", "/tmp", "/tmp5", True, ("rprivate",))),
    ("/tmp:/tmp6:ro-force-recursive,rprivate", Mount("bind", "/tmp", "/tmp6", True, ("rprivate", "rro"))),
    ("/tmp:/tmp7:rro", Mount("bind", "/tmp", "/tmp7", True, ("rprivate", "rro"))),
    ("/h:/c:ro,Z,rshared", Mount("bind", "/h", "/c", True, ("rshared", "rro"))),
    ("/h:/c:slave,ro,Z", Mount("bind", "/h", "/c", True, ("slave", "rro"))),
    ("/h/./x/../y/:/c//d/", Mount("bind", "/h/y", "/c/d", False, ("rprivate",))),
    ("/with space:/a b", Mount("bind", "/with space", "/a b", False, ("rprivate",))),
    ("name:/named1", Mount("volume", "name", "/named1")),
    ("name:/named3:ro", Mount("volume", "name", "/named3", True, ("rro",))),
    ("data:/srv:nocopy", Mount("volume", "data", "/srv", nocopy=True)),
    ("/anonymous", Mount("volume", "", "/anonymous")),
    ("/rw:/ro", Mount("bind", "/rw", "/ro", False, ("rprivate",))),
])  # fmt: skip
def test_parse_volume(spec, expected):
    assert options.parse_volume(spec) == expected


def test_parse_volume_makes_dot_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert options.parse_volume("./data:/data") == Mount("bind", f"{tmp_path}/data", "/data", False, ("rprivate",))


@pytest.mark.parametrize("spec,message", [
    ("", "invalid volume specification: ''"),
    (":", "invalid volume specification: ':'"),
    ("::", "invalid volume specification: '::'"),
    (":::", "invalid volume specification: ':::'"),
    ("/tmp:", "invalid volume specification: '/tmp:'"),
    (":test", "invalid volume specification: ':test'"),
    (":/test", "invalid volume specification: ':/test'"),
    ("/tmp:::", "invalid volume specification: '/tmp:::'"),
    ("/path:rw", "invalid volume specification: '/path:rw'"),
    ("/path:ro", "invalid volume specification: '/path:ro'"),
    ("/path:shared", "invalid volume specification: '/path:shared'"),
    ("/a:/b:c:d", "invalid volume specification: '/a:/b:c:d'"),
    ("/path:/path:sw", "invalid mode: sw"),
    ("/path:/path:rwz", "invalid mode: rwz"),
    ("/path:/path:ro,rshared,rslave", "invalid mode: ro,rshared,rslave"),
    ("/path:/path:ro,rw", "invalid mode: ro,rw"),
    ("./", ("invalid volume specification: './': invalid mount config for type \"volume\": "
           "invalid mount path: './' mount path must be absolute")),
    ("/:path", ("invalid volume specification: '/:path': invalid mount config for type \"bind\": "
               "invalid mount path: 'path' mount path must be absolute")),
    ("/tmp:tmp", ("invalid volume specification: '/tmp:tmp': invalid mount config for type \"bind\": "
                 "invalid mount path: 'tmp' mount path must be absolute")),
    ("/a:/", ("invalid volume specification: '/a:/': invalid mount config for type \"bind\": "
             "invalid specification: destination can't be '/'")),
    ("name:/absolute-path:rshared", ("invalid volume specification: 'name:/absolute-path:rshared': invalid "
                                    "mount config for type \"volume\": field BindOptions must not be specified")),
    ("/a:/b:nocopy", ("invalid volume specification: '/a:/b:nocopy': invalid mount config for type "
                     "\"bind\": field VolumeOptions must not be specified")),
    ("name:/b:rro", "mount mode \"rro\" requires a bind mount: invalid volume specification: 'name:/b:rro'"),
    ("a:/b", ("invalid volume specification: 'a:/b': create a: \"a\" includes invalid characters for a local "
             "volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host "
             "directory, use absolute path")),
])  # fmt: skip
def test_parse_volume_refuses(spec, message):
    fails(options.parse_volume, spec, message=message)


# -- --mount


@pytest.mark.parametrize("spec,expected", [
    ("type=bind,source=/a,target=/b,readonly", Mount("bind", "/a", "/b", True, ("rprivate", "rro"))),
    ("type=bind,src=/a,dst=/b", Mount("bind", "/a", "/b", False, ("rprivate",))),
    ("type=bind,source=/a,destination=/b,ro=true,bind-propagation=rshared",
     Mount("bind", "/a", "/b", True, ("rshared", "rro"))),
    ("type=bind,source=/a,target=/b,bind-nonrecursive", Mount("bind", "/a", "/b", False, ("bind", "rprivate"))),
    ("type=BIND,source=/a,target=/b,readonly=false", Mount("bind", "/a", "/b", False, ("rprivate",))),
    ('"type=bind","source=/a,b",target=/c', Mount("bind", "/a,b", "/c", False, ("rprivate",))),
    ("type=volume,source=data,target=/srv", Mount("volume", "data", "/srv")),
    ("source=data,target=/srv,volume-nocopy", Mount("volume", "data", "/srv", nocopy=True)),
    ("target=/srv", Mount("volume", "", "/srv")),
    ("type=volume,target=/srv,volume-driver=local,volume-label=a=b", Mount("volume", "", "/srv")),
    ("type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1777",
     Mount("tmpfs", "", "/run", False, ("mode=1777", "size=64m"))),
    ("type=tmpfs,dst=/run,tmpfs-size=1000", Mount("tmpfs", "", "/run", False, ("size=1000",))),
    ("type=tmpfs,dst=/run,tmpfs-size=2048,readonly", Mount("tmpfs", "", "/run", True, ("size=2k",))),
])  # fmt: skip
def test_parse_mount(tmp_path, spec, expected):
    """Bind sources must exist: /a and /a,b are made under tmp_path."""
    for name in ("a", "a,b"):
        (tmp_path / name).mkdir()
    spec = spec.replace("=/a", f"={tmp_path}/a")
    if expected.kind == "bind":
        expected = Mount(expected.kind, f"{tmp_path}{expected.source}", *record.astuple(expected)[2:])
    assert options.parse_mount(spec) == expected


def test_parse_mount_needs_an_existing_bind_source(tmp_path):
    fails(options.parse_mount, f"type=bind,source={tmp_path}/nope,target=/b",
          message=f'invalid mount config for type "bind": bind mount source path does not exist: {tmp_path}/nope')


@pytest.mark.parametrize("spec,message", [
    ("type=bind,source=/a", "target is required"),
    ("type=,target=/b", "type is required"),
    ("type=bind,source=/a,target=/b,foo=bar", "unexpected key 'foo' in 'foo=bar'"),
    ("type=bind,source=/a,target=/b,nonsense", "invalid field 'nonsense' must be a key=value pair"),
    ("type=bind,source=/a,target=/b,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=bind,source=/a,target=/b,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
    ("type=volume,target=/b,bind-propagation=shared", "cannot mix 'bind-*' options with mount type 'volume'"),
    ("type=bind,source=/a,target=/b,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'bind'"),
    ("type=tmpfs,target=/b,tmpfs-size=lots", "invalid value for tmpfs-size: lots"),
    ("type=tmpfs,target=/b,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
    ("type=bind,target=/b", 'invalid mount config for type "bind": field Source must not be empty'),
    ("type=bind,source=rel,target=/b",
     "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"),
    ("type=bind,source=/a,target=b",
     "invalid mount config for type \"bind\": invalid mount path: 'b' mount path must be absolute"),
    ("type=bind,source=/a,target=/", ("invalid mount config for type \"bind\": invalid specification: "
                                     "destination can't be '/'")),
    ("type=bind,source=/a,target=/b,bind-propagation=weird",
     'invalid mount config for type "bind": invalid propagation mode: weird'),
    ("type=tmpfs,source=/a,target=/b", 'invalid mount config for type "tmpfs": field Source must not be specified'),
    ("type=volume,target=/b,readonly", ('invalid mount config for type "volume": must not set ReadOnly mode '
                                       "when using anonymous volumes")),
    ("type=npipe,target=/b", 'invalid mount config for type "npipe": mount type unknown'),
])  # fmt: skip
def test_parse_mount_refuses(spec, message):
    fails(options.parse_mount, spec, message=message)


def test_parse_mount_refuses_other_volume_drivers():
    fails(options.parse_mount, "target=/b,volume-driver=nfs", kind=Unsupported,
          message="volume driver nfs is not supported: only local volumes are")  # fmt: skip
    fails(options.parse_mount, "target=/b,volume-opt=type=nfs", kind=Unsupported,
          message="volume-opt is not supported: local volumes take no options")  # fmt: skip


# -- --tmpfs


@pytest.mark.parametrize("spec,expected", [
    ("/run", Mount("tmpfs", "", "/run")),
    ("/run:rw,size=64m,mode=1777", Mount("tmpfs", "", "/run", False, ("size=64m", "mode=1777"))),
    ("/run:ro", Mount("tmpfs", "", "/run", True)),
    ("/run:exec,size=1m,size=2m", Mount("tmpfs", "", "/run", False, ("exec", "size=2m"))),
    ("/run:ro,rw", Mount("tmpfs", "", "/run", False)),
    ("/run/:uid=1000,gid=1000,nr_inodes=10", Mount("tmpfs", "", "/run", False, ("uid=1000", "gid=1000", "nr_inodes=10"))),
])  # fmt: skip
def test_parse_tmpfs(spec, expected):
    assert options.parse_tmpfs(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("run", "invalid mount path: 'run' mount path must be absolute"),
    ("/", "invalid specification: destination can't be '/'"),
    ("/run:bogus", 'invalid tmpfs option "bogus"'),
    ("/run:size=1m,,", 'invalid tmpfs option ""'),
    ("/run:color=red", 'invalid tmpfs option "color=red"'),
])  # fmt: skip
def test_parse_tmpfs_refuses(spec, message):
    fails(options.parse_tmpfs, spec, message=message)


def test_merge_tmpfs_options():
    merged = options.merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", "exec", "size=1m", "shared",
                                          "defaults", "size=2m", "ro"])  # fmt: skip
    assert merged == ["nosuid", "nodev", "exec", "shared", "size=2m", "ro"]


# -- from_flags


def flags(*argv):
    from capsa.cli.run import add_run_flags

    parser = argparse.ArgumentParser(add_help=False)
    add_run_flags(parser, run=True)
    return parser.parse_args(list(argv))


def test_from_flags_defaults():
    run = options.from_flags(flags("busybox"))
    assert run == options.RunOptions(image="busybox")
    json.dumps(record.asdict(run))  # the engine stores it as JSON


def test_from_flags_values(monkeypatch):
    monkeypatch.setenv("FROM_HOST", "h")
    run = options.from_flags(flags(
        "-d", "--rm", "-it", "--name", "web", "-e", "A=1", "-e", "FROM_HOST", "-w", "/srv", "-u", "1000:1000",
        "-v", "/h:/c:ro", "--mount", "type=tmpfs,dst=/t", "--tmpfs", "/run", "-l", "a=b", "--entrypoint", "",
        "-m", "64m", "--memory-swap", "-1", "--cpus", "1.5", "--ulimit", "nofile=10:20", "--restart",
        "on-failure:2", "--stop-signal", "SIGINT", "--health-cmd", "true", "--health-interval", "1m30s",
        "--health-retries", "2", "--log-opt", "max-size=1m", "--log-opt", "compress", "--hostname", "box",
        "--security-opt", "no-new-privileges", "busybox", "sh", "-c", "echo hi"))  # fmt: skip
    assert run.command == ["sh", "-c", "echo hi"] and run.entrypoint == []
    assert run.env == ["A=1", "FROM_HOST=h"] and run.labels == {"a": "b"}
    assert (run.detach, run.rm, run.stdin, run.tty) == (True, True, True, True)
    assert (run.memory, run.memory_swap, run.cpus) == (64 << 20, -1, 1.5)
    assert run.health_interval == 90.0 and run.health_retries == 2 and run.health_timeout is None
    assert run.log_opts == ["max-size=1m", "compress="]
    assert run.volumes == ["/h:/c:ro"] and run.restart == "on-failure:2" and run.stop_signal == "SIGINT"


def test_from_flags_entrypoint():
    assert options.from_flags(flags("--entrypoint", "/bin/sh", "img")).entrypoint == ["/bin/sh"]
    assert options.from_flags(flags("img")).entrypoint is None


@pytest.mark.parametrize("argv,message", [
    (["-v", "/a:", "img"], "invalid volume specification: '/a:'"),
    (["--restart", "always:1", "img"], ("invalid restart policy: maximum retry count can only be used with "
                                       "'on-failure'")),
    (["--stop-signal", "SIGNOPE", "img"], "invalid signal: SIGNOPE"),
    (["--ulimit", "nofile=x", "img"], 'strconv.ParseInt: parsing "x": invalid syntax'),
    (["--health-interval=-1s", "img"], "--health-interval cannot be negative"),
    (["--health-retries", "-1", "img"], "--health-retries cannot be negative"),
    (["--no-healthcheck", "--health-cmd", "true", "img"], "--no-healthcheck conflicts with --health-* options"),
    (["-m", "lots", "img"], "invalid size: 'lots'"),
    (["-l", "=x", "img"], "invalid label '=x': empty name"),
    (["--hostname", "bad_name", "img"], "invalid hostname format: bad_name"),
    (["--security-opt", "seccomp", "img"], 'invalid --security-opt: "seccomp"'),
])  # fmt: skip
def test_from_flags_refuses(argv, message):
    fails(options.from_flags, flags(*argv), message=message)


def test_from_flags_inlines_a_seccomp_file(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW"\n}\n')
    run = options.from_flags(flags("--security-opt", f"seccomp={path}", "img"))
    assert run.security_opt == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']
    fails(options.from_flags, flags("--security-opt", f"seccomp={tmp_path}/nope", "img"),
          message=f"opening seccomp profile ({tmp_path}/nope) failed: no such file or directory")  # fmt: skip
    path.write_text("{nope")
    with pytest.raises(InvalidArgument, match=r"^compacting json for seccomp profile"):
        options.from_flags(flags("--security-opt", f"seccomp={path}", "img"))
