"""Experiments in a forked child, so the tour's own process never changes
its root, namespaces or cgroup.

    facts = in_child(jail_and_escape, "/var/tmp/capsa-tour-x/jail")

runs the function in a child made by fork(2), sends what it returns (JSON)
back over a pipe, and raises the child's error in the parent (once, as the
runtime's children do). The child always ends with os._exit: it never
returns into the parent's Python stack.
"""

import json
import os
import sys

from capsa.errors import CapsaError


class ChildFailed(CapsaError):
    """The experiment's child raised or died; the message says how."""


def in_child(function, *args, before_start=None):
    """FUNCTION(*ARGS) in a forked child; its return value, back in the parent.

    BEFORE_START(pid), when given, runs in the parent while the child waits
    (to put it in a cgroup before it does anything, as a runtime does).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    results_r, results_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(results_r)
        os.close(go_w)
        _child(function, args, results_w, go_r)
    os.close(results_w)
    os.close(go_r)
    try:
        if before_start is not None:
            before_start(pid)
        os.write(go_w, b"go")
    finally:
        os.close(go_w)
        with os.fdopen(results_r, "rb") as results:
            data = results.read()
        _, status = os.waitpid(pid, 0)
    if not data:
        raise ChildFailed(f"the experiment's child {pid} died: {_describe(status)}")
    answer = json.loads(data)
    if "error" in answer:
        raise ChildFailed(f"the experiment's child failed: {answer['error']}")
    return answer["value"]


def _child(function, args, results_w: int, go_r: int):
    code = 0
    try:
        if os.read(go_r, 2) != b"go":
            os._exit(1)
        os.close(go_r)
        answer = {"value": function(*args)}
    except BaseException as err:  # noqa: BLE001 - every failure goes to the parent, once
        answer, code = {"error": str(err) or type(err).__name__}, 1
    try:
        os.write(results_w, json.dumps(answer).encode())
    finally:
        os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def run_program(argv: list[str], setup=None) -> tuple[int, str]:
    """Run ARGV from inside an experiment (the child's root and namespaces
    apply) and return (its exit status, what it wrote on stdout and stderr).
    SETUP(), when given, runs in the program's process before the exec."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            if setup is not None:
                setup()
            os.execv(argv[0], argv)
        except BaseException as err:  # noqa: BLE001 - reported as the program's output
            os.write(2, f"{err}\n".encode())
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as output:
        text = output.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text
