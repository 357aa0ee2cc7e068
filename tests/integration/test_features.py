"""features: the runtime-spec features document, checked against the host and runc."""

import json
import os
import subprocess

import pytest
from running import one_line_error


@pytest.fixture(scope="module")
def printed():
    from runtimes import runtime_command

    result = subprocess.run(runtime_command() + ["features"], capture_output=True, check=True,
                            timeout=30)  # fmt: skip
    return result.stdout.decode()


@pytest.fixture(scope="module")
def features(printed):
    return json.loads(printed)


@pytest.fixture(scope="module")
def runc_features():
    return json.loads(subprocess.run(["runc", "features"], capture_output=True, check=True,
                                     timeout=30).stdout)  # fmt: skip


def test_printed_as_runc_prints_it(printed, features):
    lines = printed.splitlines()
    assert lines[0] == "{" and lines[1] == '    "ociVersionMin": "1.0.0",' and lines[-1] == "}"
    assert printed == json.dumps(features, indent=4) + "\n"
    assert list(features) == ["ociVersionMin", "ociVersionMax", "hooks", "mountOptions",
                              "linux", "annotations"]  # fmt: skip
    assert list(features["linux"]) == ["namespaces", "capabilities", "cgroup", "seccomp",
                                       "apparmor", "selinux", "intelRdt", "mountExtensions"]


def test_versions_and_hooks(features, runc_features):
    assert features["ociVersionMin"] == "1.0.0"
    assert features["ociVersionMax"] >= runc_features["ociVersionMax"]
    assert features["hooks"] == runc_features["hooks"]


def test_mount_options_are_runcs_known_options(features, runc_features):
    ours = features["mountOptions"]
    assert ours == sorted(ours)
    assert {"rbind", "ro", "nosuid", "rprivate", "rro", "tmpcopyup"} <= set(ours)
    assert "idmap" not in ours  # refused by rootfs.py
    # runc 1.1.5's list, but for three recursive atime clearers rootfs.py lacks.
    assert set(runc_features["mountOptions"]) - set(ours) <= {"ratime", "rnorelatime",
                                                             "rnostrictatime"}


def test_namespaces_are_those_of_this_kernel(features):
    kernel = {"cgroup": "cgroup", "ipc": "ipc", "mount": "mnt", "network": "net", "pid": "pid",
              "user": "user", "uts": "uts", "time": "time"}  # fmt: skip
    expected = sorted(kind for kind, name in kernel.items()
                      if os.path.exists(f"/proc/self/ns/{name}"))
    assert features["linux"]["namespaces"] == expected


def test_capabilities_are_those_this_kernel_knows(features, runc_features):
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    caps = features["linux"]["capabilities"]
    assert len(caps) == last + 1 and caps[0] == "CAP_CHOWN"
    assert caps == runc_features["linux"]["capabilities"][: last + 1]


def test_cgroup_rdt_and_idmap(features):
    linux = features["linux"]
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                               "rdma": True}  # fmt: skip
    assert linux["intelRdt"] == {"enabled": False}
    assert linux["mountExtensions"] == {"idmap": {"enabled": False}}


def test_lsms_are_what_the_host_has(features):
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            apparmor = f.read().startswith("Y")
    except OSError:
        apparmor = False
    assert features["linux"]["apparmor"] == {"enabled": apparmor}
    assert features["linux"]["selinux"] == {"enabled": os.path.exists("/sys/fs/selinux/enforce")}


def test_seccomp_as_runc_reports_it(features, runc_features):
    ours, theirs = features["linux"]["seccomp"], runc_features["linux"]["seccomp"]
    assert ours["enabled"] is True
    assert set(theirs["actions"]) <= set(ours["actions"])
    assert ours["actions"] == sorted(ours["actions"])
    assert ours["operators"] == theirs["operators"]
    assert set(theirs["archs"]) <= set(ours["archs"])
    assert set(ours["supportedFlags"]) <= set(ours["knownFlags"])


def test_annotations(features, runc_features):
    from runtimes import runtime_command

    version = subprocess.run(runtime_command() + ["--version"], capture_output=True,
                             check=True).stdout.decode().split()[2]  # fmt: skip
    annotations = features["annotations"]
    assert list(annotations) == sorted(annotations)
    assert annotations["org.capsa.runtime.version"] == version
    libseccomp = runc_features["annotations"]["io.github.seccomp.libseccomp.version"]
    assert annotations["io.github.seccomp.libseccomp.version"] == libseccomp


def test_features_takes_no_arguments(runtime):
    assert "no arguments" in one_line_error(runtime("features", "extra", check=False))
