"""capsa.engine.spec: config.json as Docker makes it, table-driven against
moby's rules, and every result accepted by capsa-runtime's own validator."""

import copy
import json

import pytest

from capsa.engine import spec
from capsa.engine.options import RunOptions, parse_mount, parse_tmpfs, parse_volume
from capsa.engine.users import User
from capsa.errors import InvalidArgument
from capsa.runtime import spec as runtime_spec

ROOT = User(0, 0, (0,), "/root")
IMAGE = {"Entrypoint": None, "Cmd": ["sh"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "",
         "Labels": {"org.example": "image"}}  # fmt: skip
ETC = {"/etc/hosts": "/b/hosts", "/etc/resolv.conf": "/b/resolv.conf", "/etc/hostname": "/b/hostname"}
ALL_BUT_SYS_RESOURCE = [c for c in __import__("capsa.linux.caps", fromlist=["NAMES"]).NAMES
                        if c != "CAP_SYS_RESOURCE"]  # fmt: skip


@pytest.fixture(autouse=True)
def host(monkeypatch):
    """A host like this one: no CAP_SYS_RESOURCE, RLIMIT_NOFILE hard 20000."""
    monkeypatch.setattr(spec, "current_capabilities", lambda: list(ALL_BUT_SYS_RESOURCE))
    limits = {"nofile": 20000, "nproc": -1, "core": -1, "memlock": 8 << 20, "stack": -1}
    monkeypatch.setattr(spec, "host_hard_limit", lambda name: limits.get(name, -1))
    return limits


def build(image=None, user=ROOT, mounts=(), extra_files=None, **option_values) -> dict:
    options = RunOptions(image="img", **option_values)
    config = spec.build_spec(container_id="c" * 64, image_config=IMAGE if image is None else image,
                             rootfs="/b/rootfs", options=options, user=user, mounts=list(mounts),
                             hostname="cccccccccccc", cgroups_path="/capsa/" + "c" * 64,
                             extra_files=ETC if extra_files is None else extra_files)  # fmt: skip
    runtime_spec.validate(copy.deepcopy(config))
    json.dumps(config)
    return config


def mount_of(config: dict, destination: str) -> dict | None:
    return next((m for m in config["mounts"] if m["destination"] == destination), None)


# -- args


@pytest.mark.parametrize("image,entrypoint,command,expected", [
    ({"Cmd": ["sh"]}, None, None, ["sh"]),
    ({"Cmd": ["sh"]}, None, ["echo", "hi"], ["echo", "hi"]),
    ({"Entrypoint": ["/init"], "Cmd": ["--serve"]}, None, None, ["/init", "--serve"]),
    ({"Entrypoint": ["/init"], "Cmd": ["--serve"]}, None, ["--debug"], ["/init", "--debug"]),
    ({"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["/bin/sh"], None, ["/bin/sh"]),  # image Cmd dropped
    ({"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["/bin/sh"], ["-c", "x"], ["/bin/sh", "-c", "x"]),
    ({"Entrypoint": ["/init"], "Cmd": ["--serve"]}, [], ["ls"], ["ls"]),  # --entrypoint ""
    ({"Entrypoint": ["/init"]}, None, None, ["/init"]),
    ({"Entrypoint": ["/a", "b"], "Cmd": None}, None, [], ["/a", "b"]),
    ({}, None, ["true"], ["true"]),
])  # fmt: skip
def test_args(image, entrypoint, command, expected):
    assert build(image, entrypoint=entrypoint, command=command)["process"]["args"] == expected


@pytest.mark.parametrize("image,entrypoint,command", [
    ({}, None, None), ({"Cmd": []}, None, []), ({"Entrypoint": ["/init"], "Cmd": ["x"]}, [], None),
])  # fmt: skip
def test_no_command(image, entrypoint, command):
    with pytest.raises(InvalidArgument, match="^no command specified$"):
        build(image, entrypoint=entrypoint, command=command)


def test_image_config_types_are_checked():
    with pytest.raises(InvalidArgument, match="^invalid image config: Cmd must be a list of strings$"):
        build({"Cmd": "sh"})


# -- environment


@pytest.mark.parametrize("image_env,env,tty,user,expected", [
    ([], [], False, ROOT,
     ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=cccccccccccc", "HOME=/root"]),
    (["PATH=/opt/bin", "LANG=C"], [], True, ROOT,
     ["PATH=/opt/bin", "HOSTNAME=cccccccccccc", "TERM=xterm", "LANG=C", "HOME=/root"]),
    (["A=image", "B=image"], ["B=user", "C=user"], False, User(1000, 1000, (1000,), "/home/app"),
     ["PATH=" + spec.DEFAULT_PATH, "HOSTNAME=cccccccccccc",
      "B=user", "C=user", "A=image", "HOME=/home/app"]),
    (["A=image"], ["A", "HOSTNAME=mine", "TERM=vt100", "HOME=/data"], True, ROOT,
     ["PATH=" + spec.DEFAULT_PATH, "HOSTNAME=mine", "TERM=vt100", "HOME=/data"]),  # a bare "A" unsets A
    ([], ["X=1", "X=2", "Y=a=b"], False, User(5, 5, (5,), "/"),
     ["PATH=" + spec.DEFAULT_PATH, "HOSTNAME=cccccccccccc", "X=2", "Y=a=b", "HOME=/"]),
])  # fmt: skip
def test_env(image_env, env, tty, user, expected):
    config = build({"Cmd": ["sh"], "Env": image_env}, user=user, env=env, tty=tty)
    assert config["process"]["env"] == expected
    assert config["process"]["terminal"] is tty


def test_env_files_come_before_e(tmp_path):
    path = tmp_path / "env"
    path.write_text("A=file\nB=file\n")
    env = build(env_files=[str(path)], env=["B=flag"])["process"]["env"]
    assert env[2:4] == ["A=file", "B=flag"]


# -- cwd and user


@pytest.mark.parametrize("image_dir,workdir,expected", [
    ("", None, "/"), ("/srv", None, "/srv"), ("/srv", "/data/", "/data"), ("/a/../b", None, "/b"),
])  # fmt: skip
def test_cwd(image_dir, workdir, expected):
    assert build({"Cmd": ["sh"], "WorkingDir": image_dir}, workdir=workdir)["process"]["cwd"] == expected


def test_relative_cwd_is_refused():
    with pytest.raises(InvalidArgument, match="^the working directory 'srv' is invalid, it needs to be an absolute path$"):
        build(workdir="srv")


def test_user():
    config = build(user=User(1000, 100, (100, 33, 44), "/home/app"))
    assert config["process"]["user"] == {"uid": 1000, "gid": 100, "additionalGids": [100, 33, 44]}


# -- capabilities


D = list(spec.DEFAULT_CAPABILITIES)


@pytest.mark.parametrize("add,drop,privileged,expected", [
    ([], [], False, D),
    (["NET_ADMIN"], [], False, D + ["CAP_NET_ADMIN"]),
    (["cap_sys_admin", "SYS_PTRACE"], [], False, D + ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]),
    (["CHOWN"], [], False, D),  # already there: no duplicate
    ([], ["NET_RAW", "cap_mknod"], False, [c for c in D if c not in ("CAP_NET_RAW", "CAP_MKNOD")]),
    ([], ["ALL"], False, []),
    (["NET_BIND_SERVICE"], ["ALL"], False, ["CAP_NET_BIND_SERVICE"]),
    (["ALL"], [], False, ALL_BUT_SYS_RESOURCE),
    (["ALL"], ["NET_ADMIN", "SYS_ADMIN"], False,
     [c for c in ALL_BUT_SYS_RESOURCE if c not in ("CAP_NET_ADMIN", "CAP_SYS_ADMIN")]),
    (["ALL"], ["ALL"], False, ALL_BUT_SYS_RESOURCE),  # an add wins over the same drop
    (["KILL"], ["KILL"], False, D),
    (["NET_ADMIN"], ["NET_ADMIN", "KILL"], False, [c for c in D if c != "CAP_KILL"] + ["CAP_NET_ADMIN"]),
    ([], [], True, ALL_BUT_SYS_RESOURCE),
    ([], ["ALL"], True, ALL_BUT_SYS_RESOURCE),
])  # fmt: skip
def test_capabilities(add, drop, privileged, expected):
    caps = build(cap_add=add, cap_drop=drop, privileged=privileged)["process"]["capabilities"]
    assert caps["bounding"] == expected
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert caps["inheritable"] == [] and caps["ambient"] == []


@pytest.mark.parametrize("add,drop,message", [
    (["FOO"], [], 'unknown capability: "CAP_FOO"'),
    ([], ["CAP_BAR"], 'unknown capability: "CAP_BAR"'),
    (["SYS_RESOURCE"], [], ('capability not supported by your kernel or not available in the current '
                           'environment: "CAP_SYS_RESOURCE"')),
])  # fmt: skip
def test_capabilities_refused(add, drop, message):
    with pytest.raises(InvalidArgument) as caught:
        build(cap_add=add, cap_drop=drop)
    assert str(caught.value) == message


# -- rlimits


def test_default_nofile_is_the_hosts_hard_limit_when_lower(host):
    assert build()["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000}]
    host["nofile"] = 4 << 20
    assert build()["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 1 << 20, "hard": 1 << 20}]
    host["nofile"] = -1
    assert build()["process"]["rlimits"][0]["hard"] <= 1 << 20


def test_ulimits(host):
    rlimits = build(ulimits=["nofile=1024:2048", "core=-1", "memlock=65536", "nproc=100:200"])["process"]["rlimits"]
    assert rlimits == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
                       {"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1},
                       {"type": "RLIMIT_MEMLOCK", "soft": 65536, "hard": 65536},
                       {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200}]  # fmt: skip


@pytest.mark.parametrize("ulimit,message", [
    ("nofile=1024:30000", ("ulimit nofile: hard limit 30000 is above this host's 20000, which only "
                          "CAP_SYS_RESOURCE may raise")),
    ("nofile=-1", ("ulimit nofile: hard limit unlimited is above this host's 20000, which only "
                  "CAP_SYS_RESOURCE may raise")),
    ("memlock=infinity", ("ulimit memlock: hard limit unlimited is above this host's 8388608, which only "
                         "CAP_SYS_RESOURCE may raise")),
])  # fmt: skip
def test_ulimits_above_the_host_are_refused(ulimit, message):
    with pytest.raises(InvalidArgument) as caught:
        build(ulimits=[ulimit])
    assert str(caught.value) == message


def test_ulimits_above_the_host_with_cap_sys_resource(monkeypatch):
    monkeypatch.setattr(spec, "current_capabilities", lambda: ALL_BUT_SYS_RESOURCE + ["CAP_SYS_RESOURCE"])
    assert build(ulimits=["nofile=30000"])["process"]["rlimits"][0]["hard"] == 30000


@pytest.mark.parametrize("ulimits", [[], ["nofile=100"], ["nproc=-1", "stack=8192:-1"]])
def test_rlimits_never_above_the_hosts_hard_limit(host, ulimits):
    for rlimit in build(ulimits=ulimits)["process"]["rlimits"]:
        name = rlimit["type"].removeprefix("RLIMIT_").lower()
        if host.get(name, -1) >= 0:
            assert rlimit["hard"] <= host[name]


# -- mounts


def test_default_mounts():
    config = build(extra_files={})
    assert [m["destination"] for m in config["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    assert mount_of(config, "/dev/shm")["options"] == ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]
    assert "ro" in mount_of(config, "/sys")["options"] and "ro" in mount_of(config, "/sys/fs/cgroup")["options"]
    assert config["root"] == {"path": "/b/rootfs", "readonly": False}


def test_user_mounts():
    mounts = [parse_volume("/srv/data:/data:ro"), parse_tmpfs("/run:size=64m,exec"),
              parse_mount("type=bind,source=/etc,target=/data/sub,bind-nonrecursive,bind-propagation=rslave"),
              parse_volume("/var/lib/capsa/volumes/v/_data:/var/lib/app")]  # fmt: skip
    config = build(mounts=mounts)
    assert mount_of(config, "/data") == {"destination": "/data", "type": "bind", "source": "/srv/data",
                                         "options": ["rbind", "ro", "rprivate", "rro"]}  # fmt: skip
    assert mount_of(config, "/run") == {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                                        "options": ["nosuid", "nodev", "rprivate", "size=64m", "exec"]}  # fmt: skip
    assert mount_of(config, "/data/sub")["options"] == ["bind", "rslave"]
    assert mount_of(config, "/etc/hosts") == {"destination": "/etc/hosts", "type": "bind", "source": "/b/hosts",
                                              "options": ["rbind", "rprivate"]}  # fmt: skip
    user = [m["destination"] for m in config["mounts"][7:]]
    assert user.index("/data") < user.index("/data/sub")  # parents first
    assert [len(d.strip("/").split("/")) for d in user] == sorted(len(d.strip("/").split("/")) for d in user)


def test_user_mounts_override_defaults():
    config = build(mounts=[parse_tmpfs("/dev/shm:size=1g"), parse_volume("/h/hosts:/etc/hosts:ro")])
    assert [m["destination"] for m in config["mounts"]].count("/dev/shm") == 1
    assert mount_of(config, "/dev/shm")["options"] == ["noexec", "nosuid", "nodev", "rprivate", "size=1g"]
    assert mount_of(config, "/etc/hosts")["source"] == "/h/hosts"


def test_a_user_dev_replaces_every_dev_mount():
    config = build(mounts=[parse_volume("/hostdev:/dev")])
    assert [m["destination"] for m in config["mounts"] if m["destination"].startswith("/dev")] == ["/dev"]


def test_duplicate_mount_points_are_refused():
    with pytest.raises(InvalidArgument, match="^duplicate mount point: /data$"):
        build(mounts=[parse_volume("/a:/data"), parse_tmpfs("/data")])


def test_unresolved_volumes_are_refused():
    with pytest.raises(InvalidArgument, match="is not a host path"):
        build(mounts=[parse_volume("named:/data")])


def test_read_only():
    config = build(read_only=True, mounts=[parse_volume("/a:/data")])
    assert config["root"]["readonly"] is True
    for destination in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
        assert "ro" not in mount_of(config, destination)["options"], destination
    assert "ro" in mount_of(config, "/sys")["options"]
    assert mount_of(config, "/data")["options"] == ["rbind", "rprivate"]  # a user mount stays as asked
    assert mount_of(config, "/etc/resolv.conf")["options"] == ["rbind", "ro", "rprivate"]


# -- confinement


def test_masked_and_readonly_paths():
    linux = build()["linux"]
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/scsi",
                 "/sys/firmware", "/proc/acpi", "/proc/asound", "/proc/latency_stats", "/proc/timer_stats",
                 "/sys/devices/virtual/powercap", "/proc/interrupts"):  # fmt: skip
        assert path in linux["maskedPaths"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert "maskedPaths" not in build(security_opt=["systempaths=unconfined"])["linux"]


def test_privileged():
    config = build(privileged=True)
    linux = config["linux"]
    assert "seccomp" not in linux and "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "ro" not in mount_of(config, "/sys")["options"]
    assert "ro" not in mount_of(config, "/sys/fs/cgroup")["options"]
    assert all(d["type"] in ("c", "b") and d["path"].startswith("/dev/") for d in linux["devices"])
    assert not any(d["path"].startswith(("/dev/pts/", "/dev/shm/")) for d in linux["devices"])


def test_writable_cgroups():
    assert "ro" not in mount_of(build(security_opt=["writable-cgroups=true"]), "/sys/fs/cgroup")["options"]


def test_device_rules():
    devices = build()["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    assert [(d["major"], d["minor"]) for d in devices[1:] if d["allow"]] == [(1, 5), (1, 3), (1, 9), (1, 8),
                                                                            (5, 0), (5, 1)]  # fmt: skip
    assert devices[-1] == {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"}


def test_seccomp_follows_the_capabilities():
    default = build()["linux"]["seccomp"]
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    assert not any("mount" in rule["names"] for rule in default["syscalls"])
    admin = build(cap_add=["SYS_ADMIN"])["linux"]["seccomp"]
    assert any("mount" in rule["names"] for rule in admin["syscalls"])
    dropped = build(cap_drop=["SYS_CHROOT"])["linux"]["seccomp"]
    assert not any("chroot" in rule["names"] for rule in dropped["syscalls"])


def test_seccomp_choices(tmp_path):
    assert "seccomp" not in build(security_opt=["seccomp=unconfined"])["linux"]
    assert build(security_opt=["seccomp=builtin"])["linux"]["seccomp"] == build()["linux"]["seccomp"]
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}
    inline = build(security_opt=["seccomp=" + json.dumps(profile)])["linux"]["seccomp"]
    assert inline == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    assert build(security_opt=[f"seccomp={path}"])["linux"]["seccomp"] == inline
    assert build(security_opt=["seccomp={}"])["linux"].get("seccomp") is None
    with pytest.raises(InvalidArgument, match="^decoding seccomp profile failed"):
        build(security_opt=["seccomp={nope"])


def test_no_new_privileges():
    assert build()["process"]["noNewPrivileges"] is False
    assert build(security_opt=["no-new-privileges"])["process"]["noNewPrivileges"] is True
    assert build(security_opt=["no-new-privileges=false"])["process"]["noNewPrivileges"] is False


# -- resources, namespaces, the rest


def test_resources():
    resources = build(memory=256 << 20, cpus=1.5, cpu_shares=512, pids_limit=100)["linux"]["resources"]
    assert resources["memory"] == {"limit": 256 << 20, "swap": 512 << 20}  # swap defaults to the same again
    assert resources["cpu"] == {"quota": 150000, "period": 100000, "shares": 512}
    assert resources["pids"] == {"limit": 100}
    assert build(memory=64 << 20, memory_swap=-1)["linux"]["resources"]["memory"] == {"limit": 64 << 20, "swap": -1}
    assert build(memory=64 << 20, memory_swap=100 << 20)["linux"]["resources"]["memory"]["swap"] == 100 << 20
    assert build(pids_limit=0)["linux"]["resources"]["pids"] == {"limit": -1}
    assert build(cpu_shares=1)["linux"]["resources"]["cpu"] == {"shares": 2}
    assert build(cpu_shares=-5)["linux"]["resources"]["cpu"] == {"shares": 2}
    assert build(cpu_shares=1 << 20)["linux"]["resources"]["cpu"] == {"shares": 262144}
    assert build(cpuset_cpus="0")["linux"]["resources"]["cpu"] == {"cpus": "0"}
    assert set(build()["linux"]["resources"]) == {"devices"}


@pytest.mark.parametrize("values,message", [
    ({"memory": 4 << 20}, "minimum memory limit allowed is 6MB"),
    ({"memory_swap": 1 << 30}, "you should always set the memory limit when using memoryswap limit, see usage"),
    ({"memory": 1 << 30, "memory_swap": 512 << 20},
     "minimum memoryswap limit should be larger than memory limit, see usage"),
])  # fmt: skip
def test_resources_refused(values, message):
    with pytest.raises(InvalidArgument) as caught:
        build(**values)
    assert str(caught.value) == message


def test_namespaces():
    options = RunOptions(image="img", command=["sh"])

    def spaces(**kwargs):
        config = spec.build_spec(container_id="c", image_config={}, rootfs="/r", options=options, user=ROOT,
                                 mounts=[], hostname="h", cgroups_path="/capsa/c", extra_files={}, **kwargs)  # fmt: skip
        runtime_spec.validate(config)
        return config["linux"]["namespaces"]

    assert spaces(cgroupns=False) == [{"type": t} for t in ("mount", "network", "uts", "pid", "ipc")]
    assert spaces(netns_path="/run/capsa/netns/c", cgroupns=False)[1] == {"type": "network",
                                                                          "path": "/run/capsa/netns/c"}  # fmt: skip
    assert spaces(cgroupns=True)[-1] == {"type": "cgroup"}


def test_the_rest():
    config = build(labels={"org.example": "flag", "b": "2"})
    assert config["ociVersion"] == "1.0.2-dev"
    assert config["hostname"] == "cccccccccccc"
    assert config["linux"]["cgroupsPath"] == "/capsa/" + "c" * 64
    assert config["annotations"] == {"org.example": "flag", "b": "2"}
    assert "oomScoreAdj" not in config["process"]
    assert config["linux"]["sysctl"] == {"net.ipv4.ping_group_range": "0 2147483647",
                                         "net.ipv4.ip_unprivileged_port_start": "0"}  # fmt: skip


@pytest.mark.parametrize("values", [
    {}, {"privileged": True}, {"read_only": True, "tty": True}, {"cap_drop": ["ALL"], "group_add": ["video"]},
    {"cap_add": ["ALL"], "security_opt": ["seccomp=unconfined", "no-new-privileges"]},
    {"memory": 1 << 30, "memory_swap": -1, "cpus": 0.5, "pids_limit": 10, "ulimits": ["nofile=64"]},
])  # fmt: skip
def test_the_runtime_accepts_it(values):
    mounts = [parse_volume("/a:/data:ro"), parse_tmpfs("/tmp:mode=1777"), parse_mount("type=bind,src=/tmp,dst=/x")]
    build(mounts=mounts, **values)  # build() runs capsa.runtime.spec.validate
