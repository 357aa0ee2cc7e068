#!/usr/bin/env python3
"""Time capsa-runtime against runc and crun with hyperfine, in one run.

Usage (as root): bench/runtime.py [--runs N] [--only capsa,runc] [--keep] [--markdown]

Every runtime runs the same busybox bundle (scripts/busybox-bundle DIR
/bin/true: the default `spec` config, new pid/mount/ipc/uts/network
namespaces, no terminal), each with its own temporary --root.  Rows:

  run      create+start+wait+delete in one command
  create   `create` alone (the previous container is deleted in --prepare)
  start    `start` alone (the container is created in --prepare)
  delete   `delete` alone (created, started and waited for stopped in --prepare)
  50 x run one measured shell loop running 50 containers with distinct ids

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

crun 1.8 also refuses an ociVersion that does not contain "1.0"
("unknown version specified"), and `capsa-runtime spec` writes 1.2.0, so the
shared bundle's ociVersion is set to 1.0.2 for every runtime.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSYBOX_BUNDLE = os.path.join(REPO, "scripts", "busybox-bundle")
RUNTIMES = ("capsa", "runc", "crun")
PROGRAMS = {"capsa": "capsa-runtime", "runc": "runc", "crun": "crun"}
ROWS = ("run", "create", "start", "delete", "50 x run")
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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no error message)"


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


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def machine() -> list[tuple[str, str]]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    commit = first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    versions = "; ".join(first_line([p, "--version"])
                         for p in ("capsa-runtime", "runc", "crun", "hyperfine"))
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")),
        ("machine", f"{distro}, {os.cpu_count()} cores ({cpu}), {ram} RAM, kernel {platform.release()}"),
        ("cgroups", cgroup_layout()[0]),
        ("load average at start", " ".join(open("/proc/loadavg").read().split()[:3])),
        ("capsa", f"commit {commit}{' + uncommitted changes in src/' if dirty else ''}, "
                  f"launcher Python: {launcher_python()}"),
        ("versions", versions),
    ]


def build_bundle(path: str) -> None:
    out = subprocess.run([BUSYBOX_BUNDLE, path, "/bin/true"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: cannot build the bundle: {error_line(out.stderr + out.stdout)}")
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["ociVersion"] = BUNDLE_OCI_VERSION
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)


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


def commands(rt: Runtime, row: str, bundle: str, counter: str, errors: str) -> dict[str, str]:
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
    if row == "50 x run":
        return {"prepare": bump,
                "command": f"read n < {C}; for i in $(seq 50); do "
                           f"{RT} run --bundle {B} l$n-$i 2>>{E} || exit 1; done"}
    raise ValueError(row)


def measure(rt: Runtime, row: str, bundle: str, workdir: str, runs: int, warmup: int) -> float | str:
    """Median seconds of one cell, or 'fails: ...'."""
    slug = f"{rt.name}-{row.replace(' ', '')}"
    counter = os.path.join(workdir, f"{slug}.counter")
    errors = os.path.join(workdir, f"{slug}.err")
    export = os.path.join(workdir, f"{slug}.json")
    with open(counter, "w") as f:
        f.write("0\n")
    open(errors, "w").close()
    snippets = commands(rt, row, bundle, counter, errors)
    argv = rt.wrapper + ["hyperfine", "--style", "none", "--runs", str(runs), "--warmup", str(warmup),
                         "--export-json", export, "--command-name", f"{rt.name} {row}"]
    for option in ("prepare", "cleanup"):
        if option in snippets:
            argv += [f"--{option}", snippets[option]]
    argv.append(snippets["command"])
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if out.returncode != 0:
        with open(errors) as f:
            said = f.read()
        return f"fails: {error_line(said or out.stderr or out.stdout)}"
    with open(export) as f:
        return json.load(f)["results"][0]["median"]


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


def table(results: dict[str, dict[str, float | str]], runtimes: dict[str, Runtime]) -> list[list[str]]:
    heads = []
    for name in RUNTIMES:
        mark = "*" if name in runtimes and runtimes[name].label else ""
        heads.append(f"{name}{mark} ms")
    rows = [["row", *heads, "capsa/runc", "capsa/crun"]]
    for row in ROWS:
        cells = {name: results.get(name, {}).get(row) for name in RUNTIMES}
        rows.append([row, *(fmt_ms(cells[n]) for n in RUNTIMES),
                     fmt_ratio(cells["capsa"], cells["runc"]), fmt_ratio(cells["capsa"], cells["crun"])])
    return rows


def notes(runtimes: dict[str, Runtime], runs: int, loop_runs: int) -> list[str]:
    out = [f"medians of {runs} runs ({loop_runs} for 50 x run, which is the total for 50 containers); "
           "ratio < 1 means capsa is faster"]
    for rt in runtimes.values():
        if rt.label:
            out.append(f"{rt.name}* ran {rt.label}, because as is it fails: {rt.attempts[0].split(': ', 1)[1]}")
        elif rt.failure:
            out.append(f"{rt.name} skipped: {rt.failure}")
    out.append(f"bundle ociVersion set to {BUNDLE_OCI_VERSION} for all runtimes "
               "(crun 1.8 refuses capsa's 1.2.0: \"unknown version specified\")")
    return out


def print_plain(rows: list[list[str]], header: list[tuple[str, str]], extra: list[str]) -> None:
    for key, value in header:
        print(f"{key}: {value}")
    print()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for line in extra:
        print(f"* {line}")


def print_markdown(rows: list[list[str]], header: list[tuple[str, str]], extra: list[str]) -> None:
    for key, value in header:
        print(f"- {key}: {value}")
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|")
    for r in rows[1:]:
        print("| " + " | ".join(r) + " |")
    print()
    for line in extra:
        print(f"- {line}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time capsa-runtime, runc and crun with hyperfine.")
    p.add_argument("--runs", type=int, default=30,
                   help="timed runs per cell (default 30; the 50-container row uses a third)")
    p.add_argument("--only", default=",".join(RUNTIMES),
                   help="comma-separated runtimes to time (default capsa,runc,crun)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args()
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in RUNTIMES]
    if unknown or not args.only:
        p.error(f"--only takes names from {','.join(RUNTIMES)}")
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
    results: dict[str, dict[str, float | str]] = {}
    loop_runs = min(args.runs, max(3, args.runs // 3))
    header = machine()
    try:
        bundle = os.path.join(workdir, "bundle")
        log(f"bench: building the bundle in {bundle}")
        build_bundle(bundle)
        hybrid_in_use = cgroup_layout()[1]
        for rt in runtimes.values():
            log(f"bench: checking {rt.name}")
            check(rt, bundle, hybrid_in_use)
            if rt.failure:
                results[rt.name] = {ROWS[0]: rt.failure}
            elif rt.label:
                log(f"  {rt.name} runs {rt.label}")
        for row in ROWS:
            runs, warmup = (loop_runs, 1) if row == "50 x run" else (args.runs, 3)
            for rt in runtimes.values():
                if rt.failure:
                    continue
                value = measure(rt, row, bundle, workdir, runs, warmup)
                results.setdefault(rt.name, {})[row] = value
                log(f"bench: {rt.name:5} {row:9} {fmt_ms(value)}{' ms' if isinstance(value, float) else ''}")
                force_delete_all(rt)
    finally:
        for rt in runtimes.values():
            left = force_delete_all(rt)
            if left:
                log(f"bench: {rt.name} still lists {', '.join(left)} in {rt.root} after delete --force")
        if args.keep:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"bench: done in {time.monotonic() - started:.0f} s")
    rows = table(results, runtimes)
    extra = notes(runtimes, args.runs, loop_runs)
    extra.append("load average at end: " + " ".join(open("/proc/loadavg").read().split()[:3]))
    (print_markdown if args.markdown else print_plain)(rows, header, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
