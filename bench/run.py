#!/usr/bin/env python3
"""Time `capsa run` against podman, docker and ctr (containerd) with hyperfine, in one run.

Usage (as root): .venv/bin/python bench/run.py [--runs N] [--only capsa,podman,docker,ctr]
                                               [--parallel N] [--keep] [--markdown]

The image: the busybox rootfs of `scripts/busybox-bundle` (Debian's
busybox-static and a symlink per applet), built once per run and put into
each tool's private store without a registry:

  capsa   `capsa --root R import DIR/rootfs busybox:latest` (CAPSA_STATE: a short /run/cb-XXXX)
  podman  `podman --root R --runroot RR --storage-driver overlay import rootfs.tar bench/busybox`
          (in a tmpfs over /var/lib/containers: containers/image's blob-info cache)
  docker  a private dockerd (--data-root, --exec-root, --host unix:///tmp/bench-docker-XXXX.sock,
          --pidfile, its default bridge docker0 (removed at the end if the run made it),
          --iptables=false, --ip-masq=false, --cgroup-parent of its own),
          with the containerd it starts itself; `docker import rootfs.tar busybox:latest`
  ctr     a private containerd 1.6 (cri and the unused snapshotters disabled), namespace
          capsabench; `ctr images import` of the docker-archive that `capsa save` writes

Rows (each one hyperfine invocation, --warmup 2, medians quoted):

  run --rm      `capsa run --rm --network none busybox true`, `podman run --rm --network none
                bench/busybox true` (--cgroup-manager cgroupfs --events-backend file, runc),
                `docker run --rm --network none busybox true`, `ctr run --rm IMAGE c$n true`
                (a counter file gives each ctr container its own id; ctr makes no network)
  run --rm bridge  the same on each engine's default bridge network: `capsa run --rm busybox true`
                (network capsa, CNI), `podman run --rm bench/busybox true` (network podman, netavark),
                `docker run --rm busybox true` (docker0); ctr makes no network
  20 x run -d   N (--parallel, default 20) `run -d --network none busybox sleep 60` started at once from one
                shell, which waits for all of them (the wall time until every CLI has returned,
                so every container is running); --prepare removes the previous run's containers
                (capsa/podman/docker; ctr has no detached run that returns this way)

Then the memory of an idle monitor process per running container: 5
containers of `sleep 60` each, and for each the RSS and PSS (from
/proc/PID/smaps_rollup) of capsa-shim (found through the container's id in
its command line), of conmon (podman's .State.ConmonPid), and of
containerd-shim-runc-v2 (the parent of the task's pid, for ctr run -d and for
docker). PSS divides shared pages among the processes that map them, so with
5 alike processes it is below RSS.

Ratio = peer median / capsa median: above 1 means capsa is faster.

Everything runs in a private mount namespace (the script re-executes itself
under `unshare --mount --propagation private`), so no mount made here is
seen on the host. Daemons are started in sessions of their own and stopped
by their pids. At the end (also on an error, Ctrl-C or SIGTERM) every
container each tool has is removed, images too, the daemons are stopped,
whatever is still mounted under the temporary directories is unmounted, the
cgroup parents this run gave podman, docker and containerd are removed
(only empty ones), and the temporary directories are removed.
"""

import argparse
import glob
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

import harness
from harness import REPO, Table, error_line, loadavg, log, run, stop_group

BUSYBOX_BUNDLE = os.path.join(REPO, "scripts", "busybox-bundle")
TOOLS = ("capsa", "podman", "docker", "ctr")
LABELS = {"capsa": "capsa", "podman": "podman", "docker": "docker", "ctr": "ctr (containerd)"}
MONITORS = {"capsa": "capsa-shim", "podman": "conmon", "docker": "containerd-shim-runc-v2 (docker)",
            "ctr": "containerd-shim-runc-v2 (ctr)"}
NS_MARK = "CAPSA_BENCH_RUN_NS"
CTR_NS = "capsabench"
CTR_IMAGE = "docker.io/library/busybox:latest"
PODMAN_IMAGE = "localhost/bench/busybox:latest"
MEM_CONTAINERS = 5
CONTAINERD_PLUGINS_OFF = ("io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                          "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                          "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
                          "io.containerd.internal.v1.tracing")


# -- processes


def run_detached(argv: list[str], env: dict | None = None, timeout: float = 120) -> tuple[int, str]:
    """Like run(), for commands that leave a process behind that keeps inherited
    pipes open (a shim): stdout and stderr go to a temporary file."""
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except OSError as e:
            return 127, str(e)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            rc = 124
        out.seek(0)
        return rc, out.read()


def iptables_chains() -> set[tuple[str, str]]:
    from capsa.network import firewall

    return {(table, chain) for table, chains in firewall.Tables.read().chains.items() for chain in chains}


def read_proc(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def ppid_of(pid: int) -> int:
    stat = read_proc(pid, "stat")
    return int(stat.rsplit(")", 1)[1].split()[1]) if stat else 0


def rss_pss(pid: int) -> tuple[int, int] | None:
    """RSS and PSS of PID in KiB, from smaps_rollup."""
    values = {}
    for line in read_proc(pid, "smaps_rollup").splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    return (values["Rss"], values["Pss"]) if len(values) == 2 else None


# -- the bench


class Bench(harness.Bench):
    def __init__(self, workdir: str, statedir: str, runs: int, parallel: int):
        super().__init__(workdir, runs)  # workdir: stores, configuration, logs, hyperfine's JSON
        self.statedir = statedir  # short paths under /run: capsa's state, docker's exec root, sockets
        self.parallel = parallel
        self.tag = os.path.basename(workdir)  # capsa-run-XXXX: names cgroup parents
        self.memory: dict[str, dict | str] = {}
        self.capsa_root = os.path.join(workdir, "capsa")
        self.capsa_ids: set[str] = set()  # every capsa container started here
        self.conf = os.path.join(workdir, "conf")
        os.makedirs(self.conf)
        self.podman_dir = os.path.join(workdir, "podman")
        self.podman_cgroup = f"/{self.tag}-podman"
        self.docker_cgroup = f"/{self.tag}-docker"
        self.docker_sock = f"/tmp/bench-docker-{self.tag[-8:]}.sock"
        self.docker_used = False
        self.chains_before = iptables_chains()  # netavark's, which podman leaves, are removed at the end
        self.containerd_sock = os.path.join(statedir, "containerd.sock")
        self.containerd_used = False
        # CAPSA_STATE is statedir itself: shim socket paths hold a 64-hex id and must fit in 108 bytes.
        self.env = {**os.environ, "CAPSA_STATE": statedir,
                    "CONTAINERS_CONF": os.path.join(self.conf, "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": os.path.join(self.conf, "storage.conf"),
                    "DOCKER_CONFIG": os.path.join(self.conf, "docker-cli")}
        self.env.pop("CAPSA_ROOT", None)
        self.env.pop("DOCKER_HOST", None)
        os.makedirs(self.env["DOCKER_CONFIG"])
        with open(os.path.join(self.env["DOCKER_CONFIG"], "config.json"), "w") as f:
            f.write("{}\n")  # podman reads DOCKER_CONFIG too, and fails without this file

    # command prefixes (sh)

    def capsa_cmd(self) -> str:
        return shlex.join([self.capsa, "--root", self.capsa_root])

    def podman(self) -> str:
        d = self.podman_dir
        return shlex.join(["podman", "--root", f"{d}/root", "--runroot", f"{d}/runroot", "--tmpdir", f"{d}/tmp",
                           "--network-config-dir", f"{d}/networks", "--storage-driver", "overlay",
                           "--cgroup-manager", "cgroupfs", "--events-backend", "file"])

    def docker(self) -> str:
        return shlex.join(["docker", "-H", f"unix://{self.docker_sock}"])

    def ctr(self) -> str:
        return shlex.join(["ctr", "--address", self.containerd_sock, "-n", CTR_NS])

    def sh(self, cmd: str, timeout: float = 300) -> tuple[int, str]:
        return run(cmd, env=self.env, shell=True, timeout=timeout)

    # setup

    def build_image(self) -> str:
        """The busybox rootfs and a tarball of it; returns the bundle directory."""
        bundle = os.path.join(self.workdir, "busybox")
        rc, out = run([BUSYBOX_BUNDLE, bundle, "true"], timeout=300)
        if rc:
            raise RuntimeError(f"busybox-bundle: {error_line(out)}")
        with tarfile.open(os.path.join(bundle, "rootfs.tar"), "w") as tar:
            tar.add(os.path.join(bundle, "rootfs"), arcname=".")
        return bundle

    def setup(self, tool: str, bundle: str) -> str:
        """Put the image into TOOL's store and run it once; '' if that worked, else why not."""
        try:
            if tool == "capsa":
                if not self.capsa:
                    return "capsa not found (.venv/bin/capsa or on PATH)"
                steps = [f"{self.capsa_cmd()} import {shlex.quote(bundle + '/rootfs')} busybox:latest"]
            elif tool == "podman":
                steps = [self.setup_podman(bundle)]
            elif tool == "docker":
                self.start_docker()
                steps = [f"{self.docker()} import {shlex.quote(bundle + '/rootfs.tar')} busybox:latest"]
            elif tool == "ctr":
                self.start_containerd()
                archive = os.path.join(self.workdir, "busybox-docker-archive.tar")
                steps = [(f"{self.capsa_cmd()} save --format docker-archive -o {shlex.quote(archive)} "
                          "busybox:latest"),
                         f"{self.ctr()} images import {shlex.quote(archive)}"]
            else:
                raise ValueError(tool)
        except RuntimeError as e:
            return str(e)
        for cmd in steps:
            rc, out = self.sh(cmd)
            if rc:
                return error_line(out) if out.strip() else f"exit status {rc}"
        rc, out = self.sh(self.run_rm(tool, smoke=True))
        if rc:
            return f"run: {error_line(out) if out.strip() else f'exit status {rc}'}"
        return ""

    def setup_podman(self, bundle: str) -> str:
        for sub in ("root", "runroot", "tmp", "networks", "copytmp"):
            os.makedirs(os.path.join(self.podman_dir, sub), exist_ok=True)
        nofile = harness.hard_limit(resource.RLIMIT_NOFILE)
        nproc = harness.hard_limit(resource.RLIMIT_NPROC, harness.pid_max())
        # As bench/runtime.py: the host's hard limits (podman's default nofile cannot be
        # set without CAP_SYS_RESOURCE), file locks, runc (crun refuses this hybrid host).
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            f.write("[containers]\n"
                    f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    "\n[engine]\n"
                    'runtime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n'
                    'lock_type = "file"\n'
                    f"image_copy_tmp_dir = {json.dumps(os.path.join(self.podman_dir, 'copytmp'))}\n")
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write("[storage]\n"
                    'driver = "overlay"\n'
                    f"graphroot = {json.dumps(os.path.join(self.podman_dir, 'root'))}\n"
                    f"runroot = {json.dumps(os.path.join(self.podman_dir, 'runroot'))}\n")
        self.notes.append(f"podman: runc, cgroupfs with --cgroup-parent {self.podman_cgroup}, events to a file, "
                          f"file locks, default_ulimits nofile={nofile} nproc={nproc} (the host's hard limits)")
        return f"{self.podman()} import --quiet {shlex.quote(bundle + '/rootfs.tar')} bench/busybox"

    def start_docker(self) -> None:
        self.docker_used = True
        self.docker0_before = os.path.exists("/sys/class/net/docker0")
        root, execroot = os.path.join(self.workdir, "docker"), os.path.join(self.statedir, "docker")
        os.makedirs(root)
        os.makedirs(execroot)
        daemon_json = os.path.join(self.conf, "daemon.json")
        with open(daemon_json, "w") as f:
            f.write("{}\n")
        self.dockerd = self.start_service(
            "dockerd", ["dockerd", "--config-file", daemon_json, "--data-root", root,
                        "--exec-root", execroot, "--host", f"unix://{self.docker_sock}",
                        "--pidfile", os.path.join(self.statedir, "docker.pid"),
                        "--iptables=false", "--ip-masq=false",
                        "--cgroup-parent", self.docker_cgroup, "--storage-driver", "overlay2"],
            os.path.join(self.workdir, "dockerd.log"), env=self.env)
        self.wait_ready(self.dockerd, lambda: os.path.exists(self.docker_sock) and self.sh(
            f"{self.docker()} version", timeout=10)[0] == 0, f"at {self.docker_sock}", timeout=60)

    def start_containerd(self) -> None:
        self.containerd_used = True
        base = os.path.join(self.workdir, "containerd")
        root, state = os.path.join(base, "root"), os.path.join(self.statedir, "containerd")
        os.makedirs(root)
        os.makedirs(state)
        cfg = os.path.join(self.conf, "containerd.toml")
        with open(cfg, "w") as f:
            f.write("version = 2\n"
                    f"root = {json.dumps(root)}\nstate = {json.dumps(state)}\n"
                    f"disabled_plugins = {json.dumps(list(CONTAINERD_PLUGINS_OFF))}\n"
                    f"[grpc]\n  address = {json.dumps(self.containerd_sock)}\n"
                    '[ttrpc]\n  address = ""\n'
                    '[debug]\n  address = ""\n  level = "warn"\n'
                    '[metrics]\n  address = ""\n'
                    '[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n'
                    f"    path = {json.dumps(os.path.join(base, 'opt'))}\n")
        self.containerd = self.start_service(
            "containerd", ["containerd", "--root", root, "--state", state, "--address", self.containerd_sock,
                           "--config", cfg],
            os.path.join(self.workdir, "containerd.log"))
        self.wait_ready(self.containerd, lambda: os.path.exists(self.containerd_sock) and run(
            ["ctr", "--address", self.containerd_sock, "version"], timeout=10)[0] == 0,
            f"at {self.containerd_sock}", timeout=60)

    # the commands

    def engine_run(self, tool: str, flags: str, args: str) -> str:
        """`run FLAGS IMAGE ARGS` for capsa, podman or docker (podman in its own cgroup parent)."""
        if tool == "capsa":
            return f"{self.capsa_cmd()} run {flags} busybox {args}"
        if tool == "podman":
            return f"{self.podman()} run {flags} --cgroup-parent {self.podman_cgroup} bench/busybox {args}"
        if tool == "docker":
            return f"{self.docker()} run {flags} busybox {args}"
        raise ValueError(tool)

    def run_rm(self, tool: str, smoke: bool = False) -> str:
        if tool != "ctr":
            return self.engine_run(tool, "--rm --network none", "true")
        if smoke:
            return f"{self.ctr()} run --rm {CTR_IMAGE} smoke true"
        c = shlex.quote(self.counter)
        return f"read n < {c}; n=$((n+1)); echo $n > {c}; exec {self.ctr()} run --rm {CTR_IMAGE} c$n true"

    def run_rm_bridge(self, tool: str) -> str:
        return self.engine_run(tool, "--rm", "true")  # each engine's default network

    def run_d(self, tool: str, args: str = "sleep 60") -> str:
        return self.engine_run(tool, "-d --network none", args)

    def remove_all(self, tool: str) -> str:
        """The shell command that removes every container TOOL has here (running or not)."""
        if tool == "capsa":
            return f'ids=$({self.capsa_cmd()} ps -aq --no-trunc); [ -z "$ids" ] || {self.capsa_cmd()} rm -f $ids'
        if tool == "podman":
            return f"{self.podman()} rm --all --force --time 0"
        if tool == "docker":
            return f'ids=$({self.docker()} ps -aq); [ -z "$ids" ] || {self.docker()} rm -f $ids'
        if tool == "ctr":
            c = self.ctr()
            return (f"for t in $({c} tasks ls -q); do {c} tasks kill -s KILL $t; done; sleep 0.5; "
                    f"for t in $({c} tasks ls -q); do {c} tasks delete -f $t; done; "
                    f"for x in $({c} containers ls -q); do {c} containers rm $x; done; true")
        raise ValueError(tool)

    # timing

    def time_run_rm(self, tools: list[str]) -> None:
        self.counter = os.path.join(self.workdir, "ctr.counter")
        with open(self.counter, "w") as f:
            f.write("0\n")
        for tool in tools:
            if tool not in self.failures:
                self.results[("run --rm", tool)] = self.hyperfine(f"{tool} run --rm", self.run_rm(tool), warmup=2)
        for tool in tools:
            if tool not in self.failures and tool != "ctr":
                self.results[("run --rm bridge", tool)] = self.hyperfine(
                    f"{tool} run --rm bridge", self.run_rm_bridge(tool), warmup=2)

    def time_parallel(self, tools: list[str]) -> None:
        row = f"{self.parallel} x run -d"
        runs = max(3, min(5, self.runs // 3))
        for tool in tools:
            if tool in self.failures or tool == "ctr":
                continue
            one = self.run_d(tool)
            command = f"pids=; for i in $(seq {self.parallel}); do {one} >/dev/null & pids=\"$pids $!\"; done; " \
                      "fail=0; for p in $pids; do wait $p || fail=1; done; exit $fail"
            # Each run must have started all N (the next --prepare removes them).
            check = (f"{command} && test $({self.count(tool)}) -eq {self.parallel}")
            rc, out = self.sh(f"{self.remove_all(tool)}; {check}")
            if rc:
                self.results[(row, tool)] = f"fails: {error_line(out)}"
                continue
            self.remember_capsa_ids(tool)
            self.results[(row, tool)] = self.hyperfine(f"{tool} {row}", command, prepare=self.remove_all(tool),
                                                       runs=runs, warmup=0)
            self.remember_capsa_ids(tool)
            rc, out = self.sh(self.remove_all(tool))
            if rc:
                log(f"bench: removing {tool}'s containers: {error_line(out)}")
        self.notes.append(f"{row}: medians of {runs} runs, no warmup; {self.parallel} `run -d --network none busybox sleep 60` "
                          "started at once from one shell, timed until every one has returned; the previous "
                          "run's containers removed in --prepare")

    def count(self, tool: str) -> str:
        if tool == "capsa":
            return f"{self.capsa_cmd()} ps -q | wc -l"
        if tool == "podman":
            return f"{self.podman()} ps -q | wc -l"
        if tool == "docker":
            return f"{self.docker()} ps -q | wc -l"
        raise ValueError(tool)

    def remember_capsa_ids(self, tool: str) -> None:
        if tool == "capsa":
            rc, out = self.sh(f"{self.capsa_cmd()} ps -aq --no-trunc")
            self.capsa_ids.update(out.split() if rc == 0 else [])

    # memory

    def measure_memory(self, tools: list[str]) -> None:
        for tool in tools:
            if tool in self.failures:
                continue
            try:
                pids = self.monitors(tool)
            except RuntimeError as e:
                self.memory[tool] = f"fails: {e}"
                continue
            time.sleep(2)  # idle
            values = [v for v in (rss_pss(p) for p in pids) if v]
            if len(values) != len(pids) or not values:
                self.memory[tool] = "fails: could not read smaps_rollup"
            else:
                self.memory[tool] = {"n": len(values), "rss": sum(v[0] for v in values) / len(values),
                                     "pss": sum(v[1] for v in values) / len(values),
                                     "pids": pids, "comm": read_proc(pids[0], "comm").strip()}
                m = self.memory[tool]
                log(f"bench: {MONITORS[tool]}: {m['n']} x RSS {m['rss'] / 1024:.1f} MiB, "
                    f"PSS {m['pss'] / 1024:.1f} MiB")
            rc, out = self.sh(self.remove_all(tool))
            if rc:
                log(f"bench: removing {tool}'s containers: {error_line(out)}")

    def monitors(self, tool: str) -> list[int]:
        """Start MEM_CONTAINERS `sleep 60` containers with TOOL; the pids of their monitors."""
        pids = []
        for i in range(MEM_CONTAINERS):
            if tool == "ctr":
                cmd = f"{self.ctr()} run -d {CTR_IMAGE} mem{i} sleep 60"
            else:
                cmd = self.run_d(tool)
            rc, out = run_detached(["sh", "-c", cmd], env=self.env)
            if rc:
                raise RuntimeError(error_line(out))
            cid = out.split()[-1] if out.split() else f"mem{i}"
            if tool == "capsa":
                self.capsa_ids.add(cid)
                pid = self.capsa_shim_pid(cid)
            elif tool == "podman":
                pid = self.inspect_pid(f"{self.podman()} inspect --format '{{{{.State.ConmonPid}}}}' {cid}")
            elif tool == "docker":
                pid = ppid_of(self.inspect_pid(f"{self.docker()} inspect --format '{{{{.State.Pid}}}}' {cid}"))
            else:
                rc, out = self.sh(f"{self.ctr()} tasks ls")
                task = next((line.split()[1] for line in out.splitlines()[1:] if line.split()[:1] == [cid]), "0")
                pid = ppid_of(int(task))
            name = read_proc(pid, "cmdline").replace("\0", " ") if pid > 1 else ""
            want = {"capsa": "capsa", "podman": "conmon", "docker": "containerd-shim-runc-v2",
                    "ctr": "containerd-shim-runc-v2"}[tool]
            if want not in name:
                raise RuntimeError(f"the monitor of {cid} (pid {pid}) is not {want}: {name[:80]!r}")
            pids.append(pid)
        return pids

    def stop_capsa_leftovers(self) -> None:
        """Last resort: capsa-shims of this run's store (their --bundle is under it) that
        are still there after `capsa rm -f`: SIGKILL their children (the containers), then them."""
        prefix = self.capsa_root + "/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            args = read_proc(int(entry), "cmdline").split("\0")
            if not any("capsa-shim" in a or "capsa.shim" in a for a in args[:3]) or "--bundle" not in args:
                continue
            bundle = args[args.index("--bundle") + 1] if args.index("--bundle") + 1 < len(args) else ""
            if not bundle.startswith(prefix):
                continue
            shim = int(entry)
            log(f"bench: capsa-shim {shim} still running after capsa rm -f; killing it and its children")
            for child in [int(p) for p in os.listdir("/proc") if p.isdigit() and ppid_of(int(p)) == shim]:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(1)
            try:
                os.kill(shim, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def capsa_shim_pid(self, cid: str) -> int:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                args = read_proc(int(entry), "cmdline").split("\0")
                if any("capsa-shim" in a or "capsa.shim" in a for a in args[:3]) and cid in args:
                    return int(entry)
        raise RuntimeError(f"no capsa-shim process with --id {cid}")

    def inspect_pid(self, cmd: str) -> int:
        rc, out = self.sh(cmd)
        try:
            return int(out.strip()) if rc == 0 else 0
        except ValueError:
            return 0

    # cleanup

    def stop(self) -> None:
        """Remove every container and image, stop the daemons by pid, unmount, remove cgroups."""
        if self.capsa and os.path.isdir(self.capsa_root):
            self.remember_capsa_ids("capsa")
            rc, out = self.sh(self.remove_all("capsa"), timeout=120)
            if rc:
                log(f"bench: capsa rm: {error_line(out)}")
            rc, out = self.sh(f"{self.capsa_cmd()} network prune -f", timeout=60)  # the bridge and its rules
            if rc:
                log(f"bench: capsa network prune: {error_line(out)}")
        if os.path.exists(self.env["CONTAINERS_CONF"]):
            for cmd in (self.remove_all("podman"), f"{self.podman()} rmi --all --force"):
                rc, out = self.sh(cmd, timeout=120)
                if rc:
                    log(f"bench: {cmd.split()[-3:]}: {error_line(out)}")
        if self.docker_used and self.dockerd.alive():
            self.sh(self.remove_all("docker"), timeout=120)
        if self.containerd_used and self.containerd.alive():
            self.sh(self.remove_all("ctr"), timeout=120)
            self.sh(f"{self.ctr()} images rm --sync {CTR_IMAGE}", timeout=60)
        self.stop_capsa_leftovers()
        self.stop_services()
        for path in (self.workdir, self.statedir):
            harness.unmount_under(path)
        for parent in (self.podman_cgroup, self.docker_cgroup, f"/{CTR_NS}"):
            harness.remove_cgroup(parent)
        # capsa removes a container's cgroup when the container is removed; check that it did.
        for cid in self.capsa_ids:
            left = glob.glob(f"/sys/fs/cgroup/*/capsa/{cid}")
            if left:
                log(f"bench: capsa left the cgroup {left[0]} (and {len(left) - 1} more); removing")
                for path in left:
                    try:
                        os.rmdir(path)
                    except OSError as e:
                        log(f"bench: cannot remove {path}: {e.strerror}")
        if os.path.exists(self.docker_sock):
            os.unlink(self.docker_sock)
        if self.docker_used and not self.docker0_before and os.path.exists("/sys/class/net/docker0"):
            run(["ip", "link", "delete", "docker0"])
        self.remove_netavark_chains()

    def remove_netavark_chains(self) -> None:
        """podman's netavark keeps its shared chains after its last container;
        the ones this run made go, as capsa's own go with `network prune`."""
        from capsa.network import firewall

        tables = firewall.Tables.read()
        batch = {}
        for table, chains in tables.chains.items():
            made = [c for c in chains if c.startswith("NETAVARK") and (table, c) not in self.chains_before]
            if made:
                batch[table] = firewall.drop_chains(tables, table, made)
        firewall.restore(batch)


# -- output


def tables(bench: Bench, tools: list[str]) -> list[Table]:
    rows = harness.timing_rows(bench, ["run --rm", "run --rm bridge", f"{bench.parallel} x run -d"], tools, LABELS)
    mem = [["monitor (per running container)", "n", "RSS MiB", "PSS MiB"]]
    for tool in tools:
        m = bench.memory.get(tool)
        if isinstance(m, dict):
            mem.append([MONITORS[tool], str(m["n"]), f"{m['rss'] / 1024:.1f}", f"{m['pss'] / 1024:.1f}"])
        elif m:
            mem.append([MONITORS[tool], m, "", ""])
    return [rows, Table(mem)]


# -- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time capsa run against podman, docker and ctr.")
    p.add_argument("--runs", type=int, default=15, help="timed runs of run --rm per tool (default 15)")
    p.add_argument("--parallel", type=int, default=20, help="containers started at once (default 20)")
    p.add_argument("--only", default=",".join(TOOLS), help=f"comma-separated tools (default {','.join(TOOLS)})")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (stores emptied)")
    p.add_argument("--markdown", action="store_true", help="print the results as Markdown")
    args = p.parse_args()
    args.only = harness.tool_list(p, args.only, TOOLS)
    if args.runs < 2 or args.parallel < 1:
        p.error("--runs must be at least 2, --parallel at least 1")
    return args


def main() -> int:
    args = parse_args()
    harness.start_as_root(("hyperfine", "unshare"), NS_MARK, __file__)
    started = time.monotonic()
    header = harness.machine(("podman", "dockerd", "containerd", "runc", "conmon", "hyperfine"))
    hidden = harness.hide_blob_info_cache()
    workdir = tempfile.mkdtemp(prefix="capsa-run-", dir="/var/tmp")
    statedir = tempfile.mkdtemp(prefix="cb-", dir="/run")  # short: shim socket paths hold a 64-hex id
    bench = Bench(workdir, statedir, args.runs, args.parallel)
    interrupted = False
    try:
        log(f"bench: building the busybox image in {workdir}")
        bundle = bench.build_image()
        for tool in args.only:
            log(f"bench: setting up {tool}")
            why = bench.setup(tool, bundle)
            if why:
                bench.failures[tool] = why
                log(f"bench:   {tool} left out: {why}")
        bench.remember_capsa_ids("capsa")
        bench.time_run_rm(args.only)
        bench.time_parallel(args.only)
        bench.measure_memory(args.only)
    except KeyboardInterrupt:
        interrupted = True
        log("bench: interrupted; cleaning up")
    except RuntimeError as e:
        log(f"bench: {e}")
        interrupted = True
    finally:
        bench.stop()
        if args.keep:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(statedir, ignore_errors=True)
        subprocess.run(["umount", hidden], check=False)
    if interrupted:
        return 1
    log(f"bench: done in {time.monotonic() - started:.0f} s")
    extra = [f"run --rm: medians of {args.runs} runs (hyperfine --warmup 2 --runs {args.runs}); peer/capsa = "
             "peer median / capsa median of the same row: above 1 means capsa is faster"]
    extra += bench.notes
    extra.append(f"memory: {MEM_CONTAINERS} idle `sleep 60` containers per tool, the mean RSS and PSS "
                 "(/proc/PID/smaps_rollup) of their monitor processes, 2 s after the last one started")
    extra.append(f"load average at end: {loadavg()}")
    (harness.print_markdown if args.markdown else harness.print_plain)(tables(bench, args.only), header, extra)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
