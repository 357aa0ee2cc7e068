"""What bench/pull.py, bench/run.py and bench/runtime.py share.

Messages, processes run in groups of their own, daemons stopped by pid,
mounts and cgroups left behind, the machine description, hyperfine and the
result tables. Each script keeps its own image, rows and peers.
"""

import datetime
import glob
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no error message)"


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return f"{argv[0]}: ?"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def tool_list(parser, value: str, tools: tuple[str, ...]) -> list[str]:
    """--only's comma-separated tools, each one of TOOLS (else the usage error)."""
    chosen = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in tools]
    if unknown or not chosen:
        parser.error(f"unknown tool(s): {', '.join(unknown) or '(none)'}; choose from {', '.join(tools)}")
    return chosen


# -- processes


def run(argv: list[str] | str, env: dict | None = None, timeout: float | None = 600,
        shell: bool = False) -> tuple[int, str]:  # fmt: skip
    """Run a command in a process group of its own; (exit status, its
    stdout+stderr). On a timeout, Ctrl-C or SIGTERM here, the whole group
    (a shell, hyperfine and what they started) gets SIGINT, then SIGKILL."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, shell=shell,
                                start_new_session=True)  # fmt: skip
    except OSError as e:
        return 127, str(e)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return 124, f"did not finish within {timeout:.0f} s"
    except BaseException:
        stop_group(proc)
        raise


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to the process group PROC leads (this script started it), SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=wait)
            break
        except (subprocess.TimeoutExpired, ValueError):  # ValueError: its pipes are already closed
            continue
    # Whatever is left in the group after its leader exited.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Service:
    """A daemon started by this script, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], logfile: str, env: dict | None = None):
        self.name = name
        self.logfile = logfile
        with open(logfile, "ab") as out:
            # Its own session: a Ctrl-C at the terminal reaches this script, which stops it in order.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 30) -> None:
        """SIGTERM, and SIGKILL if it has not exited GRACE seconds later."""
        if self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"bench: {self.name} (pid {self.proc.pid}) ignored SIGTERM; SIGKILL")
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def last_words(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return error_line(f.read()[-4000:])
        except OSError:
            return "?"


def wait_until(what: str, check, service: Service, timeout: float = 30) -> None:
    """Poll CHECK until it is true; RuntimeError if SERVICE exits or TIMEOUT passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited: {service.last_words()}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s: {service.last_words()}")


def capsa_program() -> str | None:
    venv = os.path.join(REPO, ".venv", "bin", "capsa")
    if os.access(venv, os.X_OK):
        return venv
    return shutil.which("capsa")


def hard_limit(which: int, cap: int | None = None) -> str:
    """The hard limit WHICH, at most CAP, as containers.conf writes it (-1: unlimited)."""
    hard = resource.getrlimit(which)[1]
    if cap is not None and (hard == resource.RLIM_INFINITY or hard > cap):
        hard = cap
    return "-1" if hard == resource.RLIM_INFINITY else str(hard)


def pid_max() -> int | None:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# -- namespaces, mounts, cgroups


def start_as_root(programs: tuple[str, ...], mark: str, script: str) -> None:
    """Exit unless root with PROGRAMS on PATH; then re-execute SCRIPT in a private
    mount namespace, where SIGTERM and SIGHUP exit through the cleanup in `finally`."""
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    missing = [p for p in programs if not shutil.which(p)]
    if missing:
        sys.exit(f"bench: not found: {', '.join(missing)}")
    enter_namespace(mark, script)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))


def enter_namespace(mark: str, script: str) -> None:
    """Re-execute SCRIPT in a private mount namespace, once (MARK in the environment says it is done)."""
    if os.environ.get(mark) == "1":
        return
    os.environ[mark] = "1"
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                          sys.executable, os.path.abspath(script), *sys.argv[1:]])


def blob_info_cache_dir() -> str:
    """Where containers/image keeps its blob-info cache whatever --root says (or its parent, if absent)."""
    return "/var/lib/containers" if os.path.isdir("/var/lib/containers") else "/var/lib"


def hide_blob_info_cache() -> str:
    """A tmpfs over blob_info_cache_dir() (in this private mount namespace); returns the mount point."""
    hide = blob_info_cache_dir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", hide], check=True)
    return hide


def mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if p.startswith(prefix) or p == prefix.rstrip("/")]


def unmount_under(path: str) -> None:
    """Unmount everything mounted under PATH, innermost first; detach what is busy."""
    for point in reversed(mounts_under(path)):
        rc, out = run(["umount", point])
        if rc:
            run(["umount", "-l", point])
            log(f"bench: umount {point}: {error_line(out)} (detached it)")


def cgroup_dirs(relative: str) -> list[str]:
    """The directories of cgroup RELATIVE (absolute within the hierarchy) in every hierarchy."""
    name = relative.strip("/")
    if not name:
        return []
    found = glob.glob(os.path.join("/sys/fs/cgroup", name)) + glob.glob(os.path.join("/sys/fs/cgroup/*", name))
    return sorted({os.path.realpath(p) for p in found if os.path.isdir(p)})


def remove_cgroup(relative: str) -> None:
    """Remove the (empty) cgroup RELATIVE and its empty descendants in every hierarchy."""
    for top in cgroup_dirs(relative):
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                log(f"bench: cannot remove cgroup {dirpath}: {e.strerror}")


# -- hyperfine


def hyperfine(name: str, command: str, export: str, runs: int, env: dict | None = None,
              prepare: str | None = None, cleanup: str | None = None, warmup: int = 0,
              wrapper: list[str] | None = None) -> tuple[int, str]:  # fmt: skip
    """Time COMMAND (sh) with hyperfine, its JSON to EXPORT; (exit status, hyperfine's output).
    WRAPPER prefixes hyperfine itself (say, a private mount namespace)."""
    argv = [*(wrapper or []), "hyperfine", "--runs", str(runs)]
    if warmup:
        argv += ["--warmup", str(warmup)]
    argv += ["--export-json", export, "--style", "basic", "--command-name", name]
    for option, value in (("--prepare", prepare), ("--cleanup", cleanup)):
        if value:
            argv += [option, value]
    argv.append(command)
    return run(argv, env=env, timeout=None)


def exported(export: str) -> dict:
    """The one result in hyperfine's --export-json file: median, min, max, ... in seconds."""
    with open(export) as f:
        return json.load(f)["results"][0]


class Bench:
    """Rows timed per tool, each one hyperfine invocation; the daemons they need.
    A script's Bench adds its tools, its setup and its rows."""

    def __init__(self, workdir: str, runs: int):
        self.workdir = workdir  # configuration, logs, hyperfine's JSON
        self.runs = runs
        self.env: dict[str, str] = dict(os.environ)
        self.services: list[Service] = []
        self.failures: dict[str, str] = {}  # tool -> why it is left out
        self.results: dict[tuple[str, str], dict | str] = {}  # (row, tool) -> hyperfine result or "fails: ..."
        self.notes: list[str] = []
        self.capsa = capsa_program()

    def start_service(self, name: str, argv: list[str], logfile: str, env: dict | None = None) -> Service:
        """Start a daemon that stop_services() stops; then wait_ready() for it.
        (Two steps, so that the caller holds the service even when it never gets ready.)"""
        svc = Service(name, argv, logfile, env=env)
        self.services.append(svc)
        return svc

    def wait_ready(self, svc: Service, ready, where: str, timeout: float = 30) -> None:
        wait_until(svc.name, ready, svc, timeout=timeout)
        log(f"bench: {svc.name} (pid {svc.proc.pid}) {where}")

    def stop_services(self, grace: float = 30) -> None:
        for svc in reversed(self.services):
            svc.stop(grace)

    def hyperfine(self, name: str, command: str, prepare: str | None = None, runs: int | None = None,
                  warmup: int = 0) -> dict | str:
        """Time COMMAND (sh, with --prepare PREPARE); hyperfine's result, or 'fails: ...'."""
        export = os.path.join(self.workdir, "json", name.replace(" ", "-").replace("/", "-") + ".json")
        os.makedirs(os.path.dirname(export), exist_ok=True)
        log(f"bench: hyperfine {name}")
        rc, out = hyperfine(name, command, export, runs or self.runs, env=self.env, prepare=prepare,
                            warmup=warmup)
        if rc:
            # hyperfine only says that a command failed; run it once more for its own words.
            said = error_line(out)
            rc, tool_out = run(f"{prepare}; {command}" if prepare else command, env=self.env, shell=True)
            if rc and tool_out.strip():
                said = error_line(tool_out)
            log(f"bench:   fails: {said}")
            return f"fails: {said}"
        r = exported(export)
        log(f"bench:   median {r['median']:.3f} s (min {r['min']:.3f}, max {r['max']:.3f})")
        return r


# -- output


def machine(programs: tuple[str, ...], more: list[tuple[str, str]] | None = None,
            capsa_note: str = "") -> list[tuple[str, str]]:  # fmt: skip
    """A report's header: date, machine, MORE, load, capsa's commit (+ CAPSA_NOTE), PROGRAMS' versions."""
    cpu = ram = distro = "?"
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    commit = first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True, check=False).stdout.strip()
    versions = "; ".join(first_line([p, "--version"]) for p in programs)
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")),
        ("machine", f"{distro}, {os.cpu_count()} cores ({cpu}), {ram} RAM, kernel {platform.release()}"),
        *(more or []),
        ("load average at start", loadavg()),
        ("capsa", f"commit {commit}{' + uncommitted changes in src/' if dirty else ''}{capsa_note}"),
        ("versions", versions),
    ]


class Table(NamedTuple):
    rows: list[list[str]]  # the first is the header
    left: int = 1  # leading label columns, aligned left; the rest (numbers) right


def timing_rows(bench: Bench, row_names: list[str], tools: list[str], labels: dict[str, str]) -> Table:
    """Median, min, max and peer/capsa of every (row, tool) result; the tools left out
    (bench.failures) once, in the first row."""
    rows = [["row", "tool", "median s", "min s", "max s", "peer/capsa"]]
    for row in row_names:
        base = bench.results.get((row, "capsa"))
        for tool in tools:
            if (row, tool) not in bench.results:
                if row == row_names[0] and tool in bench.failures:
                    rows.append([row, labels[tool], f"fails: {bench.failures[tool]}", "", "", ""])
                continue
            r = bench.results[(row, tool)]
            if isinstance(r, str):
                rows.append([row, labels[tool], r, "", "", ""])
                continue
            ratio = f"{r['median'] / base['median']:.2f}" if tool != "capsa" and isinstance(base, dict) else ""
            rows.append([row, labels[tool], f"{r['median']:.3f}", f"{r['min']:.3f}", f"{r['max']:.3f}", ratio])
    return Table(rows, left=2)


def column_widths(rows: list[list[str]]) -> list[int]:
    # A "fails: ..." with only empty cells after it may run past its column: it
    # would otherwise stretch the column of every number below it.
    def counts(row: list[str], i: int) -> bool:
        return not (row[i].startswith("fails:") and not any(row[i + 1:]))

    return [max(len(r[i]) for r in rows if counts(r, i)) for i in range(len(rows[0]))]


def print_plain(tables: list[Table], header: list[tuple[str, str]], extra: list[str]) -> None:
    for key, value in header:
        print(f"{key}: {value}")
    for table in tables:
        print()
        widths = column_widths(table.rows)
        for n, r in enumerate(table.rows):
            cells = [c.ljust(w) if i < table.left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
            print("  ".join(cells).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))
    print()
    for line in extra:
        print(f"* {line}")


def print_markdown(tables: list[Table], header: list[tuple[str, str]], extra: list[str]) -> None:
    for key, value in header:
        print(f"- {key}: {value}")
    for table in tables:
        rows = table.rows
        print()
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "|".join(["---"] * table.left + ["---:"] * (len(rows[0]) - table.left)) + "|")
        for r in rows[1:]:
            print("| " + " | ".join(r) + " |")
    print()
    for line in extra:
        print(f"- {line}")
