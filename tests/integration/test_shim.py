"""capsa-shim with real busybox containers: start-up answer, logs, exit, the socket's ops.

Every shim runs with a private runtime --root and state directory under the
test's tmp_path. The `shims` fixture ends each shim a test started (stop,
then shutdown; SIGKILL if it does not answer) and force-deletes what the
runtime still knows, so that the no_leaks check sees nothing left.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from running import shared, wait_for
from runtimes import runtime_command

from capsa.shim.protocol import read_frames


def shim_command() -> list[str]:
    path = shutil.which("capsa-shim")
    return [path] if path else [sys.executable, "-m", "capsa.shim.main"]


def runtime_path() -> str:
    return shutil.which(runtime_command()[0]) or "/usr/local/bin/capsa-runtime"


def needs_the_launchers() -> None:
    """Skip a test of the fast path unless the shim and the runtime run through
    their launchers, as installed (scripts/install-launchers)."""
    if shim_command()[0] != shutil.which("capsa-shim") or runtime_path() != shutil.which("capsa-runtime"):
        pytest.skip("needs the installed launchers (scripts/install-launchers)")


class Shim:
    """One capsa-shim: its command line, its answer, and a client for its socket."""

    def __init__(self, tmp_path, bundle, container_id: str, runtime: str):
        self.bundle = bundle
        self.id = container_id
        self.runtime = runtime
        self.runtime_root = str(tmp_path / f"rt-{container_id}")
        self.state_dir = str(tmp_path / f"shim-{container_id}")
        self.log_path = str(tmp_path / "logs" / f"{container_id}.log")
        self.answer: dict = {}

    def argv(self, *flags) -> list[str]:
        return shim_command() + [
            "--id", self.id, "--bundle", str(self.bundle), "--state-dir", self.state_dir,
            "--runtime", self.runtime, "--runtime-root", self.runtime_root,
            "--log-path", self.log_path, *flags]  # fmt: skip

    def start(self, *flags, check: bool = True, standby: bool = False) -> dict:
        """Start the shim; STANDBY: as the engine does, `--standby` with
        the flags on stdin."""
        argv, given = self.argv(*flags), None
        if standby:
            named = ["--standby", "--id", self.id, "--state-dir", self.state_dir]
            argv, given = shim_command() + named, json.dumps(argv[len(shim_command()):])
        result = subprocess.run(argv, input=given, capture_output=True, text=True, timeout=60,
                                check=False)  # fmt: skip
        assert result.stdout.count("\n") == 1 and result.stderr == "", result
        self.answer = json.loads(result.stdout)
        assert (result.returncode == 0) == ("pid" in self.answer), result
        if check:
            assert result.returncode == 0, self.answer
        return self.answer

    @property
    def socket_path(self) -> str:
        return os.path.join(self.state_dir, "shim.sock")

    def connect(self, request: dict, deadline: float = 30,
                then: bytes = b"") -> tuple[socket.socket, dict]:  # fmt: skip
        """Send request (and `then` right behind it); return the socket and the reply."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(deadline)
        sock.connect(self.socket_path)
        sock.sendall(json.dumps(request).encode() + b"\n" + then)
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            assert chunk, f"no reply to {request}"
            line += chunk
        return sock, json.loads(line)

    def request(self, op: str, deadline: float = 30, **fields) -> dict:
        sock, answer = self.connect({"op": op, **fields}, deadline)
        sock.close()
        return answer

    def status(self) -> dict:
        return self.request("status")

    def file(self, name: str) -> dict | None:
        try:
            with open(os.path.join(self.state_dir, name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def log_entries(self) -> list[dict]:
        with open(self.log_path) as f:
            return [json.loads(line) for line in f]

    def runtime_ids(self) -> list[str]:
        result = subprocess.run([self.runtime, "--root", self.runtime_root, "list", "-q"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        return result.stdout.split()

    def shim_alive(self) -> bool:
        pid = self.answer.get("shim_pid")
        return bool(pid) and _alive(pid)

    def end(self) -> None:
        """Stop and shut down (or kill) the shim; delete the container regardless."""
        if self.shim_alive():
            try:
                self.request("stop", deadline=15, timeout=0)
                self.request("shutdown", deadline=15)
            except (OSError, AssertionError):
                pass
            wait_gone(self.answer["shim_pid"], 10, kill=True)
        if os.path.isdir(self.runtime_root):
            for container_id in self.runtime_ids():
                subprocess.run([self.runtime, "--root", self.runtime_root, "delete", "--force",
                                container_id], capture_output=True, check=False)  # fmt: skip


def _alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


def wait_gone(pid: int, timeout: float = 10, kill: bool = False) -> None:
    """Wait for pid to exit (reaping it if it is ours, as pytest is a subreaper)."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            if not kill:
                raise AssertionError(f"process {pid} still running")
            os.kill(pid, signal.SIGKILL)
            kill = False
            deadline = time.monotonic() + timeout
        time.sleep(0.01)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@pytest.fixture
def shims(tmp_path, bundle):
    """Make Shims for this test's bundle; all of them are ended afterwards."""
    made = []
    counter = [0]

    def make(runtime: str | None = None) -> Shim:
        counter[0] += 1
        shim = Shim(tmp_path, bundle, f"shim{os.getpid()}-{counter[0]}", runtime or runtime_path())
        made.append(shim)
        return shim

    yield make
    for shim in made:
        shim.end()
    for shim in made:
        diagnostics = os.path.join(shim.state_dir, "shim.log")
        if os.path.exists(diagnostics):
            with open(diagnostics) as f:
                text = f.read()
            assert "internal error" not in text, text
    for shim in made:
        if os.path.isdir(shim.runtime_root):
            assert shim.runtime_ids() == [], "containers left after the shim ended"


@pytest.fixture(params=["capsa-runtime", "runc"])
def peer(request) -> str | None:
    """The runtime of a test run under each: capsa-runtime (None, the shims
    fixture's default) and runc, where it is installed."""
    if request.param == "capsa-runtime":
        return None
    path = shutil.which("runc")
    if path is None:
        pytest.skip("runc is not installed")
    return path


def read_stream(sock: socket.socket, until, timeout: float = 10) -> bytes:
    """Read sock until until(data) holds (or EOF); return what was read."""
    data = b""
    deadline = time.monotonic() + timeout
    while not until(data):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"timed out reading; got {data!r}") from None
        if not chunk:
            break
        data += chunk
    return data


def frames_text(data: bytes) -> dict[int, bytes]:
    found, rest = read_frames(data)
    assert rest == b""
    out: dict[int, bytes] = {}
    for stream, payload in found:
        out[stream] = out.get(stream, b"") + payload
    return out


# --- start, exit, logs, shutdown ---------------------------------------------------------


def test_exit_code_logs_wait_and_shutdown(shims, bundle, peer):
    bundle.args("sh", "-c", "echo out; echo err >&2; echo more; printf partial; exit 3")
    shim = shims(peer)
    answer = shim.start()
    assert set(answer) == {"pid", "shim_pid"} and answer["pid"] > 0
    assert shim.request("wait") == {"exit_code": 3}
    exit_record = shim.file("exit.json")
    assert exit_record["exit_code"] == 3 and exit_record["oom_killed"] is False
    assert exit_record["finished_at"].endswith("Z")
    assert shim.file("shim.json")["pid"] == answer["pid"]
    assert shim.file("shim.json")["shim_pid"] == answer["shim_pid"]
    entries = shim.log_entries()
    assert [(e["stream"], e["log"]) for e in entries if e["stream"] == "stdout"] == [
        ("stdout", "out\n"), ("stdout", "more\n"), ("stdout", "partial")]  # fmt: skip
    assert [e["log"] for e in entries if e["stream"] == "stderr"] == ["err\n"]
    assert all(set(e) == {"log", "stream", "time"} and e["time"].endswith("Z") for e in entries)
    status = shim.status()
    assert status["status"] == "exited" and status["exit_code"] == 3
    assert status["restart_count"] == 0 and status["health"] is None
    assert status["started_at"] <= status["finished_at"]
    assert shim.runtime_ids() == []  # deleted at exit
    assert shim.request("shutdown") == {"ok": True}
    wait_gone(answer["shim_pid"])
    assert not os.path.exists(shim.socket_path)
    assert shim.runtime_ids() == []


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")[:-1]


def _open_files(pid: int) -> dict[int, str]:
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def test_capsa_runtime_runs_in_a_fork_of_the_shim(shims, bundle):
    """The fast path: capsa's own runtime on the shim's interpreter is not
    exec'd, so the created init (a fork of create) still has the shim's
    command line; and it holds none of the shim's descriptors."""
    needs_the_launchers()
    bundle.args("sh", "-c", "ls /proc/self/fd")
    shim = shims()
    answer = shim.start("--start-on-attach")  # the init waits for the first attach
    assert _cmdline(answer["pid"]) == _cmdline(answer["shim_pid"])  # not `capsa-runtime create`
    shims_files = set(_open_files(answer["shim_pid"]).values())
    inits_own = {fd: name for fd, name in _open_files(answer["pid"]).items() if fd > 2}
    assert not shims_files & set(inits_own.values()), inits_own
    client, _ = shim.connect({"op": "attach", "stdin": False})
    output = frames_text(read_stream(client, lambda d: False))
    client.close()
    assert shim.request("wait") == {"exit_code": 0}
    assert output == {1: b"0\n1\n2\n3\n"}  # ls's own directory is 3
    assert shim.runtime_ids() == []  # start and delete ran too


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(child) for child in f.read().split())


def test_the_runtimes_zygote_is_let_go_once_the_container_is_no_longer_young(shims, bundle):
    """The fast path's forks come from a child of the shim that lives
    forked_runtime.LINGER after the start; then the shim's one child is the
    init, and the runtime is exec'd."""
    needs_the_launchers()
    bundle.args("sleep", "1000")
    shim = shims()
    answer = shim.start()
    wait_for(lambda: _children(answer["shim_pid"]) == [answer["pid"]], what="the zygote gone")
    client, reply = shim.connect(exec_request(bundle, "sh", "-c", "exit 5"))
    assert reply["ok"] is True and _exit_frame(read_stream(client, lambda d: False)) == {"exit_code": 5}
    client.close()


def test_another_runtime_is_run_as_a_program(shims, bundle):
    if not shutil.which("runc"):
        pytest.skip("runc is not installed")
    bundle.args("true")
    shim = shims(shutil.which("runc"))
    answer = shim.start("--start-on-attach")
    assert _cmdline(answer["pid"])[:2] == [shutil.which("runc"), "init"]  # runc re-exec'd itself
    client, _ = shim.connect({"op": "attach", "stdin": False})
    read_stream(client, lambda d: False)
    client.close()
    assert shim.request("wait") == {"exit_code": 0}


def test_the_shim_is_detached_from_its_caller(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    answer = shim.start()
    with open(f"/proc/{answer['shim_pid']}/stat") as f:
        pgrp, session = f.read().rsplit(")", 1)[1].split()[2:4]
    # the middle process made a session and left: the shim is in it, not in ours
    assert int(session) == int(pgrp) != os.getsid(0)
    assert int(pgrp) != os.getpgrp()
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{answer['shim_pid']}/fd/{fd}") == "/dev/null"
    assert oct(os.stat(shim.socket_path).st_mode & 0o777) == "0o600"
    assert shim.status()["status"] == "running"


def test_a_standby_shim_takes_its_flags_on_stdin(shims, bundle):
    bundle.args("sh", "-c", "exit 7")
    shim = shims()
    answer = shim.start(standby=True)
    assert set(answer) == {"pid", "shim_pid"}
    # ps still tells whose shim it is
    assert _cmdline(answer["shim_pid"])[-5:] == ["--standby", "--id", shim.id, "--state-dir", shim.state_dir]
    assert shim.request("wait") == {"exit_code": 7}
    assert shim.runtime_ids() == []


def test_a_standby_shim_refuses_flags_for_another_container(shims, bundle):
    shim, other = shims(), shims()
    argv = shim_command() + ["--standby", "--id", other.id, "--state-dir", other.state_dir]
    done = subprocess.run(argv, input=json.dumps(shim.argv()[len(shim_command()):]), capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 1 and "not for the container" in json.loads(done.stdout)["error"]
    assert not os.path.exists(shim.state_dir) and not os.path.exists(other.state_dir)


def test_a_standby_shim_given_no_flags_does_nothing():
    standby = shim_command() + ["--standby", "--id", "x", "--state-dir", "/run/capsa-test-unused"]
    unused = subprocess.run(standby, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    assert (unused.returncode, unused.stdout, unused.stderr) == (0, b"", b"")
    bad = subprocess.run(standby, input=b'{"id": "x"}', capture_output=True, timeout=30, check=False)
    assert bad.returncode == 1 and bad.stderr == b""
    assert "one JSON array of strings" in json.loads(bad.stdout)["error"]


def test_a_standby_shim_is_named_by_its_id_and_state_dir_alone():
    for names in (["--id", "x"], ["--id", "x", "--state-dir", "relative"], ["--id", "../x", "--state-dir", "/run/x"],
                  ["--state-dir", "/run/x", "--id", "x"], ["--id", "x", "--state-dir", "/run/x", "--bundle", "/b"]):
        done = subprocess.run(shim_command() + ["--standby", *names], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 1 and done.stderr == b"", names
        assert json.loads(done.stdout)["error"]


def _same_command(argv: list[str]) -> list[int]:
    """The processes whose command line ends with ARGV's arguments (the
    launchers' run through their interpreter)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and _cmdline(int(name))[-len(argv) + 1 :] == argv[1:]:
                found.append(int(name))
        except OSError:
            pass  # gone meanwhile
    return found


def test_a_standby_shim_forks_away_and_forks_its_zygote_before_its_flags_come(shims, bundle):
    """What runs on the other core while the engine makes the bundle: the
    shim's forks, its imports and its zygote's."""
    needs_the_launchers()
    bundle.args("true")
    shim = shims()
    argv = shim_command() + ["--standby", "--id", shim.id, "--state-dir", shim.state_dir]
    relay = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: len(_same_command(argv)) == 3, what="the relay, the shim and its zygote")
        waiting = [pid for pid in _same_command(argv) if pid != relay.pid]
        shim_pid = next(pid for pid in waiting if _ppid(pid) not in waiting)
        assert _children(shim_pid) == [pid for pid in waiting if pid != shim_pid]  # the zygote
        assert os.getsid(shim_pid) != os.getsid(0)  # forked away already
        assert not os.path.exists(shim.state_dir)  # nothing made before the flags
        flags = json.dumps(shim.argv()[len(shim_command()):]).encode()
        out, _ = relay.communicate(flags, timeout=30)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
    shim.answer = json.loads(out)
    assert shim.answer["shim_pid"] == shim_pid
    assert shim.request("wait") == {"exit_code": 0}


def test_a_container_that_cannot_start_is_an_error_answer(shims, bundle):
    bundle.args("/no/such/program")
    shim = shims()
    answer = shim.start(check=False)
    assert "no/such/program" in answer["error"] and "\n" not in answer["error"]
    assert answer["error"].startswith(f"failed to create container {shim.id}: ")
    assert not os.path.exists(shim.socket_path)
    assert shim.runtime_ids() == []


def test_a_second_shim_for_the_same_state_dir_is_refused(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start()
    again = shim.start(check=False)
    assert "already serves" in again["error"]
    shim.answer = {"pid": 1, "shim_pid": shim.file("shim.json")["shim_pid"]}
    assert shim.status()["status"] == "running"


def test_the_engine_dying_does_not_kill_the_container(shims, bundle, tmp_path):
    """Start the shim from a process that is then killed with its whole group."""
    bundle.args("sleep", "1000")
    shim = shims()
    answer_path = tmp_path / "answer"
    engine = subprocess.Popen(
        ["sh", "-c", '"$@" > "$0"; sleep 1000', str(answer_path), *shim.argv()],
        start_new_session=True)  # fmt: skip
    wait_for(lambda: answer_path.exists() and answer_path.read_text().endswith("\n"), 30,
             "the shim's answer")  # fmt: skip
    shim.answer = json.loads(answer_path.read_text())
    os.killpg(engine.pid, signal.SIGKILL)
    engine.wait()
    time.sleep(0.2)
    assert shim.shim_alive() and _alive(shim.answer["pid"])
    status = shim.status()
    assert status["status"] == "running" and status["pid"] == shim.answer["pid"]


def test_a_killed_shim_leaves_what_the_engine_needs(shims, bundle):
    """SIGKILL the shim: shim.json still names the init, exit.json is absent, and
    the engine cleans up through the runtime (see capsa.shim's docstring)."""
    bundle.args("sleep", "1000")
    shim = shims()
    answer = shim.start()
    os.kill(answer["shim_pid"], signal.SIGKILL)
    wait_gone(answer["shim_pid"])
    record = shim.file("shim.json")
    assert record["pid"] == answer["pid"] and shim.file("exit.json") is None
    with open(f"/proc/{answer['pid']}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[19]) == record["init_start_time"]
    assert shim.runtime_ids() == [shim.id]  # the container lives on; the fixture deletes it


# --- stop, kill, restart ---------------------------------------------------------------------


def test_stop_kills_after_the_timeout_when_term_is_ignored(shims, bundle):
    # sleep as pid 1 of its namespace: SIGTERM without a handler is not delivered.
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start("--restart", "always")
    begun = time.monotonic()
    assert shim.request("stop", timeout=0.5) == {"ok": True, "exit_code": 137}
    assert time.monotonic() - begun >= 0.5
    status = shim.status()
    assert status["status"] == "exited" and status["restart_count"] == 0  # no restart
    assert shim.request("wait") == {"exit_code": 137}


def test_stop_with_a_term_handler_exits_143_at_once(shims, bundle):
    bundle.args("sh", "-c", "trap 'exit 143' TERM; echo ready; while :; do sleep 0.05; done")
    shim = shims()
    shim.start("--restart", "unless-stopped")
    wait_for(lambda: os.path.exists(shim.log_path) and shim.log_entries(), 10, "ready")
    begun = time.monotonic()
    assert shim.request("stop", timeout=10) == {"ok": True, "exit_code": 143}
    assert time.monotonic() - begun < 5
    assert shim.status()["status"] == "exited"


def test_kill_signals_the_container(shims, bundle):
    bundle.args("sh", "-c", "trap 'echo got-usr1' USR1; while :; do sleep 0.05; done")
    shim = shims()
    shim.start("--stop-signal", "SIGINT", "--restart", "always")
    time.sleep(0.3)  # the trap is set
    assert shim.request("kill", signal="USR1") == {"ok": True}
    wait_for(lambda: any(e["log"] == "got-usr1\n" for e in shim.log_entries()), 10, "the trap")
    assert shim.status()["status"] == "running"
    assert shim.request("kill", signal=0 + 9) == {"ok": True}
    assert shim.request("wait") == {"exit_code": 137}  # SIGKILL ends `always` (Docker's rule)
    assert shim.status()["restart_count"] == 0
    assert "not running" in shim.request("kill", signal=9)["error"]


def test_restart_on_failure_stops_after_the_limit(shims, bundle):
    bundle.args("sh", "-c", "echo run; exit 2")
    shim = shims()
    shim.start("--restart", "on-failure:2")
    seen = set()

    def finished():
        status = shim.status()
        seen.add(status["status"])
        return status["status"] == "exited"

    wait_for(finished, 30, "the last exit")
    assert shim.request("wait") == {"exit_code": 2}
    status = shim.status()
    assert status["restart_count"] == 2 and status["exit_code"] == 2
    assert [e["log"] for e in shim.log_entries()] == ["run\n"] * 3
    assert shim.file("exit.json")["restart_count"] == 2
    assert shim.file("shim.json")["restart_count"] == 2


def test_stop_during_the_back_off_ends_the_restarts(shims, bundle):
    bundle.args("sh", "-c", "exit 1")
    shim = shims()
    shim.start("--restart", "always")
    wait_for(lambda: shim.status()["restart_count"] >= 3, 30, "three restarts")
    wait_for(lambda: shim.status()["status"] == "restarting", 30, "a back-off")
    assert shim.request("stop", timeout=1) == {"ok": True, "exit_code": 1}
    count = shim.status()["restart_count"]
    time.sleep(2)  # longer than any back-off so far
    assert shim.status()["status"] == "exited" and shim.status()["restart_count"] == count


def test_a_restart_that_cannot_create_ends_with_an_error(shims, bundle):
    bundle.args("sh", "-c", "sleep 0.3; exit 1")
    shim = shims()
    shim.start("--restart", "on-failure")
    bundle.args("/no/such/program")  # read again by the restart's create
    wait_for(lambda: shim.status()["status"] == "exited", 30, "the failed restart")
    status = shim.status()
    assert status["exit_code"] == 1 and status["restart_count"] == 1
    assert status["error"].startswith("failed to restart: failed to create container")
    assert shim.file("exit.json")["error"] == status["error"]
    assert shim.request("wait") == {"exit_code": 1}


def test_clients_that_misbehave_do_not_disturb_the_shim(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start()
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(shim.socket_path)  # and never says anything
    for junk in (b"", b"{not json}\n", b'{"op":"status"', b"x" * 70000 + b"\n"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(shim.socket_path)
        sock.sendall(junk)
        sock.shutdown(socket.SHUT_WR)
        reply = read_stream(sock, lambda d: False)
        sock.close()
        assert reply == b"" or json.loads(reply).keys() <= {"error", "status", "pid", "exit_code",
                                                             "oom_killed", "started_at",
                                                             "finished_at", "restart_count",
                                                             "health", "error"}  # fmt: skip
    gone = socket.socket(socket.AF_UNIX)
    gone.connect(shim.socket_path)
    gone.sendall(b'{"op":"wait"}\n')
    time.sleep(0.1)
    gone.close()  # a waiter that leaves before the exit
    assert shim.status()["status"] == "running"
    assert shim.request("stop", timeout=0) == {"ok": True, "exit_code": 137}
    silent.close()


# --- attach, stdin, tty ------------------------------------------------------------------


def test_attach_sends_stdin_and_frames_the_output(shims, bundle):
    bundle.args("sh", "-c", "cat; echo bye >&2")
    shim = shims()
    shim.start("--stdin")
    watcher, _ = shim.connect({"op": "attach"})
    # Input may follow the request line at once, before the reply.
    writer, answer = shim.connect({"op": "attach", "stdin": True}, then=b"hel")
    assert answer == {"ok": True, "status": "running"}
    writer.sendall(b"lo\n")
    data = read_stream(writer, lambda d: frames_text(d).get(1) == b"hello\n" if
                       len(d) >= 14 and not read_frames(d)[1] else False)  # fmt: skip
    assert data in (b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n",
                    b"\x01\x00\x00\x00\x00\x00\x00\x03hel\x01\x00\x00\x00\x00\x00\x00\x03lo\n")
    writer.shutdown(socket.SHUT_WR)  # the container's stdin closes: cat ends
    rest = read_stream(writer, lambda d: False)  # until the shim hangs up at the exit
    assert frames_text(rest) == {2: b"bye\n"}
    seen = read_stream(watcher, lambda d: False)
    assert frames_text(seen) == {1: b"hello\n", 2: b"bye\n"}
    assert shim.request("wait") == {"exit_code": 0}
    assert "".join(e["log"] for e in shim.log_entries()) == "hello\nbye\n"
    again, answer = shim.connect({"op": "attach"})
    assert answer == {"ok": True, "status": "exited"} and again.recv(1) == b""


def test_without_stdin_the_container_reads_dev_null(shims, bundle):
    bundle.args("sh", "-c", "cat; echo done")
    shim = shims()
    shim.start()
    assert shim.request("wait") == {"exit_code": 0}
    assert [e["log"] for e in shim.log_entries()] == ["done\n"]


def test_tty_echo_and_resize(shims, bundle):
    bundle.process["terminal"] = True
    bundle.args("sh", "-c", "sleep 1; stty size; read line; echo \"got $line\"")
    shim = shims()
    shim.start("--tty", "--stdin")
    client, answer = shim.connect({"op": "attach", "stdin": True})
    assert answer["ok"] is True
    assert shim.request("resize", rows=33, cols=111) == {"ok": True}
    data = read_stream(client, lambda d: b"33 111" in d)
    client.sendall(b"hi\r")
    data += read_stream(client, lambda d: False)
    assert b"hi" in data.split(b"33 111", 1)[1]  # the pty's echo
    assert b"got hi" in data
    assert shim.request("wait") == {"exit_code": 0}
    logged = "".join(e["log"] for e in shim.log_entries())
    assert {e["stream"] for e in shim.log_entries()} == {"stdout"}
    assert "33 111\r\n" in logged and "got hi" in logged
    assert "not running" in shim.request("resize", rows=1, cols=1)["error"]


def test_resize_without_a_tty_is_refused(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start()
    assert "has no terminal" in shim.request("resize", rows=10, cols=10)["error"]
    assert "invalid request" in shim.request("resize", rows=0, cols=10)["error"]
    assert "running: stop it first" in shim.request("shutdown")["error"]


# --- exec --------------------------------------------------------------------------------------


def exec_request(bundle, *args: str, terminal: bool = False, **fields) -> dict:
    """An exec op for ARGS, with the container's own process settings."""
    return {"op": "exec", "process": {**bundle.process, "args": list(args), "terminal": terminal},
            **fields}  # fmt: skip


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def _exit_frame(data: bytes) -> dict:
    """The stream's last frame: the exit code on stream 4."""
    stream, payload = read_frames(data)[0][-1]
    assert stream == 4, data
    return json.loads(payload)


def test_exec_is_the_shims_child_streams_frames_and_ends_with_its_exit_code(shims, bundle, peer):
    bundle.args("sleep", "1000")
    shim = shims(peer)
    answer = shim.start()
    request = exec_request(bundle, "sh", "-c", "cat; echo err >&2; exit 3", stdin=True)
    client, reply = shim.connect(request, then=b"hel")  # input may come with the request
    assert reply["ok"] is True and _ppid(reply["pid"]) == answer["shim_pid"]
    client.sendall(b"lo\n")
    client.shutdown(socket.SHUT_WR)  # cat's stdin closes
    data = read_stream(client, lambda d: False)  # until the shim hangs up
    assert _exit_frame(data) == {"exit_code": 3}
    assert {k: v for k, v in frames_text(data).items() if k != 4} == {1: b"hello\n", 2: b"err\n"}
    wait_for(lambda: not os.path.exists(f"/proc/{reply['pid']}"), what="the exec reaped")
    assert not [name for name in os.listdir(shim.state_dir) if name.startswith("exec-")]
    assert shim.status()["status"] == "running" and shim.log_entries() == []  # not the container's log


def test_exec_with_a_tty_is_resized_by_its_pid(shims, bundle, peer):
    bundle.args("sleep", "1000")
    shim = shims(peer)
    shim.start()
    request = exec_request(bundle, "sh", "-c", 'read line; stty size; echo "got $line"; exit 5',
                           terminal=True, stdin=True)  # fmt: skip
    client, reply = shim.connect(request)
    assert shim.request("resize", rows=33, cols=111, exec=reply["pid"]) == {"ok": True}
    client.sendall(b"hi\r")
    data = read_stream(client, lambda d: False)
    assert _exit_frame(data) == {"exit_code": 5}
    output = frames_text(data)[1]
    assert b"33 111\r\n" in output and b"got hi" in output
    assert "no exec with pid" in shim.request("resize", rows=1, cols=1, exec=reply["pid"])["error"]
    assert "has no terminal" in shim.request("resize", rows=1, cols=1)["error"]  # the container's


def test_exec_detached_runs_on_dev_null_and_is_reaped(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    answer = shim.start()
    sock, reply = shim.connect(exec_request(bundle, "sleep", "999", detach=True))
    assert sock.recv(1) == b""  # hung up after the reply
    sock.close()
    pid = reply["pid"]
    assert _ppid(pid) == answer["shim_pid"]
    assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)} == {"/dev/null"}
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the exec reaped, no zombie")


def test_exec_that_cannot_run_or_in_a_stopped_container_is_an_error(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start()
    error = shim.request("exec", process={**bundle.process, "args": ["/no/such/program"]})["error"]
    assert error.startswith(f"failed to exec in container {shim.id}: ") and "/no/such/program" in error
    assert "process.args must be" in shim.request("exec", process={"args": []})["error"]
    assert not [name for name in os.listdir(shim.state_dir) if name.startswith("exec-")]
    assert shim.request("stop", timeout=0) == {"ok": True, "exit_code": 137}
    error = shim.request("exec", process={**bundle.process, "args": ["true"]})["error"]
    assert error == f"container {shim.id} is not running"


def test_exec_outlives_its_client_and_never_blocks_the_shim(shims, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start()
    # A client that leaves: the process runs on, its output thrown away.
    gone, _ = shim.connect(exec_request(bundle, "sh", "-c", "sleep 0.3; head -c 2000000 /dev/zero;"
                                                            " touch /tmp/finished", stdin=True))  # fmt: skip
    gone.close()
    wait_for(lambda: (host / "finished").exists(), what="the exec to finish without its client")
    # A client that does not read: the process waits for it, the shim does not.
    slow, _ = shim.connect(exec_request(bundle, "sh", "-c", "head -c 8000000 /dev/zero; exit 7"))
    time.sleep(0.5)
    started = time.monotonic()
    assert shim.status()["status"] == "running" and time.monotonic() - started < 1
    data = read_stream(slow, lambda d: False, timeout=30)
    assert _exit_frame(data) == {"exit_code": 7} and len(frames_text(data)[1]) == 8000000


# --- health, OOM -----------------------------------------------------------------------------


def test_healthcheck_turns_unhealthy_when_the_marker_goes(shims, bundle, tmp_path):
    host = shared(bundle, tmp_path)
    (host / "marker").write_text("ok")
    bundle.args("sleep", "1000")
    shim = shims()
    check = json.dumps(["/bin/sh", "-c", "test -f /tmp/marker && echo fine"])
    shim.start("--health-cmd", check, "--health-interval", "0.2", "--health-timeout", "5",
               "--health-retries", "2")  # fmt: skip
    assert shim.status()["health"]["status"] == "starting"
    wait_for(lambda: shim.status()["health"]["status"] == "healthy", 20, "healthy")
    health = shim.status()["health"]
    assert health["log"][-1]["exit_code"] == 0 and health["log"][-1]["output"] == "fine\n"
    (host / "marker").unlink()
    wait_for(lambda: shim.status()["health"]["status"] == "unhealthy", 20, "unhealthy")
    health = shim.file("health.json")
    assert health["status"] == "unhealthy" and health["failing_streak"] >= 2
    assert health["log"][-1]["exit_code"] == 1 and len(health["log"]) <= 5
    assert set(health["log"][-1]) == {"start", "end", "exit_code", "output"}


def test_a_healthcheck_past_its_timeout_is_killed_and_fails(shims, bundle):
    bundle.args("sleep", "1000")
    shim = shims()
    shim.start("--health-cmd", '["sleep", "30"]', "--health-interval", "0.1",
               "--health-timeout", "0.3", "--health-retries", "1")  # fmt: skip
    wait_for(lambda: shim.status()["health"]["status"] == "unhealthy", 20, "unhealthy")
    entry = shim.status()["health"]["log"][0]
    assert entry["exit_code"] == -1 and "exceeded timeout" in entry["output"]
    sleepers = subprocess.run(["pgrep", "-f", "^sleep 30$"], capture_output=True, text=True,
                              check=False)  # fmt: skip
    in_container = [p for p in sleepers.stdout.split() if os.readlink(f"/proc/{p}/ns/pid") ==
                    os.readlink(f"/proc/{shim.answer['pid']}/ns/pid")]  # fmt: skip
    assert len(in_container) <= 1  # at most the probe running now; the timed-out ones are gone


def test_oom_kill_is_recorded(shims, bundle):
    bundle.linux.setdefault("resources", {})["memory"] = {"limit": 8 << 20}
    bundle.args("sh", "-c", 'x=$(head -c 100000000 /dev/zero | tr "\\0" x); echo survived')
    shim = shims()
    shim.start()
    assert shim.request("wait") == {"exit_code": 137}
    assert shim.file("exit.json")["oom_killed"] is True
    assert shim.status()["oom_killed"] is True
    assert not any("survived" in e["log"] for e in shim.log_entries())


def test_log_rotation_while_running(shims, bundle):
    bundle.args("sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done")
    shim = shims()
    shim.start("--log-max-size", "4k", "--log-max-file", "3")
    assert shim.request("wait") == {"exit_code": 0}
    names = sorted(os.listdir(os.path.dirname(shim.log_path)))
    base = os.path.basename(shim.log_path)
    assert names == [base, base + ".1", base + ".2"]
    assert all(os.path.getsize(os.path.join(os.path.dirname(shim.log_path), n)) <= 4096
               for n in names)  # fmt: skip
    assert shim.log_entries()[-1]["log"] == "line-399\n"
