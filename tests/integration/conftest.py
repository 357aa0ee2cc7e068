"""Integration fixtures: real busybox bundles, a private runtime root, leak checks."""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import leaks  # noqa: E402
from runtimes import ROOT, runtime_command  # noqa: E402

BUNDLE_SCRIPT = os.path.join(ROOT, "scripts", "busybox-bundle")
SUBREAPER = os.path.join(ROOT, "tests", "subreaper.py")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """One busybox rootfs per session; bundles bind it read-only or copy it."""
    base = tmp_path_factory.mktemp("busybox")
    subprocess.run([sys.executable, BUNDLE_SCRIPT, str(base)], check=True)
    return base / "rootfs"


@pytest.fixture(scope="session", autouse=True)
def subreaper():
    """Container inits outlive `create` and are orphaned: make them ours, as a
    shim is their subreaper, rather than pid 1's, which may reap them late
    (seconds, here) or never (a shell as pid 1 in a CI container)."""
    from capsa.linux.proc import set_child_subreaper

    set_child_subreaper()


@pytest.fixture(autouse=True)
def no_leaks(subreaper):
    """Fail the test if it left a mount, cgroup, namespace or process behind."""
    before = leaks.snapshot()
    yield
    deadline = time.monotonic() + 5
    leaks.reap_orphans()
    left = leaks.new_since(before)
    while left and time.monotonic() < deadline:  # processes take a moment to exit
        time.sleep(0.02)
        leaks.reap_orphans()
        left = leaks.new_since(before)
    assert not left, f"test left behind: {left}"


class Runtime:
    """capsa-runtime (or a peer) with its own --root, for one test."""

    def __init__(self, command: list[str], root: str):
        self.command = command
        self.root = root

    def __call__(self, *args, check=True, input=None, timeout=30, **kwargs):  # noqa: A002
        """Run the runtime; its output is collected in files, not pipes, since
        a container created by it inherits (and keeps) its stdout and stderr."""
        command = self.argv(*args)
        if "stdout" in kwargs or "stderr" in kwargs:
            result = subprocess.run(command, input=input, timeout=timeout, **kwargs)
        else:
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                result = subprocess.run(command, input=input, stdout=out, stderr=err,
                                        timeout=timeout, **kwargs)  # fmt: skip
                out.seek(0)
                err.seek(0)
                result.stdout, result.stderr = out.read(), err.read()
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): "
                                 f"{result.stderr.decode(errors='replace')}")  # fmt: skip
        return result

    def argv(self, *args) -> list[str]:
        """The command line; what may leave a container process behind (create,
        run, exec) goes under a subreaper (see subreaper.py)."""
        argv = self.command + ["--root", self.root, *args]
        if args and args[0] in ("create", "run", "exec"):
            argv = [sys.executable, SUBREAPER] + argv
        return argv

    def state(self, container_id: str) -> dict:
        return json.loads(self("state", container_id).stdout)

    def ids(self) -> list[str]:
        """The containers: the directories in the root (beside them, the
        runtime keeps its compiled seccomp filters as files)."""
        try:
            return sorted(e for e in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, e)))
        except FileNotFoundError:
            return []

    def cleanup(self) -> None:
        for container_id in self.ids():
            self("delete", "--force", container_id, check=False)


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(runtime_command(), str(tmp_path / "state"))
    yield rt
    rt.cleanup()
    assert rt.ids() == [], "containers left after force-delete"


class Bundle:
    """A bundle dir whose config.json is edited through .config then .write()."""

    def __init__(self, path, rootfs):
        self.path = path
        self.rootfs = rootfs
        with open(path / "config.json") as f:
            self.config = json.load(f)

    @property
    def process(self) -> dict:
        return self.config["process"]

    @property
    def linux(self) -> dict:
        return self.config["linux"]

    def write(self) -> "Bundle":
        with open(self.path / "config.json", "w") as f:
            json.dump(self.config, f, indent=2)
        return self

    def args(self, *args) -> "Bundle":
        self.process["args"] = list(args)
        return self.write()

    def __str__(self) -> str:
        return str(self.path)


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """A fresh bundle: the shared rootfs, `capsa-runtime spec`, no terminal."""
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(runtime_command() + ["spec", "--bundle", str(path)], check=True)
    b = Bundle(path, busybox_rootfs)
    b.config["root"]["path"] = str(busybox_rootfs)
    b.process["terminal"] = False
    b.process["args"] = ["true"]
    return b.write()


_counter = [0]


@pytest.fixture
def run_container(runtime, bundle):
    """Run `sh -c script` in the bundle; return (exit code, stdout, stderr)."""

    def run(script: str, check: bool = True):
        _counter[0] += 1
        bundle.args("sh", "-c", script)
        result = runtime("run", "--bundle", str(bundle), f"t{os.getpid()}-{_counter[0]}",
                         check=False)  # fmt: skip
        out, err = result.stdout.decode(), result.stderr.decode()
        if check and result.returncode != 0:
            raise AssertionError(f"container failed ({result.returncode}): {err}{out}")
        return result.returncode, out, err

    return run
