"""Step 4, runC and the OCI bundle (2015): `capsa-runtime spec`, a busybox
bundle run, its config edited and run again; state, kill, delete."""

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time

from capsa.tour import rootfs
from capsa.tour.scratch import Scratch
from capsa.tour.store import checked, runtime_command

TITLE, YEAR = "runC and the OCI bundle", "2015"
SUMMARY = "capsa-runtime spec, run, edit config.json, run again; state, kill, delete"
HOSTNAME = "tour-bundle"
TIMEOUT = 30


def run(voice) -> dict:
    voice.explain("""
        In 2015 Docker gave its container-starting code to the new Open
        Container Initiative as runC. The OCI runtime-spec defines a bundle:
        a directory with a root filesystem and a config.json naming the
        process, namespaces, mounts and limits. Anything that drives runc
        (containerd, podman, Docker) can drive capsa-runtime instead.""")
    state = tempfile.mkdtemp(prefix="ct-", dir="/run")
    container = f"tour-{secrets.token_hex(4)}"
    report = {"step": 4}
    try:
        with Scratch(4) as scratch:
            scratch.announce(voice)
            bundle = scratch.path("bundle")
            rootfs.build(os.path.join(bundle, "rootfs"))
            runtime = Runtime(state, scratch.path("runtime.log"))
            voice.run("capsa-runtime spec --bundle <scratch>/bundle")
            runtime("spec", "--bundle", bundle)
            config = _load(bundle)
            voice.show(_summary(config))
            config["process"]["terminal"] = False
            config["process"]["args"] = ["sh", "-c", 'echo "hello from $(hostname), I am pid $$"']
            _save(bundle, config)
            voice.run('edit: "terminal": false, "args": ["sh", "-c", "echo hello from $(hostname), I am pid $$"]')
            voice.run(f"capsa-runtime run --bundle <scratch>/bundle {container}")
            greeting = runtime("run", "--bundle", bundle, container).stdout.strip()
            voice.show([greeting])
            report["first_output"] = greeting
            config["process"]["args"], config["hostname"] = ["sleep", "10"], HOSTNAME
            _save(bundle, config)
            voice.run(f'edit: "args": ["sleep", "10"], "hostname": "{HOSTNAME}"')
            voice.run(f"capsa-runtime create --bundle <scratch>/bundle {container}")
            runtime.quietly("create", "--bundle", bundle, container)
            report["created"] = runtime.status(container)
            voice.result(f"state: {_brief(runtime.state(container))}   (its init waits on the exec fifo)")
            voice.run(f"capsa-runtime start {container}")
            runtime("start", container)
            report["started"] = runtime.status(container)
            voice.result(f"state: {_brief(runtime.state(container))}")
            voice.run(f"capsa-runtime exec {container} hostname")
            report["hostname"] = runtime("exec", container, "hostname").stdout.strip()
            voice.show([report["hostname"]])
            voice.run(f"capsa-runtime kill {container} KILL")
            runtime("kill", container, "KILL")
            report["killed"] = runtime.wait_for(container, "stopped")
            voice.result(f"state: {_brief(runtime.state(container))}")
            voice.run(f"capsa-runtime delete {container}")
            runtime("delete", container)
            report["deleted"] = container not in runtime("list", "-q").stdout.split()
            voice.result("deleted: its cgroups and state are gone" if report["deleted"] else "still listed")
    finally:
        subprocess.run([*runtime_command(), "--root", state, "delete", "--force", container],
                       capture_output=True, check=False, timeout=TIMEOUT)  # fmt: skip
        shutil.rmtree(state, ignore_errors=True)
    return report


class Runtime:
    """capsa-runtime with the step's own --root (state) directory."""

    def __init__(self, state: str, log: str):
        self.state_dir, self.log = state, log

    def argv(self, *args: str) -> list[str]:
        return [*runtime_command(), "--root", self.state_dir, *args]

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        argv = self.argv(*args)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                              check=False)  # fmt: skip
        return checked(argv, done)

    def quietly(self, *args: str) -> None:
        """A command whose container inherits its stdio (create): output to
        a file, so no pipe is held open by the container."""
        argv = self.argv(*args)
        with open(self.log, "w+") as out:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=TIMEOUT, check=False)
            out.seek(0)
            checked(argv, subprocess.CompletedProcess(argv, done.returncode, "", out.read()))

    def state(self, container: str) -> dict:
        return json.loads(self("state", container).stdout)

    def status(self, container: str) -> str:
        return self.state(container)["status"]

    def wait_for(self, container: str, status: str, seconds: float = 5) -> str:
        deadline = time.monotonic() + seconds
        while (current := self.status(container)) != status and time.monotonic() < deadline:
            time.sleep(0.05)
        return current


def _load(bundle: str) -> dict:
    with open(os.path.join(bundle, "config.json")) as f:
        return json.load(f)


def _save(bundle: str, config: dict) -> None:
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def _summary(config: dict) -> list[str]:
    linux = config.get("linux", {})
    return [f'"ociVersion": "{config.get("ociVersion")}"',
            (f'"process": {{"args": {json.dumps(config["process"]["args"])}, '
             f'"terminal": {json.dumps(config["process"].get("terminal"))}, ...}}'),
            f'"root": {json.dumps(config.get("root"))}',
            f'"hostname": {json.dumps(config.get("hostname"))}',
            (f'"linux": {{"namespaces": {json.dumps([n["type"] for n in linux.get("namespaces", [])])}, '
             f'... {len(config.get("mounts", []))} mounts, masked and read-only paths}}')]  # fmt: skip


def _brief(state: dict) -> str:
    return f'"status": "{state.get("status")}", "pid": {state.get("pid", 0)}'
