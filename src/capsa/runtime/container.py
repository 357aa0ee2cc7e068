"""The container lifecycle as the runtime-spec names it: create, start, kill, delete.

`create` is the parent role of the protocol in sync.py: it forks the
intermediate (proc_inter), puts it in the container's cgroup, answers its
requests, and returns once the init is blocked on the exec fifo. Every later
command reads state.json and acts on the facts it names.
"""

import os
import time

from capsa import fastjson
from capsa.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from capsa.linux import proc
from capsa.atomicfile import write_atomic
from capsa.runtime import hooks, spec, state, sync
from capsa.runtime.state import FIFO, State

# Allowed to every container on top of linux.resources.devices, as runc does.
DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # ptmx
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},  # console
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # tun
]


class Options:
    """The flags of `create` (and `run`)."""

    def __init__(self, bundle=".", pid_file=None, console_socket=None, no_pivot=False,
                 no_new_keyring=False, preserve_fds=0, console_fd=None, config=None,
                 systemd_cgroup=False):  # fmt: skip
        self.bundle = os.path.abspath(bundle)
        self.systemd_cgroup = systemd_cgroup  # the global --systemd-cgroup
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.console_fd = console_fd
        self.config = config  # already loaded and validated (by `run`)


def create(root: str, container_id: str, opts: Options) -> State:
    """Create the container and leave its init waiting for `start`."""
    state.check_id(container_id)
    if opts.systemd_cgroup:
        from capsa.runtime.cgroups import systemd

        if not systemd.booted():  # before anything is read or made
            raise FailedPrecondition(systemd.NOT_SYSTEMD)
    config = opts.config or spec.load(opts.bundle, opts.systemd_cgroup)
    cgroups_path = config.get("linux", {}).get("cgroupsPath")
    if opts.systemd_cgroup:
        cgroups_path = systemd.cgroup_path(cgroups_path, container_id)
    rootfs = _rootfs_path(config, opts.bundle)
    if config["process"].get("terminal") and opts.console_socket is None and opts.console_fd is None:
        raise FailedPrecondition("cannot allocate a tty without --console-socket")
    if config["process"].get("terminal") is False and opts.console_socket:
        raise FailedPrecondition("--console-socket given but process.terminal is false")
    if not any(n["type"] == "mount" for n in config.get("linux", {}).get("namespaces", [])):
        raise FailedPrecondition("config.json must ask for a mount namespace")
    os.makedirs(root, 0o711, exist_ok=True)
    directory = os.path.join(root, container_id)
    try:
        os.mkdir(directory, 0o711)
    except FileExistsError:
        raise AlreadyExists(f"container {container_id} already exists") from None
    launch = _Launch(root, container_id, config, rootfs, opts, cgroups_path)
    try:
        return launch.run()
    except BaseException:
        launch.undo()
        state.remove_dir(directory)
        raise


def seccomp_program(config: dict, root: str) -> bytes | None:
    """The compiled filter of CONFIG's linux.seccomp (None without one), for
    the runtime to compute before it forks the container's processes; the
    seccomp module (2 ms) is only imported for a config that has one."""
    if not config.get("linux", {}).get("seccomp"):
        return None
    from capsa.runtime import seccomp

    return seccomp.cached_program(config["linux"]["seccomp"], root)


def _rootfs_path(config: dict, bundle: str) -> str:
    path = os.path.join(bundle, config["root"]["path"])
    if not os.path.isdir(path):
        raise NotFound(f"rootfs {path} does not exist")
    return os.path.realpath(path)


class _Launch:
    """One run of the create protocol, with what must be undone on failure."""

    def __init__(self, root, container_id, config, rootfs, opts, cgroups_path):
        self.root, self.id, self.config, self.rootfs, self.opts = (
            root, container_id, config, rootfs, opts)  # fmt: skip
        self.cgroups_path = cgroups_path
        self.dir = os.path.join(root, container_id)
        self.inter_pid = self.init_pid = 0
        self.cgroup = None

    def run(self) -> State:
        from capsa.runtime import cgroups, proc_inter

        linux = self.config.get("linux", {})
        fifo = os.path.join(self.dir, FIFO)
        os.mkfifo(fifo)
        os.chmod(fifo, 0o622)  # not subject to the umask: any container user writes it
        # The init opens it after dropping to the container's root, which in
        # a user namespace is another host uid: make it the owner.
        os.chown(fifo, _host_id(linux, "uidMappings"), _host_id(linux, "gidMappings"))
        self.cgroup = cgroups.new_manager(self.cgroups_path, self.id)
        self.record_creating()
        console_fd = self.opts.console_fd
        if self.opts.console_socket:
            from capsa.runtime import console

            console_fd = console.connect(self.opts.console_socket)
        ctx = {
            "id": self.id, "config": self.config, "bundle": self.opts.bundle,
            "rootfs": self.rootfs, "fifo": fifo, "console_fd": console_fd,
            "no_pivot": self.opts.no_pivot, "preserve_fds": self.opts.preserve_fds,
            "no_new_keyring": self.opts.no_new_keyring,
            "in_userns": any(n["type"] == "user" for n in linux.get("namespaces", [])),
            "seccomp_program": seccomp_program(self.config, self.root),
        }  # fmt: skip
        parent, child = sync.Channel.pair()
        self.inter_pid = os.fork()
        if self.inter_pid == 0:
            parent.close()
            proc_inter.run(ctx, child)
        child.close()
        if self.opts.console_socket:
            os.close(console_fd)
        try:
            self.talk(parent)
        finally:
            parent.close()
        # Reaped only now: its exit (a few ms) overlapped the init's work.
        os.waitpid(self.inter_pid, 0)
        self.inter_pid = 0
        return self.save()

    def talk(self, channel: sync.Channel) -> None:
        """Answer the children until the init reports READY."""
        from capsa.runtime import proc_inter

        init_moves_in = proc_inter.init_moves_in(self.config)
        try:
            if init_moves_in:
                self.cgroup.make()
            else:
                self.cgroup.apply(self.inter_pid)
            # Before START: the device rules are rewritten deny-all first, and
            # the init's mknod of /dev/null must not fall in between.
            self.cgroup.set(_resources(self.config))
            channel.send(sync.START, cgroup_paths=self.cgroup.paths(),
                         cgroup_mode=_cgroup_mode())  # fmt: skip
        except Exception:
            _raise_pending_child_error(channel)
            raise
        while True:
            msg = channel.recv()
            kind = msg["type"] if msg else None
            if kind == sync.USERNS_MAP_REQUEST:
                write_id_maps(msg["pid"], self.config["linux"])
                channel.send(sync.USERNS_MAPPED)
            elif kind == sync.INIT_PID:
                self.init_pid = msg["pid"]
                if init_moves_in:
                    try:
                        self.cgroup.join(self.init_pid)
                    except Exception:
                        _raise_pending_child_error(channel)
                        raise
            elif kind == sync.HOOKS:
                hook_state = hooks.hook_state(self.config, self.id, "creating", self.init_pid,
                                              self.opts.bundle)  # fmt: skip
                hooks.run_hooks(self.config, "prestart", hook_state)
                hooks.run_hooks(self.config, "createRuntime", hook_state)
                channel.send(sync.HOOKS_DONE)
            elif kind == sync.SECCOMP_FD:
                send_seccomp_listener(self.config, self.id, self.opts.bundle, self.init_pid,
                                      msg["fd"])  # fmt: skip
                channel.send(sync.SECCOMP_FD_DONE)
            elif kind == sync.READY:
                return
            elif kind == sync.ERROR:
                raise sync.ChildError(msg["msg"], msg.get("errno", 0))
            else:
                raise sync.ChildError("container init exited before it was ready")

    def record_creating(self) -> None:
        """Name the cgroup before anything is put in it: if this process is
        killed mid-way, `delete` still finds what it must remove."""
        me = os.getpid()
        data = {"id": self.id, "bundle": self.opts.bundle, "rootfs": self.rootfs,
                "config": self.config, "cgroup_paths": self.cgroup.paths(),
                "creator": me, "creator_start": proc.start_time(me)}  # fmt: skip
        write_atomic(os.path.join(self.dir, state.STATE_FILE),
                           fastjson.dumps(data).encode(), sync=False)  # fmt: skip

    def save(self) -> State:
        started = proc.start_time(self.init_pid)
        if started is None:
            raise sync.ChildError("container init exited before it was ready")
        data = {
            "id": self.id, "pid": self.init_pid, "start_time": started,
            "bundle": self.opts.bundle, "rootfs": self.rootfs, "created": state.now_rfc3339(),
            "owner": "", "config": self.config, "cgroup_paths": self.cgroup.paths(),
        }  # fmt: skip
        st = State(self.root, self.id, data)
        st.save()
        if self.opts.pid_file:
            write_atomic(os.path.abspath(self.opts.pid_file), f"{self.init_pid}".encode(),
                               0o644)  # fmt: skip
        return st

    def undo(self) -> None:
        for pid in (self.inter_pid, self.init_pid):
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        if self.inter_pid:
            try:
                os.waitpid(self.inter_pid, 0)
            except ChildProcessError:
                pass
        if self.cgroup is not None:
            _kill_cgroup(self.cgroup)
            self.cgroup.destroy()


def _raise_pending_child_error(channel: sync.Channel) -> None:
    """The intermediate may join and unshare namespaces before START: if it
    failed meanwhile, our EPIPE or ESRCH is only its consequence. Its ERROR is
    written before it exits, so it is already readable if it is the cause."""
    import select

    if select.select([channel.rfd], [], [], 0)[0]:
        msg = channel.recv()
        if msg and msg["type"] == sync.ERROR:
            raise sync.ChildError(msg["msg"], msg.get("errno", 0)) from None


def send_seccomp_listener(config: dict, container_id: str, bundle: str, pid: int,
                          fd_in_init: int) -> None:  # fmt: skip
    """Hand the init's seccomp notify fd to the agent at listenerPath, with the
    runtime-spec's container process state, as runc does."""
    import _socket
    import struct

    from capsa import fastjson

    seccomp = config["linux"]["seccomp"]
    pidfd = os.pidfd_open(pid)
    try:
        listener = proc.pidfd_getfd(pidfd, fd_in_init)
    finally:
        os.close(pidfd)
    message = {
        "ociVersion": config.get("ociVersion", spec.OCI_VERSION), "fds": ["seccompFd"],
        "pid": pid, "metadata": seccomp.get("listenerMetadata", ""),
        "state": hooks.hook_state(config, container_id, "creating", pid, bundle),
    }  # fmt: skip
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(seccomp["listenerPath"])
        sock.sendmsg([fastjson.dumps(message).encode()],
                     [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", listener))])  # fmt: skip
    except OSError as err:
        raise OSError(err.errno, f"failed to send the seccomp listener to "
                      f"{seccomp['listenerPath']}: {os.strerror(err.errno)}") from None  # fmt: skip
    finally:
        sock.close()
        os.close(listener)


def _resources(config: dict) -> dict:
    """linux.resources with the default devices allowed after the config's rules."""
    linux = config.get("linux", {})
    resources = dict(linux.get("resources") or {})
    rules = list(resources.get("devices", []))
    rules += DEFAULT_DEVICE_RULES
    for device in linux.get("devices", []):
        rules.append({"allow": True, "type": device["type"], "major": device.get("major"),
                      "minor": device.get("minor"), "access": "rwm"})  # fmt: skip
    resources["devices"] = rules
    return resources


def _host_id(linux: dict, key: str) -> int:
    """The host id that container id 0 maps to (0 without a user namespace)."""
    for m in linux.get(key, []):
        if m["containerID"] == 0:
            return m["hostID"]
    return 0


def _cgroup_mode() -> str:
    from capsa.runtime.cgroups import host_mode

    return host_mode()


def write_id_maps(pid: int, linux: dict) -> None:
    """Write a new user namespace's uid and gid maps from outside it."""
    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux[key])
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(lines)


def start(root: str, container_id: str, warn) -> None:
    """Let the created init exec the program: read the exec fifo."""
    st = state.load(root, container_id)
    fifo = os.path.join(st.dir, FIFO)
    # The cheap facts of "created" first: the full status reads the freezer,
    # which costs start the import of the cgroup drivers.
    if st.creating() or not os.path.exists(fifo) or not st.alive():
        raise FailedPrecondition(f"cannot start container {container_id}: it is {st.status()}")
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _await_init(fd, st)
    finally:
        os.close(fd)
    os.unlink(fifo)
    poststart = hooks.hook_state(st.config, st.id, "running", st.pid, st.bundle)
    hooks.run_hooks_warn(st.config, "poststart", poststart, warn)


def _await_init(fd: int, st: State) -> None:
    """The init is blocked opening the fifo for writing; our open released it."""
    begun = time.monotonic()
    checked_frozen = False
    while time.monotonic() < begun + 10:
        try:
            if os.read(fd, 1):
                return
        except BlockingIOError:
            pass
        if not st.alive():
            raise FailedPrecondition(f"container {st.id} init exited before start")
        # A paused init cannot answer; say so rather than time out (checked
        # late, so a prompt start never pays for reading the freezer).
        if not checked_frozen and time.monotonic() > begun + 0.1:
            checked_frozen = True
            if st.data.get("cgroup_paths") and st.cgroup().frozen():
                raise FailedPrecondition(f"cannot start container {st.id}: it is paused")
        time.sleep(0.0005)
    raise FailedPrecondition(f"container {st.id} init did not answer start")


def kill(root: str, container_id: str, signum: int, all_processes: bool = False) -> None:
    st = state.load(root, container_id)
    status = st.status()
    if status == "stopped" or status == "creating":
        raise FailedPrecondition(f"container {container_id} is not running")
    if all_processes:
        _kill_cgroup(st.cgroup(), signum)
    else:
        _signal_init(st, signum)
    if status == "paused" and signum == 9:
        st.cgroup().thaw()  # a frozen task only dies once thawed


def pause(root: str, container_id: str) -> None:
    """Freeze every process of a running (or created) container."""
    st = state.load(root, container_id)
    status = st.status()
    if status not in ("running", "created"):
        detail = "already paused" if status == "paused" else f"not running ({status})"
        raise FailedPrecondition(f"failed to pause container {container_id}: it is {detail}")
    st.cgroup().freeze()


def resume(root: str, container_id: str) -> None:
    """Thaw a paused container."""
    st = state.load(root, container_id)
    status = st.status()
    if status != "paused":
        raise FailedPrecondition(f"failed to resume container {container_id}: it is not "
                                 f"paused ({status})")  # fmt: skip
    st.cgroup().thaw()


def processes(root: str, container_id: str) -> list[int]:
    """The host pids in the container's cgroup (runc's `ps --format json`):
    none once it has stopped, as with runc, which is not an error."""
    st = state.load(root, container_id)
    if not st.data.get("cgroup_paths"):
        return []
    return st.cgroup().pids()


def _signal_init(st: State, signum: int) -> None:
    """Signal the init through a pidfd checked against its start time, so a
    reused pid is never signalled."""
    try:
        pidfd = os.pidfd_open(st.pid)
    except ProcessLookupError:
        raise FailedPrecondition(f"container {st.id} is not running") from None
    try:
        if not st.alive():
            raise FailedPrecondition(f"container {st.id} is not running")
        import _signal

        _signal.pidfd_send_signal(pidfd, signum)
    finally:
        os.close(pidfd)


def _kill_cgroup(cgroup, signum: int = 9) -> None:
    for pid in cgroup.pids():
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def delete(root: str, container_id: str, force: bool, warn) -> None:
    """Remove a stopped (or never started) container; --force kills first."""
    try:
        st = state.load(root, container_id)
    except NotFound:
        if force:
            return
        raise
    status = st.status()
    if status in ("running", "paused", "creating") and not force:
        raise FailedPrecondition(f"cannot delete container {container_id} that is not "
                                 f"stopped: {status}")  # fmt: skip
    if st.data.get("cgroup_paths"):
        cgroup = st.cgroup()
        # What a killed `create` left has no init to wait for, only a cgroup.
        if status != "stopped" or st.creating() or _shares_pid_namespace(st.config):
            if status != "stopped" and not st.creating():
                _signal_quietly(st)
            _kill_cgroup(cgroup)
            if status == "paused":
                cgroup.thaw()
        _wait_gone(st)
        cgroup.destroy()
    state.remove_dir(st.dir)
    if st.data:
        poststop = hooks.hook_state(st.config, st.id, "stopped", 0, st.bundle)
        hooks.run_hooks_warn(st.config, "poststop", poststop, warn)


def _signal_quietly(st: State) -> None:
    try:
        _signal_init(st, 9)
    except FailedPrecondition:
        pass


def _shares_pid_namespace(config: dict) -> bool:
    namespaces = config.get("linux", {}).get("namespaces", [])
    return not any(n["type"] == "pid" and not n.get("path") for n in namespaces)


def _wait_gone(st: State, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while st.alive() and time.monotonic() < deadline:
        time.sleep(0.001)


def list_states(root: str, warn=None) -> list[State]:
    """Every container under root; one whose state cannot be read is skipped
    (with a warning, as runc does), so that it cannot hide the others."""
    states = []
    for container_id in state.list_ids(root):
        try:
            states.append(state.load(root, container_id))
        except NotFound:
            continue  # deleted meanwhile
        except (FailedPrecondition, InvalidArgument) as err:
            if warn is not None:
                warn(str(err))
    return states
