"""`exec`: run another process in a running container.

The parent role, as `create`'s: fork the process that will enter the
container (proc_exec), put it in the container's cgroup, and wait for the
final process to exec. The process comes from --process or from config.json's
process with runc's flags applied on top (args, --env, --cwd, --user, --cap,
--tty, --no-new-privs).

Entering a container runs the host's Python inside it for a moment. Two
things keep the container from reaching the host through it (the runc
CVE-2016-9962 and CVE-2019-5736 class): the entering process is made
non-dumpable before it joins the container's pid namespace, so no container
process can open its /proc/<pid>/{exe,root,cwd,fd}; and the interpreter that
capsa-runtime runs on is a private copy marked immutable (see
scripts/install-launchers), so a `#!/proc/self/exe` program in the container
gets a binary it cannot write.
"""

import os

from capsa.errors import FailedPrecondition, InvalidArgument, NotFound
from capsa.atomicfile import write_atomic
from capsa.runtime import spec, state, sync


class Request:
    """The flags of `capsa-runtime exec`."""

    def __init__(self, args=(), process_file=None, tty=False, env=(), cwd=None, user=None,
                 additional_gids=(), caps=(), no_new_privs=False, apparmor=None,
                 process_label=None, detach=False, pid_file=None, console_socket=None,
                 preserve_fds=0, cgroup=None, ignore_paused=False):  # fmt: skip
        self.args, self.process_file, self.tty, self.env = list(args), process_file, tty, env
        self.cwd, self.user, self.additional_gids, self.caps = cwd, user, additional_gids, caps
        self.no_new_privs, self.apparmor, self.process_label = no_new_privs, apparmor, process_label
        self.detach, self.pid_file, self.console_socket = detach, pid_file, console_socket
        self.preserve_fds, self.cgroup, self.ignore_paused = preserve_fds, cgroup, ignore_paused


def build_process(config: dict, req: Request) -> dict:
    """The process to run: --process as given, else the container's with the flags."""
    if req.process_file:
        return _load_process_file(req.process_file)
    process = {k: v for k, v in config.get("process", {}).items()}
    process["args"] = req.args
    process["terminal"] = bool(req.tty)
    process["env"] = list(process.get("env", [])) + list(req.env)
    if req.cwd:
        process["cwd"] = req.cwd
    if req.user:
        process["user"] = _parse_user(req.user, req.additional_gids)
    elif req.additional_gids:
        user = dict(process.get("user", {}))
        user["additionalGids"] = [_int(g, "additional-gids") for g in req.additional_gids]
        process["user"] = user
    if req.caps:
        capabilities = {k: list(v) for k, v in process.get("capabilities", {}).items()}
        for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            capabilities[kind] = capabilities.get(kind, []) + [c for c in req.caps
                                                              if c not in capabilities.get(kind, [])]  # fmt: skip
        process["capabilities"] = capabilities
    if req.no_new_privs:
        process["noNewPrivileges"] = True
    if req.apparmor:
        process["apparmorProfile"] = req.apparmor
    if req.process_label:
        process["selinuxLabel"] = req.process_label
    return process


def _load_process_file(path: str) -> dict:
    from capsa import fastjson

    try:
        with open(path, "rb") if path != "-" else os.fdopen(0, "rb", closefd=False) as f:
            process = fastjson.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"failed to load process {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"failed to load process {path}: {err}") from None
    if not isinstance(process, dict):
        raise InvalidArgument(f"failed to load process {path}: not a JSON object")
    return process


def _int(value: str, flag: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise InvalidArgument(f"invalid value {value!r} for --{flag}")
    return int(value)


def _parse_user(value: str, additional_gids) -> dict:
    uid, _, gid = value.partition(":")
    user = {"uid": _int(uid, "user"), "gid": _int(gid, "user") if gid else 0}
    if additional_gids:
        user["additionalGids"] = [_int(g, "additional-gids") for g in additional_gids]
    return user


def exec_in(root: str, container_id: str, req: Request, warn) -> int:
    """Run the process in the container; its exit code (0 at once with --detach)."""
    st = state.load(root, container_id)
    status = st.status()
    if status == "paused" and not req.ignore_paused:
        raise FailedPrecondition(f"cannot exec in container {container_id}: it is paused")
    if status not in ("created", "running", "paused"):
        raise FailedPrecondition(f"cannot exec in container {container_id}: it is {status}")
    process = build_process(st.config, req)
    spec.validate_process(process)
    if process.get("terminal") and req.console_socket is None and req.detach:
        raise FailedPrecondition("cannot allocate a tty if the process is detached without "
                                 "--console-socket")  # fmt: skip
    if not process.get("terminal") and req.console_socket:
        raise FailedPrecondition("--console-socket given but no tty was asked for")
    return _Exec(st, process, req).run()


class _Exec:
    def __init__(self, st: state.State, process: dict, req: Request):
        self.st, self.process, self.req = st, process, req
        self.relay = None

    def run(self) -> int:
        from capsa.linux import proc
        from capsa.runtime import proc_exec
        from capsa.runtime.container import seccomp_program

        if not self.req.detach:
            proc.set_child_subreaper()
        console_fd = self._console()
        ctx = {"config": self.st.config, "process": self.process, "init_pid": self.st.pid,
               "console_fd": console_fd, "preserve_fds": self.req.preserve_fds,
               "seccomp_program": seccomp_program(self.st.config, self.st.root)}  # fmt: skip
        parent, child = sync.Channel.pair()
        pid = os.fork()
        if pid == 0:
            parent.close()
            proc_exec.run(ctx, child)
        child.close()
        if self.req.console_socket:
            os.close(console_fd)
        try:
            exec_pid = self._talk(parent, pid)
        except BaseException:
            _kill_quietly(pid)
            raise
        finally:
            parent.close()
            os.waitpid(pid, 0)
        if self.req.pid_file:
            write_atomic(os.path.abspath(self.req.pid_file), str(exec_pid).encode(), 0o644)
        if self.req.detach:
            return 0
        from capsa.runtime.run import wait_and_forward

        if self.relay is not None:
            self.relay.receive()
        return wait_and_forward(exec_pid, self.relay)

    def _console(self) -> int | None:
        if not self.process.get("terminal"):
            return None
        if self.req.console_socket:
            from capsa.runtime import console

            return console.connect(self.req.console_socket)
        from capsa.runtime.console import Relay

        self.relay = Relay()
        return self.relay.remote_fd

    def _talk(self, channel: sync.Channel, pid: int) -> int:
        """Join the cgroup, let the child in, and wait for its exec to succeed."""
        join_cgroup(self.st, pid, self.req.cgroup)
        channel.send(sync.START)
        exec_pid = channel.expect(sync.EXEC_PID)["pid"]
        # The final process's end of the pipe closes on a successful execve.
        msg = channel.recv()
        if msg is not None and msg["type"] == sync.ERROR:
            raise sync.ChildError(msg["msg"], msg.get("errno", 0))
        return exec_pid


def join_cgroup(st: state.State, pid: int, sub: str | None) -> None:
    """Put pid in the container's cgroup (or its sub-cgroup `sub`) everywhere."""
    from capsa.runtime import cgroups

    for path in st.data.get("cgroup_paths", {}).values():
        directory = os.path.join(path, sub.strip("/")) if sub else path
        if sub and os.path.relpath(directory, path).startswith(".."):
            raise InvalidArgument(f"invalid --cgroup {sub!r}: outside the container's cgroup")
        cgroups.write_file(directory, "cgroup.procs", str(pid))


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
