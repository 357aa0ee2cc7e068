#!/usr/bin/env python3
"""Time capsa-runtime against runc and crun with hyperfine, in one run.

Usage (as root): bench/runtime.py [--runs N] [--only capsa,runc] [--rows ROWS] [--keep] [--markdown]

Every runtime runs the same busybox bundle (scripts/busybox-bundle DIR
/bin/true: the default `spec` config, new pid/mount/ipc/uts/network
namespaces, no terminal), each with its own temporary --root.  Rows:

  run      create+start+wait+delete in one command
  create   `create` alone (the previous container is deleted in --prepare)
  start    `start` alone (the container is created in --prepare)
  delete   `delete` alone (created, started and waited for stopped in --prepare)
  exec     `exec <id> /bin/true` into one long-running `sleep` container,
           created and started before the cell and force-deleted after it
  50 x run one measured shell loop running 50 containers with distinct ids
  podman run  `podman --runtime /abs/path/to/RT run --rm --network none
           --cgroup-parent /capsa-bench-XXXX IMAGE /bin/true`, one podman
           setup and image for all runtimes

Each cell is one hyperfine invocation; the median of its --export-json is
quoted.  Container ids come from a counter file that --prepare advances and
the measured command reads with the `read` builtin (no extra process).
A runtime is run once on the bundle before it is timed; one that fails is
reported as "fails: <its error line>" and skipped.  At the end every
container left in each temporary --root is force-deleted and the temporary
directory is removed (unless --keep).

crun on a hybrid cgroup host: crun refuses to create any container when
cgroup2 is mounted at /sys/fs/cgroup/unified with a controller in it
("cgroups in hybrid mode not supported, drop all controllers from
cgroupv2"), whatever --cgroup-manager says (the check comes before the
manager is chosen).  It is then timed in a private mount namespace in which
/sys/fs/cgroup/unified is unmounted, where it sees a plain cgroup v1 host
and still creates real cgroups; that column is marked.  As a last resort it
is tried with --cgroup-manager=disabled, which is labelled "cgroups
disabled".

podman: its --root, --runroot, --tmpdir and --network-config-dir are in the
temporary directory, with --cgroup-manager cgroupfs and --events-backend file.
CONTAINERS_CONF points to a containers.conf written there: default_ulimits
set to the host's hard limits for nofile and nproc, nproc at most pid_max
(podman's default nofile is 1048576, and without CAP_SYS_RESOURCE the
runtime cannot raise a hard limit; podman itself lowers its own RLIMIT_NPROC
hard limit to pid_max when it loads containers.conf, so an nproc above that
fails the same way), and lock_type "file" (locks in --tmpdir instead of the
host-wide /dev/shm/libpod_lock).  CONTAINERS_STORAGE_CONF points to a storage.conf
there (overlay driver), so the host's is not read.  The image is `podman
import` of a tarball of the bundle's rootfs (no network needed); the import
runs in a private mount namespace with a tmpfs over /var/lib/containers (or
/var/lib when that does not exist) so that containers/image's blob-info
cache, which has no option, is not written on the host.  The runtimes keep
their state under their default roots (podman does not pass --runtime-flag
root=... to `delete`, so that would leave state behind); `--rm` deletes it.
crun runs under podman the same way it runs alone (the whole hyperfine for
it in the private mount namespace); what podman says with crun as is goes
into the notes.  At the end: `podman rm --all --force`, `podman rmi --all
--force`, any mount left under the temporary directory is unmounted, and the
cgroup parent is removed from every hierarchy.  That parent is passed with
`--cgroup-parent /capsa-bench-XXXX` (the temporary directory's name) instead
of podman's default /libpod_parent, which other podman users on the host
share (conmon's cgroup, <parent>/conmon, would otherwise stay behind there).

crun 1.8 also refuses an ociVersion that does not contain "1.0"
("unknown version specified"), so the shared bundle's ociVersion is set to
1.0.2 for every runtime, whatever `capsa-runtime spec` wrote (the notes say
what that was).
"""

import argparse
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
from harness import REPO, Table, error_line, hard_limit, loadavg, log, pid_max

BUSYBOX_BUNDLE = os.path.join(REPO, "scripts", "busybox-bundle")
RUNTIMES = ("capsa", "runc", "crun")
PROGRAMS = {"capsa": "capsa-runtime", "runc": "runc", "crun": "crun"}
ROWS = ("run", "create", "start", "delete", "exec", "50 x run", "podman run")
EXEC_ID = "exec-target"  # the long-running container that the exec row execs into
PODMAN_IMAGE = "localhost/capsa-bench-busybox:latest"
BUNDLE_OCI_VERSION = "1.0.2"
UNIFIED = "/sys/fs/cgroup/unified"
# Runs the rest of its arguments in a private mount namespace without cgroup2.
HIDE_UNIFIED = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", f'umount {UNIFIED} && exec "$@"', "sh"]


class Runtime:
    """One runtime as benchmarked: how to call it and where its state lives."""

    def __init__(self, name: str, root: str):
        self.name = name
        self.root = root
        self.program = shutil.which(PROGRAMS[name])
        self.global_flags: list[str] = []
        self.wrapper: list[str] = []  # prefix for every process that runs it
        self.label = ""  # how it had to be run, if not plainly
        self.failure = ""  # "fails: ..." when it cannot run the bundle
        self.attempts: list[str] = []  # what each variant that failed said

    def argv(self, *args: str) -> list[str]:
        return [self.program, "--root", self.root, *self.global_flags, *args]

    def sh(self) -> str:
        """The runtime's command prefix, quoted for sh."""
        return shlex.join(self.argv())


class Podman:
    """podman with all its state in one temporary directory."""

    def __init__(self, workdir: str):
        self.dir = os.path.join(workdir, "podman")
        self.program = shutil.which("podman")
        self.paths = {name: os.path.join(self.dir, name)
                      for name in ("root", "runroot", "tmp", "networks", "copytmp")}
        self.env = {"CONTAINERS_CONF": os.path.join(self.dir, "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": os.path.join(self.dir, "storage.conf")}
        self.ulimits: list[str] = []
        # Its own cgroup parent (instead of /libpod_parent, which other podman
        # users on the host share), so that it can be removed at the end.
        self.cgroup_parent = "/" + os.path.basename(workdir)
        self.failure = ""  # "fails: ..." when it cannot be set up
        self.as_is: dict[str, str] = {}  # runtime -> what podman said with it run without its wrapper
        self.used = False

    def argv(self, rt: Runtime | None = None) -> list[str]:
        p = self.paths
        argv = [self.program, "--root", p["root"], "--runroot", p["runroot"], "--tmpdir", p["tmp"],
                "--network-config-dir", p["networks"], "--storage-driver", "overlay",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        if rt:
            argv += ["--runtime", rt.program]
            argv += [f"--runtime-flag={flag.lstrip('-')}" for flag in rt.global_flags]
        return argv

    def run_argv(self, rt: Runtime) -> list[str]:
        return self.argv(rt) + ["run", "--rm", "--network", "none", "--cgroup-parent", self.cgroup_parent,
                                PODMAN_IMAGE, "/bin/true"]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def sh_env(self) -> str:
        return " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())


def cgroup_layout() -> tuple[str, bool]:
    """Describe the host's cgroup layout; True when it is hybrid with cgroup2 in use."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mounts[fields[4]] = (fields[sep + 1], fields[sep + 3])
    if mounts.get("/sys/fs/cgroup", ("",))[0] == "cgroup2":
        return "cgroup v2 (unified)", False
    v1 = sorted(os.path.basename(p) for p, (fs, _) in mounts.items()
                if fs == "cgroup" and os.path.dirname(p) == "/sys/fs/cgroup")
    if mounts.get(UNIFIED, ("",))[0] == "cgroup2":
        try:
            with open(os.path.join(UNIFIED, "cgroup.controllers")) as f:
                controllers = f.read().split()
        except OSError:
            controllers = []
        text = (f"hybrid: cgroup v1 ({', '.join(v1)}) + cgroup2 at {UNIFIED} "
                f"(controllers: {', '.join(controllers) or 'none'})")
        return text, bool(controllers)
    return f"cgroup v1 ({', '.join(v1)})", False


def launcher_python() -> str:
    """The Python that capsa-runtime's launcher runs, from its shebang."""
    path = shutil.which("capsa-runtime")
    if not path:
        return "capsa-runtime not on PATH"
    with open(path, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    if not first.startswith("#!"):
        return f"{path} has no shebang"
    interpreter = first[2:].split()
    if os.path.basename(interpreter[0]) == "env":
        interpreter = interpreter[1:]
    try:
        out = subprocess.run([interpreter[0], "--version"], capture_output=True, text=True)
        version = (out.stdout or out.stderr).strip()
    except OSError as e:
        version = f"cannot run: {e.strerror}"
    return f"{version} (`{first[2:]}`)"


def build_bundle(path: str) -> str:
    """Build the shared bundle; return the ociVersion `capsa-runtime spec` wrote."""
    out = subprocess.run([BUSYBOX_BUNDLE, path, "/bin/true"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: cannot build the bundle: {error_line(out.stderr + out.stdout)}")
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    written = str(config.get("ociVersion"))
    config["ociVersion"] = BUNDLE_OCI_VERSION
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return written


def build_sleep_bundle(bundle: str, path: str) -> None:
    """A bundle like `bundle`, sharing its (read-only) rootfs, whose process sleeps."""
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["process"]["args"] = ["sleep", "1000000"]
    config["root"]["path"] = os.path.join(bundle, config["root"]["path"])
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def start_sleeper(rt: Runtime, bundle: str, errors: str) -> str:
    """Create and start EXEC_ID from the sleep bundle; '' on success, else the error line."""
    for args in (("create", "--bundle", bundle, EXEC_ID), ("start", EXEC_ID)):
        with open(errors, "a") as err:
            try:
                # No pipes: the container's init inherits these and outlives the call.
                out = subprocess.run(rt.wrapper + rt.argv(*args), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err, timeout=60)
                failed = out.returncode != 0 and f"exit status {out.returncode}"
            except subprocess.TimeoutExpired:
                failed = "did not finish within 60 s"
        if failed:
            with open(errors) as f:
                said = f.read().strip()
            return f"{args[0]} of the sleep container: {error_line(said) if said else failed}"
    return ""


def setup_podman(pm: Podman, bundle: str) -> None:
    """Write podman's configuration and import the image; set pm.failure if that fails."""
    if not pm.program:
        pm.failure = "fails: podman not found on PATH"
        return
    for path in pm.paths.values():
        os.makedirs(path, exist_ok=True)
    # podman (containers/common) lowers its own RLIMIT_NPROC to pid_max when it
    # loads containers.conf, so nproc must not exceed that either.
    nofile = hard_limit(resource.RLIMIT_NOFILE)
    nproc = hard_limit(resource.RLIMIT_NPROC, pid_max())
    pm.ulimits = [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]
    with open(pm.env["CONTAINERS_CONF"], "w") as f:
        f.write("[containers]\n"
                f"default_ulimits = {json.dumps(pm.ulimits)}\n"
                "\n[engine]\n"
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                'lock_type = "file"\n'
                f"image_copy_tmp_dir = {json.dumps(pm.paths['copytmp'])}\n")
    with open(pm.env["CONTAINERS_STORAGE_CONF"], "w") as f:
        f.write("[storage]\n"
                'driver = "overlay"\n'
                f"graphroot = {json.dumps(pm.paths['root'])}\n"
                f"runroot = {json.dumps(pm.paths['runroot'])}\n")
    tarball = os.path.join(pm.dir, "rootfs.tar")
    with tarfile.open(tarball, "w") as tar:
        tar.add(os.path.join(bundle, "rootfs"), arcname=".")
    pm.used = True
    # containers/image writes its blob-info cache to /var/lib/containers/cache
    # whatever --root says; hide it behind a tmpfs for the import.
    hide = harness.blob_info_cache_dir()
    wrapper = ["unshare", "--mount", "--propagation", "private", "--",
               "sh", "-c", f'mount -t tmpfs tmpfs {shlex.quote(hide)} && exec "$@"', "sh"]
    try:
        out = subprocess.run(wrapper + pm.argv() + ["import", "--quiet", tarball, PODMAN_IMAGE],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=300, env=pm.environ())
        message = error_line(out.stderr + out.stdout) if out.returncode else ""
    except subprocess.TimeoutExpired:
        message = "podman import did not finish within 300 s"
    if message:
        pm.failure = f"fails: podman import: {message}"


def try_podman(pm: Podman, rt: Runtime, wrapper: list[str]) -> str:
    """podman run the image once with rt; '' on success, else podman's error line."""
    try:
        out = subprocess.run(wrapper + pm.run_argv(rt), stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=120, env=pm.environ())
        if out.returncode == 0:
            return ""
        return error_line(out.stderr + out.stdout) if (out.stderr + out.stdout).strip() \
            else f"exit status {out.returncode}"
    except subprocess.TimeoutExpired:
        return "did not finish within 120 s"


def check_podman(pm: Podman, rt: Runtime) -> str:
    """'' if podman runs the image with rt as rt is timed, else 'fails: ...'."""
    if pm.failure:
        return pm.failure
    if rt.wrapper or rt.global_flags:
        bare = Runtime(rt.name, rt.root)
        message = try_podman(pm, bare, [])
        if message:
            pm.as_is[rt.name] = message
            log(f"  podman with {rt.name} as is fails: {message}")
    message = try_podman(pm, rt, rt.wrapper)
    return f"fails: {message}" if message else ""


def cleanup_podman(pm: Podman, workdir: str) -> None:
    """Remove podman's containers and image, its mounts under workdir and the cgroups it made."""
    if not pm.used:
        return
    for args in (["rm", "--all", "--force", "--time", "0"], ["rmi", "--all", "--force"]):
        try:
            out = subprocess.run(pm.argv() + args, stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, timeout=120, env=pm.environ())
            if out.returncode:
                log(f"bench: podman {args[0]}: {error_line(out.stderr + out.stdout)}")
        except subprocess.TimeoutExpired:
            log(f"bench: podman {args[0]} did not finish within 120 s")
    harness.unmount_under(workdir)
    harness.remove_cgroup(pm.cgroup_parent)


def force_delete_all(rt: Runtime) -> list[str]:
    """Force-delete every container in rt's root; return the ids still there after."""
    if not rt.program or not os.path.isdir(rt.root):
        return []

    def ids() -> set[str]:
        found = {e for e in os.listdir(rt.root) if os.path.isdir(os.path.join(rt.root, e))}
        try:
            out = subprocess.run(rt.wrapper + rt.argv("list", "-q"),
                                 capture_output=True, text=True, timeout=60)
            found.update(out.stdout.split())
        except (OSError, subprocess.TimeoutExpired):
            pass
        return found

    for cid in sorted(ids()):
        subprocess.run(rt.wrapper + rt.argv("delete", "--force", cid),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return sorted(ids())


def try_run(rt: Runtime, bundle: str, cid: str) -> str:
    """Run the bundle once; return '' on success, else the runtime's error line."""
    try:
        out = subprocess.run(rt.wrapper + rt.argv("run", "--bundle", bundle, cid),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        failed = out.returncode != 0
        message = error_line(out.stderr + out.stdout) if failed else ""
        if failed and out.returncode > 0 and not (out.stderr + out.stdout).strip():
            message = f"exit status {out.returncode}"
    except subprocess.TimeoutExpired:
        message = "did not finish within 60 s"
    except OSError as e:
        message = e.strerror or str(e)
    force_delete_all(rt)
    return message


def check(rt: Runtime, bundle: str, hybrid_in_use: bool) -> None:
    """Find a way to run rt on the bundle, or set rt.failure."""
    if not rt.program:
        rt.failure = f"fails: {PROGRAMS[rt.name]} not found on PATH"
        return
    os.makedirs(rt.root, exist_ok=True)
    variants = [([], [], "")]
    if rt.name == "crun":
        if hybrid_in_use and shutil.which("unshare"):
            variants.append((HIDE_UNIFIED, [], f"in a mount namespace without {UNIFIED}"))
            variants.append((HIDE_UNIFIED, ["--cgroup-manager=disabled"],
                             f"cgroups disabled, in a mount namespace without {UNIFIED}"))
        variants.append(([], ["--cgroup-manager=disabled"], "cgroups disabled"))
    first_error = ""
    for n, (wrapper, flags, label) in enumerate(variants):
        rt.wrapper, rt.global_flags, rt.label = wrapper, flags, label
        message = try_run(rt, bundle, f"check{n}")
        if not message:
            return
        how = label or "as is"
        rt.attempts.append(f"{how}: {message}")
        first_error = first_error or message
        log(f"  {rt.name} ({how}) fails: {message}")
    rt.wrapper, rt.global_flags, rt.label = [], [], ""
    rt.failure = f"fails: {first_error}"


def commands(rt: Runtime, row: str, bundle: str, counter: str, errors: str,
             pm: Podman | None = None) -> dict[str, str]:
    """The sh snippets hyperfine runs for one cell: prepare, command, cleanup."""
    RT, B, C, E = rt.sh(), shlex.quote(bundle), shlex.quote(counter), shlex.quote(errors)
    quiet = ">/dev/null 2>&1"
    bump = f"read n < {C}; n=$((n+1)); echo $n > {C}"
    if row == "run":
        return {"prepare": bump,
                "command": f"read n < {C}; exec {RT} run --bundle {B} r$n 2>>{E}"}
    if row == "create":
        return {"prepare": f"read n < {C}; {RT} delete --force c$n {quiet}; {bump}",
                "command": f"read n < {C}; exec {RT} create --bundle {B} c$n 2>>{E}",
                "cleanup": f"read n < {C}; {RT} delete --force c$n {quiet}; true"}
    if row == "start":
        return {"prepare": f"read n < {C}; {RT} delete --force s$n {quiet}; {bump}; "
                           f"{RT} create --bundle {B} s$n 2>>{E}",
                "command": f"read n < {C}; exec {RT} start s$n 2>>{E}",
                "cleanup": f"read n < {C}; {RT} delete --force s$n {quiet}; true"}
    if row == "delete":
        wait = (f"i=0; until {RT} state d$n 2>>{E} | grep -q '\"stopped\"'; do "
                f"i=$((i+1)); if [ $i -gt 2000 ]; then echo 'd'$n' never stopped' >>{E}; exit 1; fi; "
                f"sleep 0.005; done")
        return {"prepare": f"{bump}; {RT} create --bundle {B} d$n 2>>{E} && "
                           f"{RT} start d$n 2>>{E} && {wait}",
                "command": f"read n < {C}; exec {RT} delete d$n 2>>{E}"}
    if row == "exec":
        return {"command": f"exec {RT} exec {EXEC_ID} /bin/true 2>>{E}"}
    if row == "podman run":
        return {"command": f"{pm.sh_env()} exec {shlex.join(pm.run_argv(rt))} 2>>{E}"}
    if row == "50 x run":
        return {"prepare": bump,
                "command": f"read n < {C}; for i in $(seq 50); do "
                           f"{RT} run --bundle {B} l$n-$i 2>>{E} || exit 1; done"}
    raise ValueError(row)


def measure(rt: Runtime, row: str, bundle: str, workdir: str, runs: int, warmup: int,
            pm: Podman) -> float | str:
    """Median seconds of one cell, or 'fails: ...'."""
    slug = f"{rt.name}-{row.replace(' ', '')}"
    counter = os.path.join(workdir, f"{slug}.counter")
    errors = os.path.join(workdir, f"{slug}.err")
    export = os.path.join(workdir, f"{slug}.json")
    with open(counter, "w") as f:
        f.write("0\n")
    open(errors, "w").close()
    if row == "exec":
        message = start_sleeper(rt, os.path.join(workdir, "bundle-sleep"), errors)
        if message:
            return f"fails: {message}"
    elif row == "podman run":
        message = check_podman(pm, rt)
        if message:
            return message
    snippets = commands(rt, row, bundle, counter, errors, pm)
    # The wrapper (crun's mount namespace) around hyperfine, so --prepare and --cleanup run in it too.
    rc, out = harness.hyperfine(f"{rt.name} {row}", snippets["command"], export, runs,
                                prepare=snippets.get("prepare"), cleanup=snippets.get("cleanup"),
                                warmup=warmup, wrapper=rt.wrapper)
    if rc:
        with open(errors) as f:
            said = f.read()
        return f"fails: {error_line(said or out)}"
    return harness.exported(export)["median"]


def fmt_ms(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value * 1000:.1f}"


def fmt_ratio(a: float | str | None, b: float | str | None) -> str:
    if isinstance(a, float) and isinstance(b, float) and b > 0:
        return f"{a / b:.2f}"
    return "—"


def table(results: dict[str, dict[str, float | str]], runtimes: dict[str, Runtime],
          rows_wanted: list[str]) -> Table:
    heads = []
    for name in RUNTIMES:
        mark = "*" if name in runtimes and runtimes[name].label else ""
        heads.append(f"{name}{mark} ms")
    rows = [["row", *heads, "capsa/runc", "capsa/crun"]]
    for row in rows_wanted:
        cells = {name: results.get(name, {}).get(row) for name in RUNTIMES}
        rows.append([row, *(fmt_ms(cells[n]) for n in RUNTIMES),
                     fmt_ratio(cells["capsa"], cells["runc"]), fmt_ratio(cells["capsa"], cells["crun"])])
    return Table(rows)


def notes(runtimes: dict[str, Runtime], runs: int, loop_runs: int, pm: Podman,
          spec_version: str) -> list[str]:
    out = [f"medians of {runs} runs ({loop_runs} for 50 x run, which is the total for 50 containers); "
           "ratio < 1 means capsa is faster"]
    for rt in runtimes.values():
        if rt.label:
            out.append(f"{rt.name}* ran {rt.label}, because as is it fails: {rt.attempts[0].split(': ', 1)[1]}")
        elif rt.failure:
            out.append(f"{rt.name} skipped: {rt.failure}")
    if pm.used:
        out.append(f"podman run: --root/--runroot/--tmpdir in a temporary directory, cgroupfs with "
                   f"--cgroup-parent {pm.cgroup_parent}, events to a "
                   f"file, file locks, default_ulimits {', '.join(pm.ulimits)} (the host's hard limits, "
                   f"nproc at most pid_max), "
                   f"image {PODMAN_IMAGE} imported from the bundle's rootfs")
        for name, message in pm.as_is.items():
            out.append(f"under podman, {name} as is fails too: {message}")
    out.append(f"bundle ociVersion set to {BUNDLE_OCI_VERSION} for all runtimes (`capsa-runtime spec` "
               f"wrote {spec_version}; crun 1.8 refuses any without \"1.0\" in it)")
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time capsa-runtime, runc and crun with hyperfine.")
    p.add_argument("--runs", type=int, default=30,
                   help="timed runs per cell (default 30; the 50-container row uses a third)")
    p.add_argument("--only", default=",".join(RUNTIMES),
                   help="comma-separated runtimes to time (default capsa,runc,crun)")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"comma-separated rows to time (default all: {','.join(ROWS)})")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args()
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in RUNTIMES]
    if unknown or not args.only:
        p.error(f"--only takes names from {','.join(RUNTIMES)}")
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in args.rows if r not in ROWS]
    if bad or not args.rows:
        p.error(f"--rows takes names from {','.join(ROWS)}")
    args.rows = [r for r in ROWS if r in args.rows]
    if args.runs < 2:
        p.error("--runs must be at least 2")
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    if not shutil.which("hyperfine"):
        sys.exit("bench: hyperfine not found (apt-get install hyperfine)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="capsa-bench-")
    runtimes = {name: Runtime(name, os.path.join(workdir, "roots", name)) for name in args.only}
    pm = Podman(workdir)
    results: dict[str, dict[str, float | str]] = {}
    loop_runs = min(args.runs, max(3, args.runs // 3))
    header = harness.machine(("capsa-runtime", "runc", "crun", "podman", "conmon", "hyperfine"),
                             more=[("cgroups", cgroup_layout()[0])],
                             capsa_note=f", launcher Python: {launcher_python()}")
    spec_version = "?"
    try:
        bundle = os.path.join(workdir, "bundle")
        log(f"bench: building the bundle in {bundle}")
        spec_version = build_bundle(bundle)
        if "exec" in args.rows:
            build_sleep_bundle(bundle, os.path.join(workdir, "bundle-sleep"))
        if "podman run" in args.rows:
            log(f"bench: importing {PODMAN_IMAGE} into podman storage in {pm.dir}")
            setup_podman(pm, bundle)
            if pm.failure:
                log(f"  podman {pm.failure}")
        hybrid_in_use = cgroup_layout()[1]
        for rt in runtimes.values():
            log(f"bench: checking {rt.name}")
            check(rt, bundle, hybrid_in_use)
            if rt.failure:
                results[rt.name] = {args.rows[0]: rt.failure}
            elif rt.label:
                log(f"  {rt.name} runs {rt.label}")
        for row in args.rows:
            runs, warmup = (loop_runs, 1) if row == "50 x run" else (args.runs, 3)
            for rt in runtimes.values():
                if rt.failure:
                    continue
                value = measure(rt, row, bundle, workdir, runs, warmup, pm)
                results.setdefault(rt.name, {})[row] = value
                log(f"bench: {rt.name:5} {row:10} {fmt_ms(value)}{' ms' if isinstance(value, float) else ''}")
                force_delete_all(rt)
    finally:
        cleanup_podman(pm, workdir)
        for rt in runtimes.values():
            left = force_delete_all(rt)
            if left:
                log(f"bench: {rt.name} still lists {', '.join(left)} in {rt.root} after delete --force")
        if args.keep:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"bench: done in {time.monotonic() - started:.0f} s")
    rows = table(results, runtimes, args.rows)
    extra = notes(runtimes, args.runs, loop_runs, pm, spec_version)
    extra.append(f"load average at end: {loadavg()}")
    (harness.print_markdown if args.markdown else harness.print_plain)([rows], header, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
