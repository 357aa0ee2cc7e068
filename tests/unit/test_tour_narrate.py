"""The tour's narration (plain in a pipe, ANSI colour on a terminal), its
step list, and how `capsa tour` refuses: an unknown step, not being root."""

import io
import subprocess
import sys

import pytest

from capsa import tour
from capsa.cli.main import main
from capsa.tour.narrate import Narrator


class Terminal(io.StringIO):
    def isatty(self):
        return True


def narrate(stream) -> str:
    voice = Narrator(stream)
    voice.heading(2, "namespaces", "2002-2013")
    voice.explain("A namespace gives a process   its own view.\n\nSecond paragraph.")
    voice.run("unshare(CLONE_NEWPID|CLONE_NEWNS)")
    voice.show(["PID USER COMMAND", "  1 root sh"])
    voice.result("the shell is pid 1")
    voice.note("a note")
    return stream.getvalue()


def test_plain_when_not_a_terminal():
    text = narrate(io.StringIO())
    assert "\033[" not in text
    assert text.splitlines() == [
        "", "── 2. namespaces (2002-2013) " + "─" * 49,
        "A namespace gives a process its own view.", "", "Second paragraph.",
        "  $ unshare(CLONE_NEWPID|CLONE_NEWNS)",
        "    │ PID USER COMMAND", "    │   1 root sh",
        "  → the shell is pid 1", "  note: a note",
    ]  # fmt: skip


def test_colour_on_a_terminal_with_the_same_words():
    coloured = narrate(Terminal())
    assert "\033[33m  $ unshare(CLONE_NEWPID|CLONE_NEWNS)\033[0m" in coloured
    assert "\033[32m  → the shell is pid 1\033[0m" in coloured
    plain = coloured
    for code in ("\033[1;36m", "\033[33m", "\033[32m", "\033[2m", "\033[35m", "\033[0m"):
        plain = plain.replace(code, "")
    assert plain == narrate(io.StringIO())


def test_explain_wraps_to_the_width_without_breaking_words():
    stream = io.StringIO()
    Narrator(stream).explain("word " * 40 + "capsa-runtime " * 10)
    lines = stream.getvalue().splitlines()[1:]
    assert all(len(line) <= 78 for line in lines)
    assert all(not line.endswith("capsa-") for line in lines)


def test_long_output_is_cut():
    stream = io.StringIO()
    Narrator(stream).show(str(n) for n in range(20))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 12 and lines[-1].endswith("... (9 more lines)")


def test_list_names_every_step_with_its_year(capsys):
    assert main(["tour", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(tour.STEPS) == 7
    assert lines[0].startswith("1. chroot (1979): ")
    assert lines[2].startswith("3. cgroups (2007): ")
    assert lines[3].startswith("4. runC and the OCI bundle (2015): ")


def test_an_unknown_step_is_refused(capsys):
    assert main(["tour", "8"]) == 1
    assert capsys.readouterr().err == "capsa: no tour step 8: the steps are 1 to 7 (capsa tour --list)\n"


def test_not_root_is_a_polite_one_line_refusal(capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["tour", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("capsa: the tour needs root") and err.count("\n") == 1


def test_pause_waits_for_enter_between_steps_and_failures_are_reported(monkeypatch):
    ran = []

    class Fake:
        def __init__(self, number, fails=False):
            self.TITLE, self.YEAR, self.SUMMARY, self.number, self.fails = f"fake {number}", "2000", "", number, fails

        def run(self, voice):
            ran.append(self.number)
            if self.fails:
                from capsa.tour.rootfs import MissingPackage

                raise MissingPackage("runc", "runc")
            return {"step": self.number}

    fakes = {1: Fake(1), 2: Fake(2, fails=True), 3: Fake(3)}
    monkeypatch.setattr(tour, "step", lambda number: fakes[number])
    out, answers = io.StringIO(), io.StringIO("\n\n")
    reports, failed = tour.run_steps([1, 2, 3], Narrator(out), pause=True, stdin=answers)
    assert ran == [1, 2, 3] and failed == [2]
    assert [r["step"] for r in reports] == [1, 3]
    assert out.getvalue().count("press Enter for step") == 2
    assert answers.read() == ""
    assert "step 2 stopped: runc is missing: apt-get install runc" in out.getvalue()


def test_capsa_run_does_not_import_the_tour():
    code = ("import sys; from capsa.cli.main import build_parser; build_parser('run');"
            " print(any(m.startswith('capsa.tour') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_static_busybox_is_told_from_a_dynamic_program(tmp_path):
    from capsa.tour.rootfs import is_static

    assert is_static(sys.executable) is False
    not_elf = tmp_path / "script"
    not_elf.write_text("#!/bin/sh\n")
    assert is_static(str(not_elf)) is False


@pytest.mark.parametrize("number", [0, 8, -1])
def test_step_numbers_outside_the_tour(number):
    with pytest.raises(Exception, match=f"no tour step {number}"):
        tour.step(number)


def test_a_missing_busybox_names_its_debian_package(monkeypatch, tmp_path):
    from capsa.tour import rootfs

    monkeypatch.setattr(rootfs, "BUSYBOX", str(tmp_path / "no-busybox"))
    with pytest.raises(rootfs.MissingPackage, match="apt-get install busybox-static"):
        rootfs.build(str(tmp_path / "rootfs"))
