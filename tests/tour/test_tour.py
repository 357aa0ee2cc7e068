"""`capsa tour`, for real, as root: each step's facts (pid 1, the escape
succeeding then refused, the OOM kill, the container outliving its engine,
names and a published port), then the whole tour as a user runs it without
a terminal; and after each, nothing left on the host."""

import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import leaks
from runtimes import capsa_command

from capsa import tour
from capsa.tour.narrate import Narrator

pytestmark = pytest.mark.root


class Recorded:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return False


def our_scratch() -> set[str]:
    """The tour's scratch directories and short state directories."""
    found = {os.path.join("/var/tmp", n) for n in os.listdir("/var/tmp") if n.startswith("capsa-tour-")}
    return found | {os.path.join("/run", n) for n in os.listdir("/run") if n.startswith("ct-")}


def _ours(left: dict[str, set[str]]) -> dict[str, set[str]]:
    """Ignore the cgroup parents the runtime makes once (<ctrl>/capsa), as
    tests/engine/conftest.py does."""
    if "cgroup" in left:
        left["cgroup"] = {path for path in left["cgroup"] if os.path.basename(path) != "capsa"}
    return {kind: found for kind, found in left.items() if found}


@pytest.fixture
def nothing_left():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before, scratch_before = leaks.snapshot(), our_scratch()
    yield
    deadline = time.monotonic() + 5  # the kernel frees a namespace or a cgroup a moment after its last process
    leaks.reap_orphans()
    left = _ours(leaks.new_since(before))
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        leaks.reap_orphans()
        left = _ours(leaks.new_since(before))
    assert not left, f"the tour left behind: {left}"
    assert our_scratch() - scratch_before == set()


def run_step(number: int) -> tuple[dict, str]:
    out = Recorded()
    reports, failed = tour.run_steps([number], Narrator(out))
    assert failed == [], out.text
    return reports[0], out.text


def test_step_1_chroot_escape_succeeds(nothing_left):
    report, text = run_step(1)
    assert "bin" in report["jail_listing"] and "home" not in report["jail_listing"]
    assert report["escape_succeeded"] is True
    assert "escaped" in text and "1. chroot (1979)" in text


def test_step_2_pid_1_own_hostname_only_lo_and_the_escape_refused(nothing_left):
    report, _ = run_step(2)
    assert report["pid"] == 1
    assert report["processes"] <= 3
    assert report["hostname"] == "tour-ns" != report["host_hostname"]
    assert report["links"] == ["lo"]
    assert report["escape_refused"] is True
    assert "home" not in report["listing_after_escape"]


def test_step_3_the_allocator_is_oom_killed_inside_and_fine_outside(nothing_left):
    report, _ = run_step(3)
    assert report["oom_killed"] is True
    assert report["oom_kill_count"] >= 1
    assert report["inside_mib"] < report["limit_mib"]
    assert report["outside_ok"] is True and report["outside_mib"] == 64


def test_step_4_bundle_lifecycle(nothing_left):
    report, _ = run_step(4)
    assert report["first_output"] == "hello from capsa, I am pid 1"
    assert (report["created"], report["started"], report["killed"]) == ("created", "running", "stopped")
    assert report["hostname"] == "tour-bundle"
    assert report["deleted"] is True


def test_step_5_the_container_outlives_its_engine(nothing_left):
    report, _ = run_step(5)
    assert report["engine_killed"] is True
    assert report["container_survived"] is True
    assert report["last_logged"] > report["last_seen"]
    assert report["process_tree"][1] == "capsa-shim"


def test_step_6_image_run_ps_logs_and_runc(nothing_left):
    report, _ = run_step(6)
    assert len(report["layers"]) == 1 and report["config"].startswith("sha256:")
    assert report["listed"] is True
    assert "I am pid 1" in report["logs"]
    if report.get("runc") is not None:
        assert "I am pid 1" in report["runc"] and "I am pid 1" in report["capsa"]


def test_step_7_names_and_a_published_port(nothing_left):
    report, _ = run_step(7)
    assert report["by_name"] is True
    assert report["port_answered"] is True
    assert report["bridge_removed"] is True


def test_the_whole_tour_without_a_terminal(nothing_left):
    done = subprocess.run([*capsa_command(), "tour"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\033[" not in done.stdout
    for number, name in enumerate(tour.STEPS, 1):
        assert f"── {number}. {tour.step(number).TITLE} ({tour.step(number).YEAR})" in done.stdout, name
    for fact in ("escaped: / is the host's root", "the shell is pid 1", "refused:", "killed by SIGKILL (the OOM killer)",
                 "still running under its shim", "found web by name", "the published port answers"):  # fmt: skip
        assert fact in done.stdout, fact
