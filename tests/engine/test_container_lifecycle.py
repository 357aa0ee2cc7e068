"""The container lifecycle beyond a plain run: exec, terminals, restart
policies, healthchecks, OOM, log rotation, many containers at once, and a
killed CLI or killed shims leaving a state ps reports truly."""

import json
import os
import pty
import select
import signal
import subprocess
import time
from contextlib import contextmanager

import pytest

from waiting import wait_for

pytestmark = pytest.mark.root


def inspect(capsa, name: str) -> dict:
    return json.loads(capsa("inspect", name).stdout)[0]


def test_exec_output_exit_codes_and_env(capsa):
    capsa("run", "-d", "--name", "box", "-e", "FROM_RUN=1", "busybox", "sleep", "100")
    result = capsa("exec", "-e", "EXTRA=2", "-w", "/tmp", "box", "sh", "-c", "echo $FROM_RUN$EXTRA; pwd; exit 4",
                   check=False)  # fmt: skip
    assert (result.returncode, result.stdout) == (4, "12\n/tmp\n")
    assert capsa("exec", "box", "no-such-program", check=False).returncode == 127
    assert capsa("exec", "-u", "65534", "box", "id", "-u").stdout == "65534\n"
    assert "unable to find user nobody-here" in capsa.fails("exec", "-u", "nobody-here", "box", "id", code=126)


def shim_pid(capsa, name: str) -> int:
    with open(os.path.join(capsa.state, "containers", inspect(capsa, name)["Id"], "shim.json")) as f:
        return json.load(f)["shim_pid"]


def children_running(parent: int, cmdline: str) -> list[int]:
    """The children of PARENT whose command line is CMDLINE (words joined by spaces)."""
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        pids = [int(pid) for pid in f.read().split()]
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().replace(b"\0", b" ").strip() == cmdline.encode():
                    found.append(pid)
        except FileNotFoundError:
            pass
    return found


@pytest.mark.parametrize("runtime", ["capsa", "runc"])
def test_exec_runs_under_the_shim_which_reaps_it(capsa, runtime):
    capsa("run", "-d", "--name", "box", "--runtime", runtime, "busybox", "sleep", "100")
    shim = shim_pid(capsa, "box")
    attached = subprocess.Popen(capsa.argv("exec", "box", "sleep", "4322"), env=capsa.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    [pid] = wait_for(lambda: children_running(shim, "sleep 4322"), what="the exec under the shim")
    os.kill(attached.pid, signal.SIGKILL)  # the client goes; the process stays, the shim's
    attached.wait()
    assert children_running(shim, "sleep 4322") == [pid]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the exec reaped, no zombie")
    detached = capsa("exec", "-d", "box", "sleep", "4321")
    assert (detached.returncode, detached.stdout, detached.stderr) == (0, "", "")
    [pid] = wait_for(lambda: children_running(shim, "sleep 4321"), what="the detached exec under the shim")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the detached exec reaped, no zombie")
    result = capsa("exec", "box", "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (4, "out\n", "err\n")
    missing = capsa("exec", "box", "no-such-program", check=False)
    assert missing.returncode == 127 and "no-such-program" in missing.stderr


def test_exec_takes_stdin_with_i_only(capsa):
    capsa("run", "-d", "--name", "box", "busybox", "sleep", "100")
    result = capsa("exec", "-i", "box", "sh", "-c", "cat; exit 3", input="piped\n" * 20000, check=False)
    assert (result.returncode, result.stdout) == (3, "piped\n" * 20000)
    assert capsa("exec", "box", "cat", input="not read\n").stdout == ""  # stdin is /dev/null


def test_exec_privileged_gets_every_capability(capsa):
    capsa("run", "-d", "--name", "box", "busybox", "sleep", "100")

    def effective(*flags: str) -> str:
        return capsa("exec", *flags, "box", "grep", "CapEff", "/proc/self/status").stdout.split()[1]

    with open("/proc/self/status") as f:
        ours = next(line for line in f if line.startswith("CapEff")).split()[1]
    assert effective("--privileged") == ours != effective()


def test_exec_in_a_stopped_or_paused_container_fails_as_docker(capsa):
    capsa("run", "--name", "done", "busybox", "true")
    container_id = inspect(capsa, "done")["Id"]
    assert capsa.fails("exec", "done", "true", code=1) == f"capsa: Container {container_id} is not running"
    capsa("run", "-d", "--name", "frozen", "busybox", "sleep", "100")
    capsa("pause", "frozen")
    assert "is paused, unpause the container before exec" in capsa.fails("exec", "frozen", "true", code=1)


class Terminal:
    """The test's side of a pty: what was read and not yet expected is kept."""

    def __init__(self, master: int):
        self.master = master
        self.pending = b""

    def expect(self, needle: bytes, timeout: float = 10) -> bytes:
        """Read until NEEDLE; returns what came before it."""
        deadline = time.monotonic() + timeout
        while needle not in self.pending and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.pending += os.read(self.master, 4096)
                except OSError:
                    break
        assert needle in self.pending, self.pending
        before, _, self.pending = self.pending.partition(needle)
        return before

    def prompt(self) -> None:
        """busybox's prompt, ready for input: after printing it the shell
        asks where the cursor is; answered as a terminal would, it reads."""
        self.expect(b"\x1b[6n")
        self.type(b"\x1b[1;5R")
        time.sleep(0.3)  # the answer and the next line must not arrive together

    def type(self, text: bytes) -> None:
        os.write(self.master, text)


@contextmanager
def driven_terminal(capsa, *args: str):
    """`capsa ARGS` on a pty of 30x100 the test drives: (the CLI, its Terminal, the master)."""
    from capsa.linux.tty import set_size

    master, slave = pty.openpty()
    set_size(master, 30, 100)
    cli = subprocess.Popen(capsa.argv(*args), env=capsa.env, stdin=slave, stdout=slave, stderr=slave,
                           start_new_session=True)  # fmt: skip
    os.close(slave)
    try:
        yield cli, Terminal(master), master
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        os.close(master)


def check_resize(cli, term: Terminal, master: int) -> None:
    """The size the shell sees, then again after the terminal grew (SIGWINCH to the CLI)."""
    from capsa.linux.tty import set_size

    term.type(b"stty size\r")
    term.expect(b"30 100")
    term.prompt()
    set_size(master, 40, 120)
    os.kill(cli.pid, signal.SIGWINCH)
    time.sleep(0.3)
    term.type(b"stty size\r")
    term.expect(b"40 120")
    term.prompt()


def test_interactive_terminal_resize_and_detach(capsa):
    with driven_terminal(capsa, "run", "-it", "--name", "term", "busybox", "sh") as (cli, term, master):
        term.prompt()  # the first prompt shows: capsa attaches before the shell starts
        term.type(b"echo answer-$((6*7))\r")
        term.expect(b"answer-42")
        term.prompt()
        check_resize(cli, term, master)
        term.type(b"\x10\x11")  # Ctrl-P Ctrl-Q: detach, the container keeps running
        assert cli.wait(timeout=10) == 0
        assert inspect(capsa, "term")["State"]["Running"]


def test_exec_interactive_terminal_resize_and_exit_code(capsa):
    capsa("run", "-d", "--name", "box", "busybox", "sleep", "100")
    with driven_terminal(capsa, "exec", "-it", "box", "sh") as (cli, term, master):
        term.prompt()
        term.type(b"echo answer-$((6*7)) $(tty)\r")
        term.expect(b"answer-42 /dev/pts/")
        term.prompt()
        check_resize(cli, term, master)
        term.type(b"exit 7\r")
        assert cli.wait(timeout=10) == 7
    assert inspect(capsa, "box")["State"]["Running"]


def test_restart_on_failure_counts_and_stops(capsa):
    capsa("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
    state = wait_for(lambda: (s := inspect(capsa, "flaky"))["State"]["Status"] == "exited" and
                     s["RestartCount"] == 2 and s, what="two restarts")  # fmt: skip
    assert state["State"]["ExitCode"] == 3
    assert capsa("logs", "flaky").stdout == ""


def test_healthcheck_turns_unhealthy(capsa):
    capsa("run", "-d", "--name", "checked", "--health-cmd", "test -e /tmp/ok", "--health-interval", "0.3s",
          "--health-retries", "2", "busybox", "sh", "-c", "touch /tmp/ok; sleep 100")  # fmt: skip
    wait_for(lambda: inspect(capsa, "checked")["State"]["Health"]["Status"] == "healthy", what="healthy")
    capsa("exec", "checked", "rm", "/tmp/ok")
    health = wait_for(lambda: (h := inspect(capsa, "checked")["State"]["Health"])["Status"] == "unhealthy"
                      and h, what="unhealthy")  # fmt: skip
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1


def test_oom_killed_is_recorded(capsa):
    result = capsa("run", "--name", "hog", "-m", "16m", "--memory-swap", "16m", "busybox", "sh", "-c",
                   "x=a; while true; do x=$x$x; done", check=False)  # fmt: skip
    assert result.returncode == 137, result.stderr
    state = inspect(capsa, "hog")["State"]
    assert state["OOMKilled"] and state["ExitCode"] == 137


def test_logs_rotate_and_follow(capsa):
    capsa("run", "-d", "--name", "chatty", "--log-opt", "max-size=2k", "--log-opt", "max-file=2", "busybox",
          "sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); sleep 0.01; done")  # fmt: skip
    follower = subprocess.run(capsa.argv("logs", "-f", "chatty"), env=capsa.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert follower.stdout.splitlines()[-1] == "line-199"
    container = inspect(capsa, "chatty")
    log = container["LogPath"]
    assert os.path.exists(log + ".1") and not os.path.exists(log + ".2")
    assert all(os.path.getsize(p) <= 2048 for p in (log, log + ".1"))
    assert capsa("logs", "--tail", "2", "chatty").stdout == "line-198\nline-199\n"


def test_twenty_containers_at_once(capsa):
    runs = [subprocess.Popen(capsa.argv("run", "-d", "--name", f"many{i}", "busybox", "sleep", "100"),
                             env=capsa.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(20)]  # fmt: skip
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    assert [code for code, _ in results] == [0] * 20, results
    assert len(capsa("ps", "-q").stdout.split()) == 20


def test_killing_the_cli_or_the_shims(capsa):
    cli = subprocess.Popen(capsa.argv("run", "--name", "survivor", "busybox", "sleep", "100"), env=capsa.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: "survivor" in capsa("ps").stdout, what="the container")
    cli.kill()
    cli.wait()
    assert inspect(capsa, "survivor")["State"]["Running"]
    for line in subprocess.run(["pgrep", "-f", "capsa-shim|capsa.shim.main"], capture_output=True,
                               text=True).stdout.split():  # fmt: skip
        with open(f"/proc/{line}/cmdline", "rb") as f:
            if capsa.state.encode() in f.read():
                os.kill(int(line), signal.SIGKILL)
    # With the shim gone the container still runs; ps says so, stop and rm clean up.
    assert "Up" in capsa("ps", "-a", "--filter", "name=survivor").stdout
    assert "the container's shim is gone" in capsa.fails("exec", "survivor", "true", code=1)
    assert "the container's shim is gone" in capsa.fails("attach", "survivor", code=1)
    capsa("rm", "-f", "survivor")


def test_bad_input_gives_dockers_errors(capsa):
    assert capsa("run", "--bogus", "busybox", check=False).returncode == 125
    assert "invalid volume specification" in capsa.fails("run", "-v", "/a:b", "busybox", "true", code=125)
    capsa("create", "--name", "taken", "busybox", "true")
    assert "is already in use" in capsa.fails("run", "--name", "taken", "busybox", "true", code=125)
    capsa("rm", "taken")
    assert "No such container" in capsa.fails("logs", "nothere")


def test_named_volume_outlives_containers(capsa):
    capsa("run", "--rm", "-v", "keep:/data", "busybox", "sh", "-c", "echo kept > /data/file")
    assert capsa("run", "--rm", "-v", "keep:/data", "busybox", "cat", "/data/file").stdout == "kept\n"
    capsa("run", "-d", "--name", "user", "-v", "keep:/data", "busybox", "sleep", "100")
    assert "volume is in use" in capsa.fails("volume", "rm", "keep")
    capsa("rm", "-f", "user")
    assert capsa("volume", "rm", "keep").stdout == "keep\n"


@pytest.mark.parametrize("runtime", ["runc", "capsa"])
def test_other_runtimes(capsa, runtime):
    result = capsa("run", "--rm", "--runtime", runtime, "busybox", "sh", "-c", "echo via; exit 5", check=False)
    assert (result.returncode, result.stdout) == (5, "via\n")


def test_init_is_pid_one_and_reaps(capsa):
    result = capsa("run", "--rm", "--init", "busybox", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$")
    first, shell_pid = result.stdout.splitlines()
    assert first.startswith("/sbin/docker-init -- sh") and shell_pid != "1"


def test_python_api_like_docker_py(capsa, monkeypatch):
    import capsa as capsa_package

    monkeypatch.setenv("CAPSA_STATE", capsa.state)
    client = capsa_package.from_env(capsa.root)
    try:
        assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
        web = client.containers.run("busybox", "sleep 100", detach=True, name="api-web")
        assert web.status == "running" and web.name == "api-web"
        result = web.exec_run("sh -c 'echo $X'", environment={"X": "exec"})
        assert (result.exit_code, result.output) == (0, b"exec\n")
        assert web.exec_run("sh -c 'echo out; sleep 0.1; echo err >&2; exit 3'") == capsa_package.client.ExecResult(
            3, b"out\nerr\n")  # fmt: skip
        assert web.exec_run("no-such-program").exit_code == 127
        web.stop(timeout=0)
        assert web.wait()["StatusCode"] == 137
        web.remove()
        assert client.containers.list(all=True) == []
    finally:
        client.close()


def test_rm_force_calls_off_a_pending_restart_and_ends_the_shim(capsa):
    from capsa.engine import shim

    capsa("run", "-d", "--name", "again", "--network", "none", "--restart", "always", "busybox",
          "false")  # fmt: skip
    # the back-off doubles from 0.1 s: from the third restart on, the shim
    # mostly waits for the next one
    wait_for(lambda: inspect(capsa, "again")["RestartCount"] >= 3, 10, "three restarts")
    state = wait_for(lambda: (s := inspect(capsa, "again")["State"])["Restarting"] and s, 10, "a restart pending")
    assert (state["Status"], state["Running"], state["Pid"]) == ("restarting", True, 0)  # as docker's
    assert capsa("rm", "-f", "again").stdout == "again\n"
    wait_for(lambda: not shim.pids_under(capsa.state), 5, "the shim to end")


def test_pause_unpause_and_restart(capsa):
    capsa("run", "-d", "--name", "frozen", "busybox", "sleep", "100")
    capsa("pause", "frozen")
    assert inspect(capsa, "frozen")["State"]["Paused"]
    assert "(Paused)" in capsa("ps").stdout
    capsa("unpause", "frozen")
    assert inspect(capsa, "frozen")["State"]["Status"] == "running"
    first = inspect(capsa, "frozen")["State"]["Pid"]
    capsa("restart", "-t", "0", "frozen")
    assert inspect(capsa, "frozen")["State"]["Running"] and inspect(capsa, "frozen")["State"]["Pid"] != first
