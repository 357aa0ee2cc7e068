"""Healthchecks with Docker's rules: a probe every interval, a streak of failures.

Each probe is `<runtime> exec --pid-file <state-dir>/health.pid ID ARGV...`,
its output (stdout and stderr together) kept up to 4 KiB. Exit 0 is healthy.
A probe still running after the timeout is killed (the process in the
container by its pid, then the runtime's exec) and counts as a failure with
exit code -1. `retries` failures in a row make the container unhealthy; a
failure before the first success within the start period does not count.
Results, the last five of them kept, go to `<state-dir>/health.json`.

Status: "starting" until the first success (or the streak reaches retries),
then "healthy" or "unhealthy"; back to "starting" when the container restarts.
"""

import posix
import time

from capsa.shim.logfile import rfc3339nano
from capsa.shim.loop import IN

MAX_OUTPUT = 4096
MAX_LOG_ENTRIES = 5
TIMEOUT_EXIT_CODE = -1


class Health:
    """The health of one container, as `docker inspect` shows State.Health."""

    def __init__(self, retries: int, start_period: float):
        self.retries = retries
        self.start_period = start_period
        self.status = "starting"
        self.failing_streak = 0
        self.log: list[dict] = []

    def reset(self) -> None:
        """The container (re)started: nothing is known about it yet."""
        self.status = "starting"
        self.failing_streak = 0

    def record(self, start: str, end: str, exit_code: int, output: str,
               since_start: float) -> None:  # fmt: skip
        """One probe's result; since_start is how long the container had run
        when the probe began."""
        self.log = (self.log + [{"start": start, "end": end, "exit_code": exit_code,
                                 "output": output}])[-MAX_LOG_ENTRIES:]  # fmt: skip
        if exit_code == 0:
            self.failing_streak = 0
            self.status = "healthy"
            return
        if self.status == "starting" and since_start < self.start_period:
            return  # still starting up: failures are expected
        self.failing_streak += 1
        if self.failing_streak >= self.retries:
            self.status = "unhealthy"

    def as_dict(self) -> dict:
        return {"status": self.status, "failing_streak": self.failing_streak,
                "log": list(self.log)}  # fmt: skip


class Prober:
    """Runs the probes of one container while it runs, on the shim's loop.

    `children` is the shim's table of child pids to exit callbacks: the shim
    is everyone's reaper, so a probe's end arrives through it.
    """

    def __init__(self, check, loop, runtime, pid_file: str, children: dict, on_result):
        self.check = check
        self.health = Health(check.retries, check.start_period)
        self.loop = loop
        self.runtime = runtime
        self.pid_file = pid_file
        self.children = children
        self.on_result = on_result
        self.timer = None
        self.probe: _Probe | None = None
        self.run_started = 0.0

    def begin(self) -> None:
        """The container started: reset, and probe after one interval."""
        self.end()
        self.health.reset()
        self.run_started = time.monotonic()
        self.timer = self.loop.call_later(self.check.interval, self._start_probe)

    def end(self) -> None:
        """The container stopped: no more probes; one in flight is abandoned."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.probe is not None:
            self.probe.abandon()
            self.probe = None

    def _start_probe(self) -> None:
        self.timer = None
        try:
            self.probe = _Probe(self, time.monotonic() - self.run_started)
        except OSError as err:
            self._finish(rfc3339nano(), 1, f"failed to run the healthcheck: {err}", 0.0)

    def _finish(self, start: str, exit_code: int, output: str, since_start: float) -> None:
        self.probe = None
        self.health.record(start, rfc3339nano(), exit_code, output, since_start)
        self.on_result(self.health)
        self.timer = self.loop.call_later(self.check.interval, self._start_probe)


class _Probe:
    """One run of the healthcheck command."""

    def __init__(self, prober: Prober, since_start: float):
        self.prober = prober
        self.since_start = since_start
        self.start = rfc3339nano()
        self.output = bytearray()
        self.done = False
        try:
            posix.unlink(prober.pid_file)
        except FileNotFoundError:
            pass
        self.pipe_r, pipe_w = posix.pipe2(posix.O_CLOEXEC)
        null = posix.open("/dev/null", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            argv = prober.runtime.exec_argv(prober.pid_file, prober.check.argv)
            self.pid = prober.runtime.spawn(argv, null, pipe_w, pipe_w)
        except BaseException:
            posix.close(self.pipe_r)
            raise
        finally:
            posix.close(pipe_w)
            posix.close(null)
        posix.set_blocking(self.pipe_r, False)
        prober.children[self.pid] = self._exited
        prober.loop.add(self.pipe_r, IN, self._readable)
        self.timer = prober.loop.call_later(prober.check.timeout, self._timed_out)

    def _readable(self, _events: int) -> None:
        self._read()

    def _read(self) -> None:
        while self.pipe_r >= 0:
            try:
                chunk = posix.read(self.pipe_r, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self._close_pipe()  # every writer is gone
                return
            if len(self.output) < MAX_OUTPUT:
                self.output.extend(chunk[: MAX_OUTPUT - len(self.output)])

    def _close_pipe(self) -> None:
        if self.pipe_r >= 0:
            self.prober.loop.remove(self.pipe_r)
            posix.close(self.pipe_r)
            self.pipe_r = -1

    def _exited(self, exit_code: int) -> None:
        if self.done:
            return
        self._read()
        self._settle()
        output = self.output.decode("utf-8", "replace")
        self.prober._finish(self.start, exit_code, output, self.since_start)

    def _timed_out(self) -> None:
        if self.done:
            return
        self.abandon()
        message = f"Health check exceeded timeout ({_seconds(self.prober.check.timeout)})"
        self.prober._finish(self.start, TIMEOUT_EXIT_CODE, message, self.since_start)

    def abandon(self) -> None:
        """Kill the probe: the process in the container, then the runtime's exec."""
        if self.done:
            return
        try:
            with open(self.prober.pid_file, "rb") as f:
                posix.kill(int(f.read().strip()), 9)
        except (OSError, ValueError):
            pass  # not started yet, or already gone
        try:
            posix.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        self._settle()

    def _settle(self) -> None:
        self.done = True
        self.timer.cancel()
        self._close_pipe()


def _seconds(value: float) -> str:
    return f"{value:g}s"
