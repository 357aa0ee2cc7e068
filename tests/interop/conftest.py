"""Interop fixtures: podman, containerd and dockerd running containers with
the runtime under test (each test runs once with capsa-runtime, once with
runc), a busybox image built here, and checks that nothing is left behind.

Everything a peer writes lives under one session directory; the daemons
are started here and stopped by their pid; container cgroups go under one
session cgroup parent. After each test the peer must hold no container,
nothing new may remain (mounts, processes, cgroups under the parent), and
the runtime must no longer know any container created during the test. At
the end of the session, with the daemons stopped, the same holds against
the session's start, and the cgroup parent is removed.

A failing test's report carries the runtime calls the peers made during it
(argv, exit status, what the runtime wrote to its --log when it failed).
CAPSA_INTEROP_CALLS=FILE copies the whole session's call log to FILE;
CAPSA_INTEROP_DIRECT=1 gives the peers the runtimes' own paths, unlogged.
"""

import os
import shutil
import tempfile
import time

import pytest

import leftovers
from images import build_archive
from peers import Containerd, Dockerd, Podman, docker_cli
from runtime_calls import RUNTIMES, CallLog, Runtime, find_runtime, write_wrapper

# Cgroups the peers create once and reuse (podman's conmon goes to <parent>/conmon).
KEEP_CGROUPS = frozenset({"podman", "podman/conmon", "docker", "ctr"})
SETTLE_SECONDS = 10


class Session:
    def __init__(self, base: str, cgroup_parent: str, calls: CallLog,
                 runtimes: dict[str, Runtime | None]):  # fmt: skip
        self.dir = base
        self.cgroup_parent = cgroup_parent
        self.calls = calls
        self.runtimes = runtimes
        self.daemon_pids: set[int] = set()
        # Mounts of a peer's own storage, which come and go with its use: the
        # overlay graph driver bind-mounts its home privately.
        self.storage_mounts: set[str] = set()

    def snapshot(self, keep: frozenset[str] = KEEP_CGROUPS) -> dict[str, set[str]]:
        found = leftovers.snapshot(self.dir, self.cgroup_parent, keep)
        found["mount"] = {mount for mount in found["mount"]
                          if mount.split(" ", 1)[1] not in self.storage_mounts}  # fmt: skip
        return found

    def settle(self, before: dict[str, set[str]], keep: frozenset[str] = KEEP_CGROUPS,
               timeout: float = SETTLE_SECONDS) -> dict[str, set[str]]:  # fmt: skip
        """What is new since BEFORE once processes had TIMEOUT to exit
        (cgroups only if BEFORE has them)."""
        deadline = time.monotonic() + timeout
        while True:
            leftovers.reap_zombie_children(self.daemon_pids)
            now = {kind: found for kind, found in self.snapshot(keep).items() if kind in before}
            left = leftovers.new_since(before, now)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def runtime_named(self, name: str) -> Runtime | None:
        for runtime in self.runtimes.values():
            if runtime and os.path.basename(runtime.path) == name:
                return runtime
        return None


@pytest.fixture(scope="session", autouse=True)
def interop():
    from capsa.linux.proc import set_child_subreaper

    # conmon and the containerd shims are orphaned by design; as the session's
    # subreaper, pytest reaps them (pid 1 here reaps late, and a zombie
    # conmon keeps its cgroup from being removed).
    set_child_subreaper()
    # Short: podman refuses a runroot longer than 50 characters.
    base = tempfile.mkdtemp(prefix="capsa-interop-", dir="/tmp")
    cgroup_parent = f"/capsa-interop-{os.getpid()}"
    calls = CallLog(os.path.join(base, "runtime-calls.log"))
    direct = os.environ.get("CAPSA_INTEROP_DIRECT") == "1"
    runtimes = {}
    for key, program in RUNTIMES:
        real = find_runtime(program)
        path = real if direct or not real else write_wrapper(
            os.path.join(base, "runtimes"), program, real, calls)
        runtimes[key] = Runtime(key, real, path) if real else None
    session = Session(base, cgroup_parent, calls, runtimes)
    baseline = session.snapshot(frozenset())
    yield session

    # The daemons' fixtures were set up after this one: they are stopped now.
    problems = []
    baseline.pop("cgroup")  # the tree is removed below; what cannot be is the leak
    left = session.settle(baseline)
    if left:
        problems.append(f"left behind by the peers: {left}")
    busy = leftovers.remove_cgroup_tree(cgroup_parent)
    if busy:
        problems.append(f"cgroups that could not be removed: {busy}")
    target = os.environ.get("CAPSA_INTEROP_CALLS")
    if target:
        shutil.copyfile(calls.path, target)
    calls.keep()
    assert not problems, "\n".join(problems) + f"\n(kept {base})"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=[key for key, _ in RUNTIMES])
def runtime(request, interop) -> Runtime:
    """The runtime the peers run this test's containers with."""
    found = interop.runtimes[request.param]
    if found is None:
        pytest.skip(f"{request.param} is not installed")
    return found


@pytest.fixture(autouse=True)
def no_leftovers(request, interop):
    """After the test: nothing new under the session (mounts, processes,
    cgroups), and no container created during the test still known to the
    runtime that created it."""
    offset = interop.calls.mark()
    request.node.interop_calls = (interop.calls, offset)
    before = interop.snapshot()
    yield
    left = interop.settle(before)
    for call in interop.calls.since(offset):
        runtime = interop.runtime_named(call.runtime)
        if call.command == "create" and call.rc == 0 and runtime:
            root = call.global_option("--root")
            if runtime.still_exists(call.argv[-1], root):
                root_flag = f" --root {root}" if root else ""
                left.setdefault("runtime state", set()).add(
                    f"{runtime.real}{root_flag} state {call.argv[-1]} still succeeds")
    assert not left, f"test left behind: {left}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.interop_failed = True
    recorded = getattr(item, "interop_calls", None)
    if report.failed and recorded:
        log, offset = recorded
        text = "\n".join(str(c) for c in log.since(offset)) or "(no runtime calls)"
        report.sections.append(("runtime calls made by the peer", text))


def _require(*programs: str) -> None:
    missing = [p for p in programs if not shutil.which(p)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup installs them)")


@pytest.fixture(scope="session")
def busybox_archive(interop) -> str:
    _require("umoci")
    return build_archive(os.path.join(interop.dir, "image"))


def _check_emptied(request, peer, name: str) -> None:
    """The peer holds no container: remove what a failed test left; fail a
    test that passed but left one."""
    left = peer.container_ids()
    if left:
        peer.remove_all()
        if not getattr(request.node, "interop_failed", False):
            pytest.fail(f"{name} still holds containers after the test: {left}")


@pytest.fixture(scope="session")
def podman_session(interop, busybox_archive):
    _require("podman", "conmon")
    podman = Podman(os.path.join(interop.dir, "podman"), interop.cgroup_parent)
    interop.storage_mounts.add(os.path.join(podman.root, "overlay"))
    podman.load(busybox_archive)
    yield podman
    podman.runtime = None
    podman.remove_all()
    podman.reset()
    interop.storage_mounts.discard(os.path.join(podman.root, "overlay"))


@pytest.fixture
def podman(request, podman_session, runtime):
    podman_session.runtime = runtime
    yield podman_session
    _check_emptied(request, podman_session, "podman")


@pytest.fixture(scope="session")
def containerd_session(interop, busybox_archive):
    _require("containerd", "ctr", "containerd-shim-runc-v2")
    containerd = Containerd(os.path.join(interop.dir, "containerd"), interop.cgroup_parent)
    containerd.start()
    interop.daemon_pids.add(containerd.pid)
    try:
        containerd.load(busybox_archive)
        yield containerd
        containerd.remove_all()
    finally:
        containerd.stop()


@pytest.fixture
def ctr(request, containerd_session, runtime):
    containerd_session.runtime = runtime
    yield containerd_session
    _check_emptied(request, containerd_session, "containerd")


@pytest.fixture(scope="session")
def dockerd_session(interop, busybox_archive):
    _require("dockerd", "containerd", "containerd-shim-runc-v2")
    if not docker_cli():
        pytest.skip("the docker CLI is not installed (scripts/setup installs docker.io)")
    runtimes = [rt for rt in interop.runtimes.values() if rt]
    errors = []
    for driver in ("overlay2", "vfs"):
        dockerd = Dockerd(os.path.join(interop.dir, f"docker-{driver}"), interop.cgroup_parent,
                          runtimes, storage_driver=driver)  # fmt: skip
        try:
            dockerd.start()
            break
        except RuntimeError as err:
            errors.append(str(err))
    else:
        pytest.fail("dockerd did not start:\n" + "\n".join(errors))
    interop.daemon_pids.add(dockerd.pid)
    try:
        dockerd.load(busybox_archive)
        yield dockerd
        dockerd.remove_all()
    finally:
        dockerd.stop()


@pytest.fixture
def docker(request, dockerd_session, runtime):
    dockerd_session.runtime = runtime
    yield dockerd_session
    _check_emptied(request, dockerd_session, "dockerd")


@pytest.fixture
def name(request, runtime) -> str:
    """A container name for this test and runtime, readable in the call log."""
    return f"{request.node.originalname.removeprefix('test_')}-{runtime.short}".replace("_", "-")
