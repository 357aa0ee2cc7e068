"""process: args, env, cwd, user, capabilities, rlimits, noNewPrivileges, oomScoreAdj, sysctl."""

import resource
import subprocess
import time

import pytest

from capsa.linux.caps import NUMBERS


def status_field(out: str, name: str) -> str:
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {out}")


def mask(*names) -> int:
    value = 0
    for name in names:
        value |= 1 << NUMBERS[name]
    return value


def test_env_and_cwd(run_container, bundle):
    bundle.process["env"] = ["PATH=/bin", "GREETING=hi there"]
    bundle.process["cwd"] = "/tmp"
    bundle.write()
    _, out, _ = run_container('echo "$GREETING"; pwd')
    assert out == "hi there\n/tmp\n"


def test_missing_cwd_is_a_create_error(runtime, bundle):
    bundle.process["cwd"] = "/no/such/dir"
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "nocwd", check=False)
    assert result.returncode != 0 and b"/no/such/dir" in result.stderr


def test_missing_program_is_a_create_error(runtime, bundle):
    bundle.args("/bin/not-there")
    result = runtime("create", "--bundle", str(bundle), "noprog", check=False)
    assert result.returncode != 0 and b"not-there" in result.stderr
    assert runtime.ids() == []


def test_user_groups_and_umask(run_container, bundle):
    bundle.process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 1002],
                              "umask": 0o077}  # fmt: skip
    bundle.write()
    _, out, _ = run_container("id -u; id -g; id -G; umask")
    uid, gid, groups, umask = out.strip().split("\n")
    assert (uid, gid) == ("1000", "1001")
    assert set(groups.split()) == {"1001", "5", "1002"}
    assert umask == "0077"


def test_capabilities_in_all_five_sets(run_container, bundle):
    caps = ["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"]
    bundle.process["capabilities"] = {
        "bounding": caps + ["CAP_SYS_ADMIN"], "effective": caps, "permitted": caps,
        "inheritable": caps[:1], "ambient": caps[:1],
    }  # fmt: skip
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.write()
    _, out, _ = run_container("cat /proc/self/status")
    assert int(status_field(out, "CapBnd"), 16) == mask(*caps, "CAP_SYS_ADMIN")
    # A non-root exec keeps only ambient (+ what file caps give): ambient shows through.
    assert int(status_field(out, "CapAmb"), 16) == mask("CAP_NET_BIND_SERVICE")
    assert int(status_field(out, "CapInh"), 16) == mask("CAP_NET_BIND_SERVICE")
    assert int(status_field(out, "CapEff"), 16) == mask("CAP_NET_BIND_SERVICE")


def test_root_capabilities_as_configured(run_container, bundle):
    _, out, _ = run_container("cat /proc/self/status")
    default = mask("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    for field in ("CapBnd", "CapEff", "CapPrm"):
        assert int(status_field(out, field), 16) == default


def test_dropped_capability_is_enforced(run_container, bundle):
    code, _, err = run_container("chown 1 /dev/shm", check=False)
    assert code != 0 and "Operation not permitted" in err


def test_unknown_capability_is_an_error(runtime, bundle):
    bundle.process["capabilities"]["bounding"].append("CAP_FLY")
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "badcap", check=False)
    assert result.returncode != 0 and b"CAP_FLY" in result.stderr


def test_rlimits(run_container, bundle):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    bundle.process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 100, "hard": min(200, hard)},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    bundle.write()
    _, out, _ = run_container("grep -E 'open files|core file' /proc/self/limits")
    core, nofile = (line.split()[-3:-1] for line in out.splitlines())
    assert nofile == ["100", str(min(200, hard))]
    assert core == ["0", "0"]


def test_rlimit_above_host_hard_limit_fails_cleanly(runtime, bundle):
    # No CAP_SYS_RESOURCE here: a hard limit above the host's cannot be set.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("host hard limit is infinite")
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard * 2, "hard": hard * 2}]
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "bigrlimit", check=False)
    assert result.returncode != 0 and b"RLIMIT_NOFILE" in result.stderr
    assert runtime.ids() == []


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(run_container, bundle, nnp):
    bundle.process["noNewPrivileges"] = nnp
    bundle.write()
    _, out, _ = run_container("grep NoNewPrivs /proc/self/status")
    assert out.split()[1] == ("1" if nnp else "0")


def test_oom_score_adj(run_container, bundle):
    bundle.process["oomScoreAdj"] = 500
    bundle.write()
    _, out, _ = run_container("cat /proc/self/oom_score_adj")
    assert out == "500\n"


def test_sysctl(run_container, bundle):
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}
    bundle.write()
    _, out, _ = run_container("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax")
    assert out.split() == ["1", "4096"]


def test_apparmor_requested_without_apparmor_is_an_error(runtime, bundle):
    bundle.process["apparmorProfile"] = "docker-default"
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "aa", check=False)
    if result.returncode == 0:
        pytest.skip("this host has apparmor")
    assert b"apparmor" in result.stderr


def test_selinux_requested_without_selinux_is_an_error(runtime, bundle):
    bundle.process["selinuxLabel"] = "system_u:system_r:container_t:s0"
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "se", check=False)
    assert result.returncode != 0 and b"selinux" in result.stderr


def test_exit_code_of_the_program(runtime, bundle):
    bundle.args("sh", "-c", "exit 7")
    assert runtime("run", "--bundle", str(bundle), "exit7", check=False).returncode == 7


def test_run_reports_a_kill_by_signal_as_128_plus_n(runtime, bundle):
    bundle.args("sleep", "30")
    proc = subprocess.Popen(runtime.command + ["--root", runtime.root, "run", "--bundle",
                                               str(bundle), "killed"])  # fmt: skip
    deadline = time.monotonic() + 10
    while runtime("state", "killed", check=False).returncode != 0 or \
            runtime.state("killed")["status"] != "running":  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runtime("kill", "killed", "KILL")
    assert proc.wait(timeout=10) == 137


def test_personality_linux32(run_container, bundle):
    bundle.linux["personality"] = {"domain": "LINUX32"}
    bundle.write()
    _, out, _ = run_container("uname -m")
    assert out.strip() in ("i686", "i386", "armv8l", "ppc", "s390")


@pytest.mark.parametrize("new_keyring", [True, False])
def test_session_keyring(runtime, bundle, new_keyring):
    bundle.args("sleep", "10")
    flags = [] if new_keyring else ["--no-new-keyring"]
    runtime("create", *flags, "--bundle", str(bundle), "keys")
    with open("/proc/keys") as f:
        keys = f.read()
    assert ("_ses.keys" in keys) == new_keyring
