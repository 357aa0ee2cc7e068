"""--systemd-cgroup on this host, whose init is not systemd: refused, nothing made.

The expansion of slice:prefix:name on a systemd host is unit-tested
(tests/unit/test_runtime_commands.py): making this host look like one would
mislead every other program on it.
"""

import os

import pytest
from running import one_line_error, start

MESSAGE = "systemd cgroup driver requested but systemd is not the init on this host"

pytestmark = pytest.mark.skipif(os.path.isdir("/run/systemd/system"),
                                reason="systemd is this host's init")


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("cgroups_path", [None, "system.slice:capsa:c1", "/plain/path"])
def test_systemd_cgroup_is_refused_before_anything_is_made(runtime, bundle, command,
                                                           cgroups_path):  # fmt: skip
    if cgroups_path:
        bundle.linux["cgroupsPath"] = cgroups_path
    bundle.args("sleep", "60")
    result = runtime("--systemd-cgroup", command, "--bundle", str(bundle), "c1", check=False)
    assert one_line_error(result) == f"capsa-runtime: {MESSAGE}"
    assert runtime.ids() == []


def test_a_slice_path_without_the_flag_is_refused(runtime, bundle):
    bundle.linux["cgroupsPath"] = "system.slice:capsa:c1"
    bundle.args("true")
    error = one_line_error(runtime("run", "--bundle", str(bundle), "c1", check=False))
    assert "needs --systemd-cgroup" in error
    assert runtime.ids() == []


def test_other_commands_accept_the_flag(runtime, bundle):
    """containerd's runc client passes the global flag to every command."""
    start(runtime, bundle, "c1", "sleep", "60")
    assert runtime("--systemd-cgroup", "state", "c1").returncode == 0
    runtime("--systemd-cgroup", "pause", "c1")
    runtime("--systemd-cgroup", "resume", "c1")
    runtime("--systemd-cgroup", "delete", "--force", "c1")
    assert runtime.ids() == []
