"""`capsa tour`: the history of containers, run live on this machine.

Each step is a module with TITLE, YEAR, SUMMARY and run(voice) -> dict: it
explains its era in a few lines, runs the real mechanism with capsa's own
code (in forked children, a scratch directory, a cgroup and namespaces of
its own, or a private capsa store), shows the effect, removes everything it
made, and returns the facts it observed for tests to check.

    voice = Narrator(sys.stdout)
    reports, failed = run_steps([2], voice)    # reports[0]["pid"] == 1
"""

import importlib
import sys
import time

from capsa.errors import CapsaError

STEPS = ("chroot", "namespaces", "cgroups", "bundle", "shim", "engine", "network")

INTRO = """
    A container is not one thing: it is a process that the kernel jails,
    hides and limits with mechanisms that arrived one at a time over forty
    years, and programs that package and drive them. Each step below runs one
    of them for real on this machine, with capsa's own code, then removes
    everything it made."""

OUTRO = """
    That is the whole stack capsa retells: chroot and pivot_root, namespaces
    and cgroups in capsa-runtime (steps 1-4), capsa-shim under an engine that
    may come and go (5), images and pluggable runtimes (6), and CNI networks
    (7). README.md shows each program's commands."""


def step(number: int):
    """The module of step NUMBER (1-based)."""
    if not 1 <= number <= len(STEPS):
        raise CapsaError(f"no tour step {number}: the steps are 1 to {len(STEPS)} (capsa tour --list)")
    return importlib.import_module(f"capsa.tour.{STEPS[number - 1]}")


def listing() -> list[str]:
    lines = []
    for number in range(1, len(STEPS) + 1):
        module = step(number)
        lines.append(f"{number}. {module.TITLE} ({module.YEAR}): {module.SUMMARY}")
    return lines


def run_steps(numbers, voice, pause: bool = False, stdin=None) -> tuple[list[dict], list[int]]:
    """Run the steps NUMBERS in order; return their reports (each with
    "seconds") and the numbers of the steps that failed or were skipped.
    PAUSE: wait for Enter on STDIN between steps."""
    stdin = stdin or sys.stdin
    numbers = list(numbers)
    modules = [step(number) for number in numbers]  # every number checked before anything runs
    reports, failed = [], []
    if len(numbers) > 1:
        voice.explain(INTRO)
    for index, (number, module) in enumerate(zip(numbers, modules)):
        voice.heading(number, module.TITLE, module.YEAR)
        started = time.monotonic()
        try:
            report = module.run(voice)
        except CapsaError as err:
            voice.failed(f"step {number} stopped: {err}")
            failed.append(number)
        except OSError as err:
            voice.failed(f"step {number} stopped: {err.strerror or err}"
                         + (f": {err.filename}" if err.filename else ""))  # fmt: skip
            failed.append(number)
        else:
            report["seconds"] = round(time.monotonic() - started, 2)
            reports.append(report)
            voice.note(f"step {number} done in {report['seconds']:.1f} s; everything it made is removed")
        if pause and index + 1 < len(numbers):
            following = modules[index + 1]
            voice.line()
            voice.prompt(f"press Enter for step {numbers[index + 1]}, {following.TITLE} ...")
            stdin.readline()
    if len(numbers) > 1 and not failed:
        voice.explain(OUTRO)
    return reports, failed
