"""One container's supervision: start, exit, restart, stop, and the socket's ops.

The container's life as the shim drives it:

    created --start--> running --init exits--> exited (for good)
                          ^                      |
                          |            restart policy says so
                          +---- restarting <-----+    (back-off; delete, create, start)

On every exit the shim drains the output, reads the OOM counter, writes
exit.json, and runs `<runtime> delete` (the cgroup goes with it); a restart
then runs create and start again. An exit for good is told to the waiters
and attachers before that delete (requests that come meanwhile are served
once it is done). `shutdown` is the one way out, accepted only once the
container has exited for good.

The shim is the child subreaper of everything it starts, so it reaps every
child: the init's exit is the container's, the runtime commands, probes
and exec'd processes it started are matched by pid, anything else (a
container's orphans when it shares the host's pid namespace) is simply
reaped.
"""

import posix
import time

from capsa.errors import CapsaError, FailedPrecondition
from capsa.shim import forked_runtime, records
from capsa.shim.logfile import JsonFileLog, rfc3339nano
from capsa.shim.loop import Loop
from capsa.shim.oom import OomCounter
from capsa.shim.protocol import reply
from capsa.shim.runtime import Runtime, RuntimeFailed, exit_code
from capsa.shim.server import Server
from capsa.shim.streams import Streams

SIGKILL = 9
# --start-on-attach: start anyway if no client attached within this many seconds.
ATTACH_WAIT = 10.0


class Shim:
    """The supervisor of one container; `start()` then `run()`."""

    def __init__(self, opts, diag, zygote=None):
        self.opts = opts
        self.diag = diag
        self.runtime = Runtime(opts.runtime, opts.runtime_root, opts.runtime_args, opts.id, zygote)
        self.loop = Loop(self.reap, self._internal_error)
        self.log = JsonFileLog(opts.log_path, opts.log_max_size, opts.log_max_files)
        self.streams = Streams(self.loop, self.log, opts.tty, opts.stdin, diag)
        self.server = Server(self.loop, opts.path(records.SOCKET), self.handle)
        self.children: dict[int, object] = {}  # pid -> callback(exit code)
        self.execs = None  # capsa.shim.execs.Execs, from the first exec on
        self.prober = None
        if opts.health is not None:
            from capsa.shim.health import Prober

            self.prober = Prober(opts.health, self.loop, self.runtime,
                                 opts.path(records.HEALTH_PID), self.children,
                                 self._health_changed)  # fmt: skip
        self.status = "created"
        self.pid = 0
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.oom_killed = False
        self.restart_count = 0
        self.stopped_by_user = False
        self.error: str | None = None
        self.run_began = 0.0
        self.oom: OomCounter | None = None
        self.exists = False  # the runtime knows the container (not yet deleted)
        self.waiters: list[tuple[object, str]] = []  # (connection, op) until exited
        self.stop_timer = None
        self.restart_timer = None
        self.attach_timer = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> int:
        """Create and start the container; its init's pid. Raises CapsaError."""
        run = self.streams.prepare(self.opts.path(records.CONSOLE))
        try:
            created = self.runtime.create(
                self.opts.bundle, self.opts.path(records.INIT_PID), run.child, run.drain,
                run.console, run.console_path)  # fmt: skip
        except BaseException:
            run.close_all()
            raise
        self.exists = True
        if created.output.strip():
            self.diag.warn(f"runtime create said: {created.output.decode(errors='replace')}")
        self.streams.begin(run, created.master)
        self.oom = OomCounter.for_pid(created.pid)  # while the init is alive
        self.pid = created.pid
        if self.opts.start_on_attach and self.restart_count == 0:
            # `run -it`: the first client attaches before the program starts,
            # so it sees the first prompt (as docker attaches before start).
            self.status = "created"
            self.attach_timer = self.loop.call_later(ATTACH_WAIT, self._start_created)
            return self.pid
        self._begin_running()
        return self.pid

    def _start_created(self) -> None:
        """Start the created container (first attach, or ATTACH_WAIT passed)."""
        self.attach_timer.cancel()
        try:
            self._begin_running()
        except CapsaError as err:
            self.error = f"failed to start: {err}"
            self.diag.error(self.error)

    def _begin_running(self) -> None:
        try:
            self.runtime.start()
        except BaseException:
            self._delete(force=True)
            self.streams.end_run()
            raise
        self.status = "running"
        self.started_at = rfc3339nano()
        self.run_began = time.monotonic()
        records.write(self.opts.state_dir, records.SHIM, records.shim_record(
            self.opts.id, self.opts.state_dir, self.pid, self.started_at, self.restart_count))
        records.remove(self.opts.state_dir, records.EXIT)
        if self.prober is not None:
            self.prober.begin()
            self._health_changed(self.prober.health)

    def run(self) -> None:
        """Serve until `shutdown`."""
        self.server.serve()
        self.loop.call_later(forked_runtime.LINGER, self.runtime.release_zygote)
        self.loop.run()

    def close(self) -> None:
        self.runtime.release_zygote()
        self.streams.detach_all()
        self.streams.end_run()
        self.log.close()
        self.server.close()

    def reap(self) -> None:
        """Reap every exited child; the init's exit is the container's."""
        while True:
            try:
                pid, status = posix.waitpid(-1, posix.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid and self.status == "running":
                self.container_exited(exit_code(status))
                continue
            callback = self.children.pop(pid, None)
            if callback is not None:
                callback(exit_code(status))

    def container_exited(self, code: int) -> None:
        self.exit_code = code
        self.oom_killed = self.oom is not None and self.oom.killed()
        self.streams.drain()  # first: the log's times stay before finished_at
        self.streams.end_run()
        self.finished_at = rfc3339nano()
        if self.prober is not None:
            self.prober.end()
        if self.stop_timer is not None:
            self.stop_timer.cancel()
            self.stop_timer = None
        ran_for = time.monotonic() - self.run_began
        delay = self.opts.restart.next_delay(code, ran_for, self.stopped_by_user)
        oom = " (oom)" if self.oom_killed else ""
        then = f", restarting in {delay:g}s" if delay is not None else ""
        self.diag.write("info", f"container exited with {code}{oom}{then}")
        self._write_exit()
        if delay is None:
            # The waiters first: the exit is known, and what the engine does
            # next (the network, the rootfs) can overlap the runtime's delete.
            self._finish()
            self._delete()
            self.runtime.release_zygote()  # the last runtime command it could speed up
            return
        self._delete()
        self.status = "restarting"
        self.restart_timer = self.loop.call_later(delay, self._restart)

    def _restart(self) -> None:
        self.restart_timer = None
        self.restart_count += 1
        try:
            self.start()
        except (CapsaError, OSError) as err:
            self.error = f"failed to restart: {err}"
            self.diag.error(self.error)
            self._write_exit()
            self._finish()

    def _finish(self) -> None:
        """Exited for good: answer the waiters, hang up on the attachers."""
        self.status = "exited"
        self.streams.detach_all()
        waiters, self.waiters = self.waiters, []
        for conn, op in waiters:
            if op == "stop":
                conn.reply(reply(ok=True, exit_code=self.exit_code))
            else:
                conn.reply(reply(exit_code=self.exit_code))

    def _write_exit(self) -> None:
        records.write(self.opts.state_dir, records.EXIT, {
            "exit_code": self.exit_code, "oom_killed": self.oom_killed,
            "finished_at": self.finished_at, "started_at": self.started_at,
            "restart_count": self.restart_count, "error": self.error,
        })  # fmt: skip

    def _delete(self, force: bool = False) -> None:
        if not self.exists:
            return
        try:
            self.runtime.delete(force)
        except RuntimeFailed as err:
            if force:
                self.diag.error(str(err))
                return
            self.diag.warn(f"{err}; forcing it")
            try:
                self.runtime.delete(True)
            except RuntimeFailed as err:
                self.diag.error(str(err))
                return
        self.exists = False

    def _internal_error(self, err: Exception) -> None:
        import traceback

        self.diag.error("internal error: " + "".join(traceback.format_exception(err)))

    def _health_changed(self, health) -> None:
        records.write(self.opts.state_dir, records.HEALTH, health.as_dict())

    # --- the socket's ops -----------------------------------------------------------

    def handle(self, conn, request) -> None:
        getattr(self, "op_" + request.op)(conn, request)

    def op_status(self, conn, _request) -> None:
        conn.reply(reply(**self.status_record()))

    def status_record(self) -> dict:
        return {
            "status": self.status, "pid": self.pid if self.status == "running" else 0,
            "exit_code": self.exit_code,
            "oom_killed": self.oom_killed, "started_at": self.started_at,
            "finished_at": self.finished_at, "restart_count": self.restart_count,
            "error": self.error,
            "health": self.prober.health.as_dict() if self.prober is not None else None,
        }  # fmt: skip

    def op_wait(self, conn, _request) -> None:
        if self.status == "exited":
            conn.reply(reply(exit_code=self.exit_code))
            return
        conn.park()
        self.waiters.append((conn, "wait"))

    def op_kill(self, conn, request) -> None:
        if self.status != "running":
            raise FailedPrecondition(f"container {self.opts.id} is not running")
        signum = request.signal if request.signal is not None else SIGKILL
        self.runtime.kill(signum)
        disable = request.disable_restart
        if disable is None:  # Docker's ExitOnNext rule
            disable = signum in (SIGKILL, self.opts.stop_signal) or not self.opts.stop_signal_given
        if disable:
            self.stopped_by_user = True
        conn.reply(reply(ok=True))

    def op_stop(self, conn, request) -> None:
        self.stopped_by_user = True
        if self.status == "restarting":
            self.restart_timer.cancel()
            self.restart_timer = None
            self._finish()
        if self.status != "running":
            conn.reply(reply(ok=True, exit_code=self.exit_code))
            return
        conn.park()
        self.waiters.append((conn, "stop"))
        signum = request.signal if request.signal is not None else self.opts.stop_signal
        if signum != SIGKILL:
            self._kill_quietly(signum)
        if self.stop_timer is None:
            delay = request.timeout if signum != SIGKILL else 0
            self.stop_timer = self.loop.call_later(delay, self._stop_timed_out)

    def _stop_timed_out(self) -> None:
        self.stop_timer = None
        if self.status == "running":
            self._kill_quietly(SIGKILL)

    def _kill_quietly(self, signum: int) -> None:
        try:
            self.runtime.kill(signum)
        except RuntimeFailed as err:  # it may be exiting already
            self.diag.warn(str(err))

    def op_attach(self, conn, request) -> None:
        conn.reply(reply(ok=True, status=self.status), close=False)
        sock = conn.take()
        if self.status == "exited":
            sock.close()
            return
        self.streams.attach(sock, request.stdin, conn.rest)
        if self.status == "created":
            self._start_created()

    def op_resize(self, conn, request) -> None:
        from capsa.linux import tty

        if request.exec_pid is not None:
            if self.execs is None:
                raise FailedPrecondition(f"no exec with pid {request.exec_pid} is running")
            master = self.execs.terminal(request.exec_pid)
        elif not self.opts.tty:
            raise FailedPrecondition(f"container {self.opts.id} has no terminal")
        elif self.streams.master < 0:
            raise FailedPrecondition(f"container {self.opts.id} is not running")
        else:
            master = self.streams.master
        try:
            tty.set_size(master, request.rows, request.cols)
        except OSError as err:
            raise FailedPrecondition(f"failed to resize the terminal: {err.strerror}") from None
        conn.reply(reply(ok=True))

    def op_exec(self, conn, request) -> None:
        if self.status != "running":
            raise FailedPrecondition(f"container {self.opts.id} is not running")
        if self.execs is None:
            from capsa.shim.execs import Execs  # here: a shim that never runs one stays lean

            self.execs = Execs(self.loop, self.runtime, self.opts.state_dir, self.children)
        # The console socket lives only while the runtime runs, one command at a time: create's serves.
        self.execs.start(conn, request, self.opts.path(records.CONSOLE))

    def op_shutdown(self, conn, _request) -> None:
        if self.status != "exited":
            raise FailedPrecondition(f"container {self.opts.id} is {self.status}: stop it first")
        self._delete(force=True)
        conn.reply(reply(ok=True))
        self.loop.stop()
