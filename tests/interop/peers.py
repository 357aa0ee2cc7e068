"""The peers under test, each with its roots, state, sockets and config under
the session's directory: podman (daemonless), containerd (driven with ctr)
and dockerd (driven with Debian's docker CLI). The daemons are started here
and stopped by the pid started; every peer is given the runtime under test
by path (podman `--runtime`, ctr `--runc-binary`, dockerd `--add-runtime`).
"""

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import time

from images import IMAGE
from runtime_calls import Runtime

COMMAND_TIMEOUT = 120


def run_program(argv: list[str], env: dict | None = None, check: bool = True,
                timeout: float = COMMAND_TIMEOUT, input: str | None = None,  # noqa: A002
                ) -> subprocess.CompletedProcess:  # fmt: skip
    """Run a peer's command line; on CHECK, a non-zero exit fails with its output."""
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True,
                                timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"`{shlex.join(argv)}` timed out after {timeout}s; "
                             f"output: {err.stdout!r} {err.stderr!r}") from None  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"`{shlex.join(argv)}` exited {result.returncode}:\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")  # fmt: skip
    return result


def podman_ulimits() -> list[str]:
    """default_ulimits podman can set here. Its defaults for root (1048576
    files and processes) are above this machine's hard limits, and without
    CAP_SYS_RESOURCE they cannot be raised; podman also lowers its own
    RLIMIT_NPROC to kernel.pid_max, which its containers then cannot exceed."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    ceilings = {"nofile": resource.RLIM_INFINITY, "nproc": pid_max}
    found = []
    for kind, name in ((resource.RLIMIT_NOFILE, "nofile"), (resource.RLIMIT_NPROC, "nproc")):
        _, hard = resource.getrlimit(kind)
        values = [v for v in (hard, ceilings[name]) if v != resource.RLIM_INFINITY]
        if values:
            found.append(f"{name}={min(values)}:{min(values)}")
    return found


class Podman:
    """podman with its storage, run and tmp dirs, containers.conf,
    storage.conf and registries.conf under BASE."""

    def __init__(self, base: str, cgroup_parent: str):
        self.base = base
        self.root = os.path.join(base, "root")
        self.runroot = os.path.join(base, "run")
        self.tmpdir = os.path.join(base, "tmp")
        self.cgroup_parent = f"{cgroup_parent}/podman"
        self.runtime: Runtime | None = None
        for path in (self.root, self.runroot, self.tmpdir, os.path.join(base, "networks")):
            os.makedirs(path, exist_ok=True)
        self._write("containers.conf", f"""\
[containers]
default_ulimits = {json.dumps(podman_ulimits())}
log_driver = "k8s-file"
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
tmp_dir = "{self.tmpdir}"
# File locks under tmp_dir, not the machine-wide /dev/shm/libpod_lock that
# every podman shares (and that must then agree on num_locks).
lock_type = "file"
# The runtimes that accept --log-format=json (runc's name, and ours).
runtime_supports_json = ["crun", "runc", "capsa-runtime"]

[network]
network_config_dir = "{base}/networks"
""")
        self._write("storage.conf", f"""\
[storage]
driver = "overlay"
graphroot = "{self.root}"
runroot = "{self.runroot}"
""")
        self._write("registries.conf", "unqualified-search-registries = []\n")
        self.env = dict(os.environ,
                        CONTAINERS_CONF=os.path.join(base, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(base, "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=os.path.join(base, "registries.conf"))  # fmt: skip

    def _write(self, name: str, text: str) -> None:
        with open(os.path.join(self.base, name), "w") as f:
            f.write(text)

    def argv(self, *args: str) -> list[str]:
        runtime = ["--runtime", self.runtime.path] if self.runtime else []
        return ["podman", "--root", self.root, "--runroot", self.runroot,
                "--tmpdir", self.tmpdir, "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", *runtime, *args]  # fmt: skip

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_program(self.argv(*args), env=self.env, **kwargs)

    def run_argv(self, *args: str) -> list[str]:
        """`podman run` ARGS (options, then image and command), never pulling,
        without a network, in the session's cgroup parent."""
        return self.argv("run", "--pull=never", "--network=none",
                         f"--cgroup-parent={self.cgroup_parent}", *args)  # fmt: skip

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_program(self.run_argv(*args), env=self.env, **kwargs)

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def load(self, archive: str) -> None:
        self("load", "-q", "-i", archive)
        self("image", "exists", IMAGE)

    def container_ids(self) -> list[str]:
        return self("ps", "-a", "-q", "--no-trunc").stdout.split()

    def remove_all(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False)

    def reset(self) -> None:
        """Remove everything podman stored, and unmount its storage (the
        overlay driver keeps its directory bind-mounted, made private)."""
        self("system", "reset", "--force", check=False)
        overlay = os.path.join(self.root, "overlay")
        if os.path.ismount(overlay):
            subprocess.run(["umount", overlay], check=False)


class Daemon:
    """A daemon this session starts, logs to a file, and stops by its pid."""

    name = "daemon"

    def __init__(self, base: str):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.log_path = os.path.join(base, f"{self.name}.log")
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode} at start:\n"
                                   f"{self.log_tail()}")  # fmt: skip
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the pid started, SIGKILL it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Containerd(Daemon):
    """containerd with its root, state, sockets and config.toml under BASE (no
    CRI plugin), driven through ctr in one namespace."""

    name = "containerd"
    NAMESPACE = "interop"

    def __init__(self, base: str, cgroup_parent: str):
        super().__init__(base)
        self.socket = os.path.join(base, "containerd.sock")
        self.config = os.path.join(base, "config.toml")
        self.fifo_dir = os.path.join(base, "fifo")
        self.cgroup_parent = f"{cgroup_parent}/ctr"
        self.runtime: Runtime | None = None
        os.makedirs(self.fifo_dir, exist_ok=True)
        disabled = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
                    "io.containerd.internal.v1.tracing"]  # fmt: skip
        with open(self.config, "w") as f:
            f.write(f"""\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = {json.dumps(disabled)}

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"
""")

    def argv(self) -> list[str]:
        return ["containerd", "--config", self.config]

    def ready(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        return self("version", check=False, timeout=10).returncode == 0

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.socket, "--namespace", self.NAMESPACE, *args]

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_program(self.ctr_argv(*args), **kwargs)

    def runc_root(self) -> str:
        return os.path.join(self.base, "runc-root", self.runtime.key)

    def run_argv(self, container_id: str, *command: str, options: tuple = ()) -> list[str]:
        """`ctr run` with the runtime under test as the runc v2 shim's binary."""
        return self.ctr_argv("run", "--runc-binary", self.runtime.path,
                             "--runc-root", self.runc_root(), "--fifo-dir", self.fifo_dir,
                             "--cgroup", f"{self.cgroup_parent}/{container_id}",
                             *options, IMAGE, container_id, *command)  # fmt: skip

    def run(self, container_id: str, *command: str, options: tuple = (), **kwargs):
        return run_program(self.run_argv(container_id, *command, options=options), **kwargs)

    def exec_argv(self, container_id: str, exec_id: str, *command: str,
                  options: tuple = ()) -> list[str]:  # fmt: skip
        """`ctr task exec`, its fifos in the session (not /run/containerd/fifo,
        where ctr leaves a detached process's)."""
        return self.ctr_argv("task", "exec", "--fifo-dir", self.fifo_dir, "--exec-id", exec_id,
                             *options, container_id, *command)  # fmt: skip

    def exec(self, container_id: str, exec_id: str, *command: str, options: tuple = (),
             **kwargs) -> subprocess.CompletedProcess:  # fmt: skip
        return run_program(self.exec_argv(container_id, exec_id, *command, options=options),
                           **kwargs)  # fmt: skip

    def task(self, container_id: str) -> dict:
        """The task's PID and STATUS from `ctr task ls`."""
        lines = self("task", "ls").stdout.splitlines()
        header = lines[0].split()
        for line in lines[1:]:
            row = dict(zip(header, line.split()))
            if row.get("TASK") == container_id:
                return row
        raise AssertionError(f"no task {container_id} in: {lines}")

    def container_ids(self) -> list[str]:
        return self("containers", "ls", "-q").stdout.split()

    def remove_all(self) -> None:
        for container_id in self.container_ids():
            self("task", "kill", "--all", "--signal", "SIGKILL", container_id, check=False)
            time.sleep(0.2)
            self("task", "delete", "--force", container_id, check=False)
            self("containers", "rm", container_id, check=False)

    def load(self, archive: str) -> None:
        self("images", "import", "--base-name", IMAGE.split(":")[0], archive)
        names = self("images", "ls", "-q").stdout.split()
        assert IMAGE in names, f"ctr images import named the image {names}"


def docker_cli() -> str | None:
    """Debian's docker CLI (docker.io, the same release as its dockerd)."""
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")


class Dockerd(Daemon):
    """dockerd with its data root, exec root, pidfile, socket and (empty)
    daemon.json under BASE, cgroupfs, no bridge, no iptables; each runtime
    under test added as `interop-<name>`. It starts its own containerd."""

    name = "dockerd"

    def __init__(self, base: str, cgroup_parent: str, runtimes: list[Runtime],
                 storage_driver: str = "overlay2"):  # fmt: skip
        super().__init__(base)
        self.socket = os.path.join(base, "docker.sock")
        self.exec_root = os.path.join(base, "exec")
        self.cgroup_parent = f"{cgroup_parent}/docker"
        self.runtimes = runtimes
        self.storage_driver = storage_driver
        self.runtime: Runtime | None = None
        self.config = os.path.join(base, "daemon.json")
        with open(self.config, "w") as f:
            f.write("{}\n")
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}",
                        DOCKER_CONFIG=os.path.join(base, "cli-config"))  # fmt: skip

    def argv(self) -> list[str]:
        runtimes = [f"--add-runtime=interop-{rt.key}={rt.path}" for rt in self.runtimes]
        return ["dockerd", "--data-root", os.path.join(self.base, "data"),
                "--exec-root", self.exec_root, "--pidfile", os.path.join(self.base, "dockerd.pid"),
                "-H", f"unix://{self.socket}", "--config-file", self.config,
                "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
                "--bridge=none", "--exec-opt", "native.cgroupdriver=cgroupfs",
                "--cgroup-parent", self.cgroup_parent, "--storage-driver", self.storage_driver,
                *runtimes]  # fmt: skip

    def ready(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        return self("version", check=False, timeout=10).returncode == 0

    def docker_argv(self, *args: str) -> list[str]:
        return [docker_cli(), *args]

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_program(self.docker_argv(*args), env=self.env, **kwargs)

    def run_argv(self, *args: str) -> list[str]:
        return self.docker_argv("run", f"--runtime=interop-{self.runtime.key}",
                                "--network=none", *args)  # fmt: skip

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_program(self.run_argv(*args), env=self.env, **kwargs)

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def container_ids(self) -> list[str]:
        return self("ps", "-a", "-q", "--no-trunc").stdout.split()

    def remove_all(self) -> None:
        ids = self.container_ids()
        if ids:
            self("rm", "--force", *ids, check=False)

    def load(self, archive: str) -> None:
        self("load", "-i", archive)
        self("image", "inspect", IMAGE)
