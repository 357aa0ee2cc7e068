"""The engine: containers from images, each watched by its own capsa-shim
that runs an OCI runtime — `capsa run` without a daemon.

create makes the record (the name is claimed first, so a duplicate fails
before any file exists), the overlay rootfs and the bundle; start hands the
bundle to a new shim; everything after asks the shim, and copies what it
says into the record, which therefore stays true after the shim is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

from capsa import record
from capsa.engine import names, runtimes, shim
from capsa.engine.paths import Paths, default_state, new_id
from capsa.engine.records import Container, Containers, now
from capsa.engine.volumes import Volumes
from capsa.errors import AlreadyExists, CapsaError, FailedPrecondition, InvalidArgument, NotFound
from capsa.images.store import Image, ImageStore
from capsa.linux import mount as mounts

ACTIVE = ("running", "paused")
STOP_TIMEOUT = 10
SOCKET_PATH_MAX = 108  # sun_path, NUL included
# What the record says when no shim is left to tell the exit code.
UNKNOWN_EXIT = 255


class Engine:
    def __init__(self, root: str | None = None, state: str | None = None):
        self.images = ImageStore(root)
        self.root = self.images.root
        self.state = state or default_state()
        self.containers = Containers(self.images.conn)
        self.volumes = Volumes(self.root, self.images.conn)
        self._wiring = None

    def close(self) -> None:
        self.images.close()

    @property
    def wiring(self):
        """The network side (capsa.network), loaded when first needed."""
        if self._wiring is None:
            from capsa.network.endpoints import Wiring

            self._wiring = Wiring(self)
        return self._wiring

    def paths(self, container: Container) -> Paths:
        return Paths(self.root, self.state, container.id)

    # -- create

    def create(self, options, pull=None, container_id: str | None = None) -> Container:
        """A new container from OPTIONS, with CONTAINER_ID if given (a new
        one by default); PULL(name) is called when the image is not in the
        store (the CLI pulls it with progress)."""
        image = self._image(options.image, pull)
        image_defaults(options, json.loads(self.images.content.read(image.id)).get("config") or {})
        from capsa.engine import bundle  # the spec's modules: only create needs them

        self._check_state_dir()
        self.wiring.resolve_mode(options)
        runtime = runtimes.resolve(options.runtime)
        name = names.check(options.name) if options.name else names.generate(self.containers.name_taken)
        container = Container(id=container_id or new_id(), name=name, image=image.id, image_name=options.image,
                              created=time.time(), state="created", runtime=runtime,
                              config=record.asdict(options))  # fmt: skip
        container = self._add(container, name_given=bool(options.name))
        try:
            self.wiring.plan(container.id, options)
            document = bundle.prepare(self, container, image, options)
            # ps shows the command the image and the flags made
            self.containers.update(container.id, config={**container.config,
                                                         "process_args": document["process"]["args"]})  # fmt: skip
        except BaseException:
            self._remove_files(container)
            self.containers.delete(container.id)
            raise
        return self.containers.get(container.id)

    def _add(self, container: Container, name_given: bool) -> Container:
        """Record CONTAINER. A made-up name that another `capsa run` took
        since it was drawn (20 started at once draw from 1200) is drawn again."""
        for _ in range(10):
            try:
                self.containers.add(container)
                return container
            except AlreadyExists:
                if name_given:
                    raise
                container = record.replace(container, name=names.generate(self.containers.name_taken))
        self.containers.add(container)
        return container

    def _check_state_dir(self) -> None:
        """A shim's socket path must fit a unix socket address (108 bytes)."""
        longest = Paths(self.root, self.state, "0" * 64).socket
        if len(longest.encode()) >= SOCKET_PATH_MAX:
            raise FailedPrecondition(f"the state directory {self.state} is too long: a container's shim "
                                     f"socket would need {len(longest.encode())} of the {SOCKET_PATH_MAX - 1} "
                                     "bytes a unix socket path may have; choose a shorter CAPSA_STATE")  # fmt: skip

    def _image(self, name: str, pull) -> Image:
        try:
            return self.images.lookup(name)
        except NotFound:
            if pull is None:
                raise
        pull(name)
        return self.images.lookup(name)

    # -- start, and what the shim says

    def start(self, container: Container, attach_first: bool = False,
              standby: shim.Standby | None = None) -> Container:  # fmt: skip
        """Start CONTAINER under a new shim (STANDBY's, if one was started
        ahead); ATTACH_FIRST: its program starts when the first client
        attaches (a foreground `run -it`)."""
        container = self.refresh(container)
        if container.state in ACTIVE:
            return container
        paths = self.paths(container)
        self._retire_shim(container)
        if not os.path.ismount(paths.rootfs):
            from capsa.engine import bundle

            bundle.mount_rootfs(self, container, self.images.get(container.image))
        os.makedirs(paths.state, mode=0o700, exist_ok=True)
        self.wiring.connect(container)
        args = self._shim_args(container, paths) + (["--start-on-attach"] if attach_first else [])
        answer = shim.start(container.id, paths.state, args, standby)
        self.containers.update(container.id, state="running", pid=answer["pid"], exit_code=0,
                               oom_killed=0, started_at=now(), finished_at="")  # fmt: skip
        return self.containers.get(container.id)

    def _shim_args(self, container: Container, paths: Paths) -> list[str]:
        options = container.config
        args = ["--id", container.id, "--bundle", paths.bundle, "--state-dir", paths.state,
                "--runtime", container.runtime, "--runtime-root", paths.runtime_root,
                "--log-path", paths.log]  # fmt: skip
        log_opts = dict(opt.split("=", 1) for opt in options.get("log_opts") or [])
        if "max-size" in log_opts:
            from capsa.engine.options import parse_bytes

            args += ["--log-max-size", str(parse_bytes(log_opts["max-size"]))]
        if "max-file" in log_opts:
            args += ["--log-max-file", log_opts["max-file"]]
        if options.get("tty"):
            args.append("--tty")
        if options.get("stdin"):
            args.append("--stdin")
        if options.get("restart") and options["restart"] != "no":
            args += ["--restart", options["restart"]]
        if options.get("stop_signal"):
            args += ["--stop-signal", str(options["stop_signal"])]
        return args + health_args(options)

    def refresh(self, container: Container) -> Container:
        """The record, brought up to date with what the shim knows."""
        if container.state not in ACTIVE:
            return container
        paths = self.paths(container)
        try:
            status = shim.call(paths.socket, "status")
        except (shim.ShimGone, OSError):
            return self._shim_lost(container, paths)
        fields = {"restart_count": status.get("restart_count", 0)}
        if status["status"] == "exited":
            fields.update(state="exited", exit_code=status["exit_code"], pid=0,
                          oom_killed=int(bool(status.get("oom_killed"))),
                          finished_at=status.get("finished_at") or now())  # fmt: skip
        elif status.get("pid"):
            fields.update(pid=status["pid"], started_at=status.get("started_at") or container.started_at)
        self.containers.update(container.id, **fields)
        return self.containers.get(container.id)

    def shim_status(self, container: Container) -> dict | None:
        """What the container's shim says of it now (its `status` reply:
        restarting, health...); None without a shim."""
        try:
            return shim.call(self.paths(container).socket, "status")
        except (shim.ShimGone, OSError):
            return None

    def _shim_lost(self, container: Container, paths: Paths) -> Container:
        """No shim answers: its exit file if it wrote one, else the runtime's
        word on whether the container still runs."""
        recorded = self.record_exit(container)
        if recorded is not None:
            return recorded
        if self._runtime_status(container) in ("running", "paused", "created"):
            return container
        self.containers.update(container.id, state="exited", pid=0, exit_code=UNKNOWN_EXIT, finished_at=now())
        return self.containers.get(container.id)

    def record_exit(self, container: Container) -> Container | None:
        """The record marked exited as the shim's exit.json says (None
        without one), without asking the shim: it writes the file before
        it answers a wait or hangs up on an attacher."""
        try:
            with open(self.paths(container).exit_file) as f:
                done = json.load(f)
            fields = {"exit_code": done["exit_code"], "oom_killed": int(bool(done.get("oom_killed"))),
                      "finished_at": done.get("finished_at", ""),
                      "restart_count": done.get("restart_count", container.restart_count)}  # fmt: skip
        except (FileNotFoundError, ValueError, KeyError):
            return None
        self.containers.update(container.id, state="exited", pid=0, **fields)
        return self.containers.get(container.id)

    def _runtime(self, container: Container, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        import subprocess  # 9 ms of imports: only rm, pause and recovery run the runtime here

        paths = self.paths(container)
        result = subprocess.run([container.runtime, "--root", paths.runtime_root, *args], text=True,
                                stdin=subprocess.DEVNULL, capture_output=True, check=False)  # fmt: skip
        if check and result.returncode != 0:
            why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
            raise CapsaError(f"failed to {args[0]} container {container.id[:12]}: {why}")
        return result

    def _runtime_status(self, container: Container) -> str | None:
        result = self._runtime(container, "state", container.id)
        try:
            return json.loads(result.stdout)["status"] if result.returncode == 0 else None
        except (ValueError, KeyError):
            return None

    # -- signals, stop, wait

    def kill(self, container: Container, signum: int = signal.SIGKILL) -> None:
        container = self.refresh(container)
        if container.state not in ACTIVE:
            raise FailedPrecondition(f"Cannot kill container: {container.id[:12]}: "
                                     f"Container {container.id[:12]} is not running")  # fmt: skip
        try:
            shim.call(self.paths(container).socket, "kill", signal=signum)
        except shim.ShimGone:
            self._runtime(container, "kill", container.id, str(signum), check=True)

    def stop(self, container: Container, timeout: int | None = None, signum: int | None = None) -> Container:
        """Stop CONTAINER: its stop signal (or SIGNUM), SIGKILL after TIMEOUT
        seconds; a restart that is pending is called off."""
        container = self.refresh(container)
        if container.state not in ACTIVE:
            return container
        if container.state == "paused":
            self.unpause(container)
        if timeout is None:
            timeout = container.config.get("stop_timeout") or STOP_TIMEOUT
        signal_field = {"signal": signum} if signum is not None else {}
        try:
            shim.call(self.paths(container).socket, "stop", wait=None, timeout=timeout, **signal_field)
        except shim.ShimGone:
            self._runtime(container, "kill", container.id, "KILL")
        return self._settle(container)

    def _settle(self, container: Container, seconds: float = 30) -> Container:
        deadline = time.monotonic() + seconds
        while (container := self.refresh(container)).state in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.02)
        return container

    def wait(self, container: Container) -> int:
        """Block until the container exits for good; its exit code."""
        container = self.refresh(container)
        if container.state in ACTIVE:
            paths = self.paths(container)
            try:
                shim.call(paths.socket, "wait", wait=None)
            except shim.ShimGone:
                pass
            # exit.json is written before the shim answers, which it does
            # before the runtime's delete: no need to ask it again meanwhile.
            container = self.record_exit(container) or self._settle(container)
        return container.exit_code

    def pause(self, container: Container) -> None:
        if self.refresh(container).state != "running":
            raise FailedPrecondition(f"Container {container.id[:12]} is not running")
        self._runtime(container, "pause", container.id, check=True)
        self.containers.update(container.id, state="paused")

    def unpause(self, container: Container) -> None:
        if self.refresh(container).state != "paused":
            raise FailedPrecondition(f"Container {container.id[:12]} is not paused")
        self._runtime(container, "resume", container.id, check=True)
        self.containers.update(container.id, state="running")

    # -- exec

    def exec(self, container: Container, argv: list[str], env=(), workdir: str | None = None,
             user: str | None = None, tty: bool = False, stdin: bool = False, detach: bool = False,
             privileged: bool = False) -> execs.ExecStream:  # fmt: skip
        """Have the container's shim run ARGV in it, with the container's
        process settings; the stream to read its output and exit code from.
        ExecFailed (Docker's 126, 127 when not found) if it cannot run."""
        from capsa.engine import execs

        container = self.refresh(container)
        if container.state == "paused":
            raise FailedPrecondition(f"Container {container.id} is paused, unpause the container before exec")
        if container.state != "running":
            raise FailedPrecondition(f"Container {container.id} is not running")
        try:
            process = self._exec_process(container, argv, env, workdir, user, tty, privileged)
        except InvalidArgument as err:  # an unknown --user: the exec cannot run, Docker's 126
            raise execs.ExecFailed(str(err)) from None
        return execs.start(self.paths(container).socket, process, stdin, detach)

    def _exec_process(self, container: Container, argv: list[str], env, workdir: str | None,
                      user: str | None, tty: bool, privileged: bool) -> dict:  # fmt: skip
        """The container's process (config.json's) with exec's flags applied."""
        from capsa.engine import users

        paths = self.paths(container)
        with open(paths.in_bundle("config.json")) as f:
            process = json.load(f)["process"]
        process.update(args=list(argv), terminal=tty, env=merge_env(process.get("env", []), env))
        if workdir:
            process["cwd"] = workdir
        if user:
            found = users.resolve(paths.rootfs, user, [])
            process["user"] = {"uid": found.uid, "gid": found.gid, "additionalGids": list(found.additional_gids)}
        if privileged:  # as docker exec --privileged: every capability, the rest as the container's
            from capsa.engine.spec import current_capabilities

            every = current_capabilities()
            process["capabilities"] = {**process.get("capabilities", {}), "bounding": every,
                                       "effective": every, "permitted": every}  # fmt: skip
        return process

    # -- removal

    def remove(self, container: Container, force: bool = False, volumes: bool = False) -> None:
        """Docker's rm: refuse a running container unless FORCE; VOLUMES:
        its anonymous volumes go too."""
        container = self.refresh(container)
        if container.state in ACTIVE:
            if not force:
                raise FailedPrecondition(f"You cannot remove a {container.state} container {container.id}. "
                                         "Stop the container before attempting removal or force remove")  # fmt: skip
            # stop, not kill: the shim of a container waiting to be restarted
            # calls the restart off, and can then be shut down.
            container = self.stop(container, signum=signal.SIGKILL)
        # The network and the rootfs first: meanwhile the shim may still be
        # running the runtime's delete, which the shutdown then waits for.
        self.wiring.disconnect(container)
        self._remove_bundle(container)
        if not self._retire_shim(container):  # no shim deleted it: the runtime may still know it
            self._runtime(container, "delete", "--force", container.id)
        self._remove_files(container)
        anonymous = self.volumes.anonymous_of(container.id)
        self.containers.delete(container.id)
        for name in anonymous if volumes else []:
            self.volumes.remove(name)

    def _retire_shim(self, container: Container) -> bool:
        """End the shim of a finished run, which deletes the container from
        the runtime; False if there was no shim to do it."""
        paths = self.paths(container)
        try:
            shim.call(paths.socket, "shutdown")
            retired = True
        except (shim.ShimGone, FailedPrecondition, OSError):
            retired = False
        shutil.rmtree(paths.state, ignore_errors=True)
        return retired

    def _remove_files(self, container: Container) -> None:
        self._remove_bundle(container)
        shutil.rmtree(self.paths(container).state, ignore_errors=True)

    def _remove_bundle(self, container: Container) -> None:
        paths = self.paths(container)
        if os.path.ismount(paths.rootfs):
            mounts.umount(paths.rootfs, mounts.MNT_DETACH)
        shutil.rmtree(paths.bundle, ignore_errors=True)

    def rename(self, container: Container, new_name: str) -> None:
        self.containers.rename(container, new_name)


def health_args(options: dict) -> list[str]:
    """The shim's healthcheck flags: --health-cmd as Docker runs it (a
    string through /bin/sh -c)."""
    command = options.get("health_cmd")
    if not command or options.get("no_healthcheck"):
        return []
    argv = command if isinstance(command, list) else ["/bin/sh", "-c", command]
    args = ["--health-cmd", json.dumps(argv)]
    for flag in ("interval", "timeout", "retries", "start_period"):
        if options.get(f"health_{flag}") is not None:
            args += [f"--health-{flag.replace('_', '-')}", str(options[f"health_{flag}"])]
    return args


def merge_env(base: list[str], extra) -> list[str]:
    """BASE ("K=V") with EXTRA's entries replacing or adding; a bare "K"
    takes this process's value, as docker exec -e does."""
    env = dict(item.split("=", 1) for item in base if "=" in item)
    for item in extra:
        key, sep, value = item.partition("=")
        env[key] = value if sep else os.environ.get(key, "")
    return [f"{k}={v}" for k, v in env.items()]


def image_defaults(options, config: dict) -> None:
    """What the image config says when the flags do not: its STOPSIGNAL
    and its HEALTHCHECK; its EXPOSE joins --expose (Docker's times are nanoseconds)."""
    options.expose = sorted({*options.expose, *(config.get("ExposedPorts") or {})})
    if options.stop_signal is None and config.get("StopSignal"):
        options.stop_signal = config["StopSignal"]
    check = config.get("Healthcheck") or {}
    test = check.get("Test") or []
    if options.health_cmd is None and not options.no_healthcheck and test and test[0] != "NONE":
        options.health_cmd = test[1] if test[0] == "CMD-SHELL" else test[1:]
        for key, field in (("Interval", "health_interval"), ("Timeout", "health_timeout"),
                           ("StartPeriod", "health_start_period")):  # fmt: skip
            if getattr(options, field) is None and check.get(key):
                setattr(options, field, check[key] / 1e9)
        if options.health_retries is None and check.get("Retries"):
            options.health_retries = check["Retries"]
