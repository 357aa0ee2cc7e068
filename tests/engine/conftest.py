"""Engine fixtures: one store (with busybox imported as busybox:latest) and
one state directory per session, the capsa CLI on them, and after every
test: no container left in capsa's records, nothing left on the host.

The state directory is short (/run/ce-XXXXXXXX): a shim's socket path
holds a 64-hex container ID and must fit a unix socket's 108 bytes.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import leaks  # noqa: E402
from runtimes import ROOT, capsa_command  # noqa: E402

BUNDLE_SCRIPT = os.path.join(ROOT, "scripts", "busybox-bundle")
TIMEOUT = 60


class Capsa:
    def __init__(self, root: str, state: str):
        self.root, self.state = root, state
        self.env = dict(os.environ, CAPSA_STATE=state, PYTHONPATH=os.path.join(ROOT, "src"))

    def argv(self, *args: str) -> list[str]:
        return [*capsa_command(), "--root", self.root, *args]

    def __call__(self, *args: str, check: bool = True, input: str | None = None,  # noqa: A002
                 timeout: float = TIMEOUT) -> subprocess.CompletedProcess:  # fmt: skip
        result = subprocess.run(self.argv(*args), env=self.env, text=True, capture_output=True,
                                timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"capsa {' '.join(args)} exited {result.returncode}:\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")  # fmt: skip
        return result

    def fails(self, *args: str, code: int | None = None) -> str:
        result = self(*args, check=False)
        assert result.returncode != 0, f"capsa {' '.join(args)} succeeded: {result.stdout}"
        if code is not None:
            assert result.returncode == code, (result.returncode, result.stderr)
        return result.stderr.strip()

    def remove_all(self) -> None:
        ids = self("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self("rm", "-f", "-v", *ids, check=False)
        self("network", "prune", "-f", check=False)  # bridges and their rules stay until then


@pytest.fixture(scope="session")
def engine_session():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    parents_before = set(_cgroup_parents())
    base = tempfile.mkdtemp(prefix="capsa-engine-", dir="/var/tmp")
    state = tempfile.mkdtemp(prefix="ce-", dir="/run")
    capsa = Capsa(os.path.join(base, "root"), state)
    subprocess.run([sys.executable, BUNDLE_SCRIPT, os.path.join(base, "bundle")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    capsa("import", os.path.join(base, "bundle", "rootfs"), "busybox:latest")
    yield capsa
    capsa.remove_all()
    _kill_shims_of(state)  # a shim rm could not end (a failed test) must not outlive the session
    _unmount_under(base)  # what a failed test's container left mounted
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    for parent in set(_cgroup_parents()) - parents_before:  # the engine's /capsa, made by the runtime
        os.rmdir(parent)


def _cgroup_parents() -> list[str]:
    """The engine's cgroup parent (cgroupsPath /capsa/<id>) in every hierarchy."""
    root = leaks.CGROUP_ROOT
    return [os.path.join(root, name, "capsa") for name in os.listdir(root)
            if os.path.isdir(os.path.join(root, name, "capsa"))]  # fmt: skip


def _kill_shims_of(state: str) -> None:
    """SIGKILL the shims this session started."""
    from capsa.engine.shim import pids_under

    for pid in pids_under(state):
        os.kill(pid, 9)


def _unmount_under(base: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(base + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _ours(left: dict[str, set[str]]) -> dict[str, set[str]]:
    """Ignore the cgroup parents the runtime makes once (<ctrl>/capsa)."""
    if "cgroup" in left:
        left["cgroup"] = {path for path in left["cgroup"] if os.path.basename(path) != "capsa"}
    return {kind: found for kind, found in left.items() if found}


@pytest.fixture
def capsa(engine_session):
    before = leaks.snapshot()
    yield engine_session
    engine_session.remove_all()  # what a test leaves running is ours to remove
    assert engine_session("ps", "-aq").stdout == "", "rm -f could not remove every container"
    deadline = time.monotonic() + 5
    leaks.reap_orphans()  # orphans come to pytest when an earlier test made it a subreaper
    left = _left(before, engine_session.state)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        leaks.reap_orphans()
        left = _left(before, engine_session.state)
    assert not left, f"test left behind: {left}"


def _left(before, state: str) -> dict[str, set[str]]:
    """What is new since BEFORE, and the store's shims: every container is
    removed by now, so no shim may be left (they are the host's processes,
    which the leak snapshot does not look at)."""
    from capsa.engine.shim import pids_under

    left = _ours(leaks.new_since(before))
    shims = {str(pid) for pid in pids_under(state)}
    return {**left, "shim": shims} if shims else left
