"""Hooks: each kind at its moment and in its namespaces, state JSON on stdin, timeouts."""

import json
import os


def hook(tmp_path, name: str, script: str, **extra) -> dict:
    path = tmp_path / f"{name}.sh"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return {"path": str(path), **extra}


def recorder(tmp_path, kind: str) -> dict:
    """A hook that records its state JSON, mount namespace and hostname."""
    out = tmp_path / f"{kind}.out"
    return hook(tmp_path, kind, f'cat > {out}.json; readlink /proc/self/ns/mnt > {out}.mnt\n'
                                f'readlink /proc/self/ns/uts > {out}.uts\n')  # fmt: skip


def test_every_hook_runs_with_the_state(runtime, bundle, tmp_path):
    kinds = ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    bundle.config["hooks"] = {kind: [recorder(tmp_path, kind)] for kind in kinds}
    bundle.config["annotations"] = {"org.example": "yes"}
    bundle.args("true")
    runtime("create", "--bundle", str(bundle), "hooked")
    pid = runtime.state("hooked")["pid"]
    for kind in ("prestart", "createRuntime", "createContainer"):
        state = json.loads((tmp_path / f"{kind}.out.json").read_text())
        assert state["id"] == "hooked" and state["pid"] == pid
        assert state["status"] == "creating"
        assert state["bundle"] == str(bundle) and state["annotations"] == {"org.example": "yes"}
    host_mnt = os.readlink("/proc/self/ns/mnt")
    container_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    # prestart and createRuntime run in the runtime's namespaces, createContainer in the container's.
    assert (tmp_path / "prestart.out.mnt").read_text().strip() == host_mnt
    assert (tmp_path / "createRuntime.out.mnt").read_text().strip() == host_mnt
    assert (tmp_path / "createContainer.out.mnt").read_text().strip() == container_mnt
    assert not (tmp_path / "poststart.out.json").exists()
    runtime("start", "hooked")
    state = json.loads((tmp_path / "poststart.out.json").read_text())
    assert state["status"] == "running"
    runtime("delete", "--force", "hooked")
    state = json.loads((tmp_path / "poststop.out.json").read_text())
    assert state["status"] == "stopped" and state["id"] == "hooked"


def test_hooks_find_the_init_and_their_own_processes_in_the_cgroup(runtime, bundle, tmp_path):
    """The init joins the container's cgroup after the fork (while it makes
    its rootfs), but before any hook runs: prestart sees it there, and a
    createContainer hook (a child of the init) starts inside."""
    bundle.config["hooks"] = {
        "prestart": [hook(tmp_path, "pre", "pid=$(python3 -c 'import json, sys; print(json.load(sys.stdin)[\"pid\"])')\n"
                                           f"cat /proc/$pid/cgroup > {tmp_path}/init.cgroup\n")],
        "createContainer": [hook(tmp_path, "in", f"cat /proc/self/cgroup > {tmp_path}/hook.cgroup\n")],
    }  # fmt: skip
    bundle.args("true")
    runtime("create", "--bundle", str(bundle), "joined")
    pid = runtime.state("joined")["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        expected = f.read()
    assert "joined" in expected
    assert (tmp_path / "init.cgroup").read_text() == expected
    assert (tmp_path / "hook.cgroup").read_text() == expected
    runtime("delete", "--force", "joined")


def test_start_container_hook_runs_inside_the_container(runtime, bundle, tmp_path):
    # startContainer's path is resolved in the container: bind the script in.
    script = hook(tmp_path, "inside", "hostname > /out/host; cat > /out/state\n")
    out = tmp_path / "out"
    out.mkdir()
    bundle.config["mounts"] += [
        {"destination": "/hooks/inside.sh", "type": "bind", "source": script["path"],
         "options": ["bind", "ro"]},
        {"destination": "/out", "type": "bind", "source": str(out), "options": ["bind"]},
    ]  # fmt: skip
    bundle.config["hooks"] = {"startContainer": [{"path": "/hooks/inside.sh"}]}
    bundle.args("true")
    runtime("run", "--bundle", str(bundle), "inside")
    assert (out / "host").read_text().strip() == bundle.config["hostname"]
    assert json.loads((out / "state").read_text())["id"] == "inside"


def test_hook_args_and_env(runtime, bundle, tmp_path):
    out = tmp_path / "args.out"
    # The kernel gives a #! script its own path as $0; $1 and $2 are args[1:].
    h = hook(tmp_path, "args", f'echo "$1 $2 $MYVAR" > {out}\n',
             args=["argv0", "one", "two"], env=["MYVAR=set"])  # fmt: skip
    bundle.config["hooks"] = {"createRuntime": [h]}
    bundle.write()
    runtime("run", "--bundle", str(bundle), "args")
    assert out.read_text() == "one two set\n"


def test_failing_create_hook_fails_create_and_cleans_up(runtime, bundle, tmp_path):
    bundle.config["hooks"] = {"createRuntime": [hook(tmp_path, "fail", "echo nope >&2; exit 3\n")]}
    bundle.write()
    result = runtime("create", "--bundle", str(bundle), "failhook", check=False)
    assert result.returncode != 0
    assert b"createRuntime" in result.stderr and b"nope" in result.stderr
    assert runtime.ids() == []


def test_hook_timeout(runtime, bundle, tmp_path):
    bundle.config["hooks"] = {"prestart": [hook(tmp_path, "slow", "sleep 5\n", timeout=1)]}
    bundle.write()
    result = runtime("create", "--bundle", str(bundle), "slowhook", check=False)
    assert result.returncode != 0 and b"timed out" in result.stderr
    assert runtime.ids() == []


def test_failing_poststart_and_poststop_only_warn(runtime, bundle, tmp_path):
    failing = hook(tmp_path, "fail", "exit 1\n")
    bundle.config["hooks"] = {"poststart": [failing], "poststop": [failing]}
    bundle.args("sleep", "10")
    runtime("create", "--bundle", str(bundle), "warn")
    result = runtime("start", "warn")
    assert b"poststart" in result.stderr
    assert runtime.state("warn")["status"] == "running"
    result = runtime("delete", "--force", "warn")
    assert b"poststop" in result.stderr
    assert runtime.ids() == []
