"""A private capsa store for one tour step, and the capsa programs on it.

    with Scratch(5) as scratch, CapsaStore(scratch) as capsa:
        capsa.import_busybox()
        capsa("run", "--rm", "--network", "none", "busybox", "true")

The store is `capsa --root <scratch>/root` with CAPSA_STATE a short
directory under /run (a shim's socket path, which holds a 64-hex container
ID, must fit a unix socket's 108 bytes). Leaving the block removes every
container and network the step made, kills any shim of the store that is
still alive, unmounts what is left under the root, and removes the state
directory and the cgroup parents (<controller>/capsa) the runtime made.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from capsa.errors import CapsaError
from capsa.tour import rootfs
from capsa.tour.scratch import remove_tree

TIMEOUT = 60
CGROUP_ROOT = "/sys/fs/cgroup"


def capsa_command() -> list[str]:
    path = shutil.which("capsa")
    return [path] if path else [sys.executable, "-m", "capsa.cli.main"]


def runtime_command() -> list[str]:
    path = shutil.which("capsa-runtime")
    return [path] if path else [sys.executable, "-m", "capsa.runtime.cli"]


class ProgramFailed(CapsaError):
    """A capsa program the tour ran exited non-zero; the message has its stderr."""


def checked(argv: list[str], done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        why = (done.stderr or done.stdout or "").strip().splitlines()
        raise ProgramFailed(f"failed to run {' '.join(argv[-4:])}: exit {done.returncode}"
                            + (f": {why[-1]}" if why else ""))
    return done


class CapsaStore:
    def __init__(self, scratch):
        self.root = scratch.path("root")
        self.scratch = scratch
        self.state = ""
        self.networks: list[str] = []
        self._parents_before: set[str] = set()

    def __enter__(self) -> "CapsaStore":
        self._parents_before = set(cgroup_parents())
        self.state = tempfile.mkdtemp(prefix="ct-", dir="/run")
        return self

    @property
    def env(self) -> dict:
        env = dict(os.environ, CAPSA_STATE=self.state)
        env.pop("CAPSA_ROOT", None)
        return env

    def argv(self, *args: str) -> list[str]:
        return [*capsa_command(), "--root", self.root, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        argv = self.argv(*args)
        done = subprocess.run(argv, env=self.env, text=True, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        return checked(argv, done) if check else done

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, stdin=subprocess.DEVNULL, **kwargs)

    def import_busybox(self, name: str = "busybox:latest") -> str:
        """Import a busybox rootfs (built in the scratch directory) as NAME."""
        self("import", rootfs.build(self.scratch.path("busybox-rootfs")), name)
        return name

    def create_network(self, name: str) -> None:
        self.networks.append(name)
        self("network", "create", name)

    def __exit__(self, *exc) -> None:
        if not self.state:
            return
        try:
            ids = self("ps", "-aq", "--no-trunc", check=False).stdout.split()
            if ids:
                self("rm", "-f", "-v", *ids, check=False)
            for name in self.networks:
                self("network", "rm", "--force", name, check=False)
        finally:
            _kill_shims_of(self.state)
            remove_tree(self.root)
            shutil.rmtree(self.state, ignore_errors=True)
            for parent in set(cgroup_parents()) - self._parents_before:
                try:
                    os.rmdir(parent)  # only when empty: another store may be using it now
                except OSError:
                    pass


def cgroup_parents() -> list[str]:
    """The engine's cgroup parent (cgroupsPath /capsa/<id>) in every hierarchy."""
    found = []
    for name in os.listdir(CGROUP_ROOT):
        parent = os.path.join(CGROUP_ROOT, name, "capsa")
        if os.path.isdir(parent):
            found.append(parent)
    return found


def _kill_shims_of(state: str) -> None:
    """SIGKILL this store's shims that outlived `rm -f`; nothing else is touched."""
    from capsa.engine.shim import pids_under

    for pid in pids_under(state):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
