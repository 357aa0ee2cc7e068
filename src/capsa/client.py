"""A Python API shaped like docker-py, over the in-process engine: no daemon.

    import capsa
    client = capsa.from_env()
    client.containers.run("busybox", ["echo", "hi"], remove=True)   # b"hi\\n"
    web = client.containers.run("busybox", "sleep 300", detach=True, name="web")
    web.exec_run("hostname")        # ExecResult(exit_code=0, output=b"…")
    web.stop(); web.wait(); web.remove()

Keyword arguments are docker-py's (environment, working_dir, user, volumes,
entrypoint, hostname, mem_limit, labels, privileged, cap_add, cap_drop,
read_only, tty, stdin_open, restart_policy, runtime, security_opt, tmpfs,
name); they become the same flags `capsa run` checks.
"""

import shlex

from capsa.errors import CapsaError
from capsa.record import record


class ContainerError(CapsaError):
    """A container run in the foreground exited non-zero (docker-py's)."""

    def __init__(self, container, exit_status: int, command, image: str, stderr: bytes):
        self.container, self.exit_status, self.stderr = container, exit_status, stderr
        super().__init__(f"command {command!r} in image {image!r} returned non-zero exit status "
                         f"{exit_status}: {stderr.decode(errors='replace').strip()}")  # fmt: skip


@record
class ExecResult:
    exit_code: int
    output: bytes


def from_env(root: str | None = None) -> "Client":
    return Client(root)


class Client:
    def __init__(self, root: str | None = None):
        from capsa.engine.containers import Engine

        self.engine = Engine(root)
        self.containers = Containers(self)

    def close(self) -> None:
        self.engine.close()


class Container:
    def __init__(self, client: Client, container_id: str):
        self.client, self.id = client, container_id

    @property
    def _engine(self):
        return self.client.engine

    @property
    def _record(self):
        return self._engine.refresh(self._engine.containers.lookup(self.id))

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def status(self) -> str:
        return self._record.state

    @property
    def attrs(self) -> dict:
        from capsa.engine.inspect import describe

        return describe(self._engine, self._record)

    def logs(self, stdout: bool = True, stderr: bool = True) -> bytes:
        from capsa.engine import logs

        streams = {name for name, wanted in (("stdout", stdout), ("stderr", stderr)) if wanted}
        return b"".join(e["log"].encode("utf-8", "surrogateescape")
                        for e in logs.entries(self._engine.paths(self._record).log) if e["stream"] in streams)  # fmt: skip

    def exec_run(self, cmd, environment=None, workdir: str | None = None, user: str | None = None,
                 privileged: bool = False) -> ExecResult:  # fmt: skip
        """docker-py's: the exit code, and stdout and stderr as they came (a
        command that cannot run: Docker's 126 or 127 and the reason)."""
        from capsa.engine.execs import ExecFailed

        try:
            process = self._engine.exec(self._record, _command(cmd), env=_env(environment), workdir=workdir,
                                        user=user, privileged=privileged)  # fmt: skip
        except ExecFailed as err:
            return ExecResult(err.exit_code, f"{err}\n".encode())
        exit_code, output = process.collect()
        return ExecResult(exit_code, b"".join(payload for _, payload in output))

    def start(self) -> None:
        self._engine.start(self._record)

    def stop(self, timeout: int | None = None) -> None:
        self._engine.stop(self._record, timeout)

    def kill(self, signal: int | str = "KILL") -> None:
        from capsa.engine.options import parse_signal

        self._engine.kill(self._record, parse_signal(str(signal)))

    def wait(self) -> dict:
        return {"StatusCode": self._engine.wait(self._record), "Error": None}

    def remove(self, force: bool = False, v: bool = False) -> None:
        self._engine.remove(self._record, force=force, volumes=v)

    def reload(self) -> None:
        self._record  # noqa: B018 - refreshes the record from the shim

    def __repr__(self) -> str:
        return f"<Container: {self.id[:12]}>"


class Containers:
    def __init__(self, client: Client):
        self.client = client

    def create(self, image: str, command=None, **kwargs) -> Container:
        options = _options(image, command, kwargs, detach=True)
        return Container(self.client, self.client.engine.create(options).id)

    def run(self, image: str, command=None, detach: bool = False, remove: bool = False, **kwargs):
        """docker-py's run: a Container when DETACH, else the output
        (stdout; ContainerError with stderr on a non-zero exit)."""
        engine = self.client.engine
        options = _options(image, command, kwargs, detach=True)
        container = Container(self.client, engine.create(options).id)
        engine.start(engine.containers.get(container.id))
        if detach:
            return container
        status = container.wait()["StatusCode"]
        out, err = container.logs(stderr=False), container.logs(stdout=False)
        if remove:
            container.remove(force=True, v=True)
        if status != 0:
            raise ContainerError(container, status, command, image, err)
        return out

    def get(self, name: str) -> Container:
        return Container(self.client, self.client.engine.containers.lookup(name).id)

    def list(self, all: bool = False) -> list[Container]:  # noqa: A002 - docker-py's name
        engine = self.client.engine
        records = [engine.refresh(c) for c in engine.containers.all()]
        return [Container(self.client, c.id) for c in records if all or c.state in ("running", "paused")]


def _command(cmd) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def _env(environment) -> list[str]:
    if isinstance(environment, dict):
        return [f"{k}={v}" for k, v in environment.items()]
    return list(environment or [])


def _options(image: str, command, kwargs: dict, detach: bool):
    """RunOptions through the CLI's own parser, so the checks are the same."""
    from capsa.cli.main import build_parser
    from capsa.engine.options import from_flags

    flags = ["--detach"] if detach else []
    flags += [f"--env={e}" for e in _env(kwargs.pop("environment", None))]
    for key, flag in (("name", "--name"), ("working_dir", "--workdir"), ("user", "--user"),
                      ("hostname", "--hostname"), ("mem_limit", "--memory"), ("runtime", "--runtime"),
                      ("entrypoint", "--entrypoint"), ("network", "--network"),
                      ("network_mode", "--network")):  # fmt: skip
        if kwargs.get(key) is not None:
            value = kwargs.pop(key)
            flags.append(f"{flag}={shlex.join(value) if isinstance(value, list) else value}")
    for key, flag in (("privileged", "--privileged"), ("read_only", "--read-only"), ("tty", "--tty"),
                      ("stdin_open", "--interactive"), ("publish_all_ports", "--publish-all")):  # fmt: skip
        if kwargs.pop(key, False):
            flags.append(flag)
    for key, flag in (("cap_add", "--cap-add"), ("cap_drop", "--cap-drop"), ("security_opt", "--security-opt"),
                      ("dns", "--dns"), ("dns_search", "--dns-search")):  # fmt: skip
        flags += [f"{flag}={value}" for value in kwargs.pop(key, None) or []]
    flags += [f"--label={k}={v}" for k, v in (kwargs.pop("labels", None) or {}).items()]
    flags += [f"--volume={v}" for v in _volumes(kwargs.pop("volumes", None))]
    flags += [f"--publish={p}" for p in _ports(kwargs.pop("ports", None))]
    flags += [f"--add-host={name}:{address}" for name, address in (kwargs.pop("extra_hosts", None) or {}).items()]
    flags += [f"--tmpfs={path}:{opts}" if opts else f"--tmpfs={path}"
              for path, opts in (kwargs.pop("tmpfs", None) or {}).items()]  # fmt: skip
    policy = kwargs.pop("restart_policy", None)
    if policy:
        count = policy.get("MaximumRetryCount")
        flags.append(f"--restart={policy['Name']}" + (f":{count}" if count else ""))
    if kwargs:
        raise CapsaError(f"unsupported arguments: {', '.join(sorted(kwargs))}")
    args = build_parser().parse_args(["run", *flags, image, *_command(command)])
    return from_flags(args)


def _ports(ports) -> list[str]:
    """docker-py's ports: {"80/tcp": 8080 | ("127.0.0.1", 8080) | None | [several]} as -p specs."""
    specs = []
    for inside, outside in (ports or {}).items():
        for binding in outside if isinstance(outside, list) else [outside]:
            if binding is None:
                specs.append(str(inside))
            elif isinstance(binding, tuple):
                specs.append(f"{binding[0]}:{binding[1] if len(binding) > 1 else ''}:{inside}")
            else:
                specs.append(f"{binding}:{inside}")
    return specs


def _volumes(volumes) -> list[str]:
    if isinstance(volumes, dict):
        return [f"{host}:{spec['bind']}:{spec.get('mode', 'rw')}" for host, spec in volumes.items()]
    return list(volumes or [])
