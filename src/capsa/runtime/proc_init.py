"""The container's init: prepares its world, waits for `start`, then execs.

Runs as pid 1 of the new pid namespace (when there is one), inside every
namespace of the container. INIT_STEPS is the whole path from fork to
execve, in the order the kernel and the runtime-spec require. Until READY an
error goes back to `create` over the sync channel; after it, `create` has
returned, so the error goes to the container's stderr.
"""

import _signal
import os

from capsa.linux import mount as m
from capsa.linux import proc
from capsa.runtime import hooks, process, rootfs, sync

EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXEC = 126


def exit_on_signal(signum, _frame):
    os._exit(128 + signum)


def start_session(ctx):
    # As pid 1 of its namespace the init ignores every signal it has no
    # handler for; until it execs, TERM and the like must still end it.
    for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                   _signal.SIGUSR1, _signal.SIGUSR2):  # fmt: skip
        _signal.signal(signum, exit_on_signal)
    os.setsid()
    if not ctx["no_new_keyring"]:
        # Keys added in the container stay out of the host's session keyring.
        try:
            proc.join_session_keyring(f"_ses.{ctx['id']}")
        except OSError as err:
            if err.errno != 38:  # ENOSYS: a kernel without keyrings
                raise
    # The host's /proc is still mounted here and resolves "self" in the
    # host's pid namespace: that is the pid hooks must be given.
    ctx["init_host_pid"] = int(os.readlink("/proc/self"))


def prepare_rootfs(ctx):
    config = ctx["config"]
    root = ctx["rootfs"]
    linux = config.get("linux", {})
    rootfs.set_root_propagation(linux.get("rootfsPropagation"))
    rootfs.bind_rootfs(root)
    mounts = config.get("mounts", [])
    for spec_mount in mounts:
        rootfs.mount_one(root, spec_mount, ctx)
    dev_from_host = any(mt["destination"] == "/dev" and "bind" in _types(mt) for mt in mounts)
    if not dev_from_host:
        rootfs.create_devices(root, linux.get("devices", []), ctx["in_userns"])
        rootfs.create_dev_symlinks(root)
    # The fifo lives in the runtime's state dir, out of reach after
    # pivot_root: hold it open by O_PATH and reopen it via /proc/self/fd.
    ctx["fifo_fd"] = os.open(ctx["fifo"], os.O_PATH | os.O_CLOEXEC)


def _types(spec_mount: dict) -> set:
    return {spec_mount.get("type", "")} | {"bind" for o in spec_mount.get("options", [])
                                          if o in ("bind", "rbind")}  # fmt: skip


def request_runtime_hooks(ctx):
    """prestart and createRuntime hooks run in the runtime's namespaces: ask the parent."""
    config_hooks = ctx["config"].get("hooks", {})
    if config_hooks.get("prestart") or config_hooks.get("createRuntime"):
        ctx["channel"].send(sync.HOOKS)
        ctx["channel"].expect(sync.HOOKS_DONE)


def run_create_container_hooks(ctx):
    state = hooks.hook_state(ctx["config"], ctx["id"], "creating", ctx["init_host_pid"],
                             ctx["bundle"])  # fmt: skip
    hooks.run_hooks(ctx["config"], "createContainer", state)


def import_what_runs_after_pivot(ctx):
    """After pivot_root the host's Python library is out of reach: import now
    every module (and load every C library) the init needs from then on."""
    config = ctx["config"]
    if config["process"].get("terminal"):
        from capsa.runtime import console  # noqa: F401
    if config.get("hooks", {}).get("startContainer"):
        import subprocess  # noqa: F401
    if _seccomp(ctx):
        from capsa.runtime import seccomp  # noqa: F401 - its program was compiled by create


def enter_rootfs(ctx):
    if ctx["no_pivot"]:
        rootfs.move_root(ctx["rootfs"])
    else:
        rootfs.pivot_root(ctx["rootfs"])


def setup_console(ctx):
    if not ctx["config"]["process"].get("terminal"):
        return
    from capsa.runtime import console

    console.setup_in_container(ctx["console_fd"])
    ctx["console_fd"] = None


def finish_rootfs(ctx):
    linux = ctx["config"].get("linux", {})
    rootfs.mask_paths(linux.get("maskedPaths", []))
    rootfs.readonly_paths(linux.get("readonlyPaths", []), ctx["in_userns"])
    if ctx["config"]["root"].get("readonly"):
        rootfs.remount_root_readonly(ctx["in_userns"])
    if linux.get("rootfsPropagation") in ("shared", "rshared"):
        m.mount(None, "/", None, rootfs.PROPAGATION[linux["rootfsPropagation"]])


def set_sysctl(ctx):
    for key, value in ctx["config"].get("linux", {}).get("sysctl", {}).items():
        process.write_kernel_file("/proc/sys/" + key.replace(".", "/"), value)


PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}


def set_personality(ctx):
    persona = ctx["config"].get("linux", {}).get("personality")
    if persona:
        proc.personality(PERSONALITIES[persona["domain"]])


def set_hostname(ctx):
    config = ctx["config"]
    if config.get("hostname"):
        proc.sethostname(config["hostname"])
    if config.get("domainname"):
        proc.setdomainname(config["domainname"])


def set_process_limits(ctx):
    spec_process = ctx["config"]["process"]
    process.set_oom_score_adj(spec_process.get("oomScoreAdj"))
    process.apply_rlimits(spec_process.get("rlimits", []))


def apply_seccomp_privileged(ctx):
    """Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it now.
    So does a filter with a listener: its fd must reach `create` before READY."""
    if _seccomp(ctx) and (not ctx["config"]["process"].get("noNewPrivileges")
                          or _uses_notify(ctx)):  # fmt: skip
        _load_seccomp(ctx)


def drop_privileges(ctx):
    spec_process = ctx["config"]["process"]
    capabilities = spec_process.get("capabilities")
    process.drop_bounding(capabilities)
    process.change_user(spec_process.get("user", {}), process.setgroups_denied())
    process.set_capabilities(capabilities)


def enter_cwd(ctx):
    cwd = ctx["config"]["process"].get("cwd", "/")
    try:
        os.chdir(cwd)
    except OSError as err:
        raise OSError(err.errno, f"failed to enter cwd {cwd}: {os.strerror(err.errno)}") from None


def set_no_new_privs(ctx):
    if ctx["config"]["process"].get("noNewPrivileges"):
        proc.set_no_new_privs()


def find_program(ctx):
    """A missing program is a `create` error, as with runc, not a late exit."""
    spec_process = ctx["config"]["process"]
    ctx["executable"] = process.find_executable(spec_process["args"][0],
                                                spec_process.get("env", []))  # fmt: skip


def report_ready(ctx):
    ctx["channel"].send(sync.READY)
    ctx["channel"].close()


INIT_STEPS = [
    start_session, prepare_rootfs, request_runtime_hooks, run_create_container_hooks,
    import_what_runs_after_pivot, enter_rootfs, setup_console, set_sysctl, finish_rootfs, set_hostname,
    set_personality, set_process_limits, apply_seccomp_privileged, drop_privileges, enter_cwd,
    set_no_new_privs, find_program, report_ready,
]  # fmt: skip


def wait_for_start(ctx):
    """Block until `start` opens the fifo's read end, then tell it we go."""
    fd = os.open(f"/proc/self/fd/{ctx['fifo_fd']}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(ctx["fifo_fd"])


def run_start_container_hooks(ctx):
    state = hooks.hook_state(ctx["config"], ctx["id"], "running", ctx["init_host_pid"],
                             ctx["bundle"])  # fmt: skip
    hooks.run_hooks(ctx["config"], "startContainer", state)


def apply_seccomp_late(ctx):
    """With no_new_privs the filter goes on last, so few syscalls run under it."""
    if _seccomp(ctx) and not ctx.get("seccomp_loaded"):
        _load_seccomp(ctx)


def set_exec_labels(ctx):
    process.set_exec_labels(ctx["config"]["process"])


def close_extra_fds(ctx):
    keep = 3 + ctx["preserve_fds"]
    for fd in range(3, keep):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    proc.close_fds_from(keep)


def exec_program(ctx):
    process.exec_process(ctx["config"]["process"], ctx["executable"])


# After the filter is loaded only execve remains: anything else might be denied.
START_STEPS = [wait_for_start, run_start_container_hooks, set_exec_labels, close_extra_fds,
               apply_seccomp_late, exec_program]  # fmt: skip


def _seccomp(ctx) -> dict | None:
    return ctx["config"].get("linux", {}).get("seccomp")


def _uses_notify(ctx) -> bool:
    from capsa.runtime import seccomp

    return seccomp.uses_notify(_seccomp(ctx))


def _load_seccomp(ctx):
    from capsa.runtime import seccomp

    listener = seccomp.install(ctx["seccomp_program"], _seccomp(ctx))
    ctx["seccomp_loaded"] = True
    if listener is not None:
        ctx["channel"].send(sync.SECCOMP_FD, fd=listener)
        ctx["channel"].expect(sync.SECCOMP_FD_DONE)
        os.close(listener)


def run(ctx: dict, channel: sync.Channel) -> None:
    """Entry point in the forked init; never returns."""
    ctx["channel"] = channel
    step = start_session
    try:
        for step in INIT_STEPS:
            step(ctx)
    except BaseException as err:  # noqa: BLE001 - reported to the parent once
        channel.send_error(err, step.__name__)
        os._exit(1)
    try:
        for step in START_STEPS:
            step(ctx)
    except BaseException as err:  # noqa: BLE001 - create has returned: say it on stderr
        msg = getattr(err, "strerror", None) or str(err)
        os.write(2, f"capsa-runtime: {msg}\n".encode(errors="replace"))
        os._exit(EXIT_NOT_FOUND if isinstance(err, FileNotFoundError) else EXIT_CANNOT_EXEC)
