"""The processes of `exec`: enter the container's namespaces, then exec.

The first child joins every namespace of the container's init (its pid
namespace applies to children only) and forks the final process, which takes
on the process's identity and execs. Modules the final steps need are
imported before the mount namespace is joined: the host's Python library is
not visible from inside the container.
"""

import os

from capsa.linux import ns, proc
from capsa.runtime import process, sync

# The user namespace first: it owns the others and grants the rights to join them.
JOIN_ORDER = ["user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount"]


def run(ctx: dict, channel: sync.Channel) -> None:
    """Entry point in the forked child; never returns."""
    try:
        # No container process may open our /proc/<pid>/ files (CVE-2016-9962).
        proc.set_dumpable(False)
        import_what_runs_inside(ctx)
        channel.expect(sync.START)
        join_namespaces(ctx["init_pid"])
        pid = os.fork()
        if pid == 0:
            run_final(ctx, channel)
        channel.send(sync.EXEC_PID, pid=pid)
    except BaseException as err:  # noqa: BLE001 - reported to the parent once
        channel.send_error(err)
        os._exit(1)
    os._exit(0)


def import_what_runs_inside(ctx: dict) -> None:
    if ctx["process"].get("terminal"):
        from capsa.runtime import console  # noqa: F401
    if ctx["config"].get("linux", {}).get("seccomp"):
        from capsa.runtime import seccomp  # noqa: F401 - its program was compiled by exec


def join_namespaces(init_pid: int) -> None:
    """setns into each of the init's namespaces that differs from ours.

    All are opened first: once in the container's mount namespace, /proc is
    the container's and pids mean something else.
    """
    fds = []
    try:
        for kind in JOIN_ORDER:
            flag, name = ns.NAMESPACES[kind]
            theirs = f"/proc/{init_pid}/ns/{name}"
            try:
                if os.readlink(theirs) == os.readlink(f"/proc/self/ns/{name}"):
                    continue
            except FileNotFoundError:
                continue  # a namespace kind this kernel does not have
            fds.append((kind, flag, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
        for kind, flag, fd in fds:
            try:
                ns.setns(fd, flag)
            except OSError as err:
                raise OSError(err.errno, f"failed to join the container's {kind} namespace: "
                              f"{os.strerror(err.errno)}") from None  # fmt: skip
    finally:
        for _, _, fd in fds:
            os.close(fd)


def run_final(ctx: dict, channel: sync.Channel) -> None:
    """The final process: identity, terminal, then execve. Never returns."""
    spec_process = ctx["process"]
    try:
        os.setsid()
        if spec_process.get("terminal"):
            from capsa.runtime import console

            console.setup_in_container(ctx["console_fd"], console_device=False)
        process.set_oom_score_adj(spec_process.get("oomScoreAdj"))
        process.apply_rlimits(spec_process.get("rlimits", []))
        seccomp = ctx["config"].get("linux", {}).get("seccomp")
        nnp = spec_process.get("noNewPrivileges")
        if seccomp and not nnp:
            _load_seccomp(ctx["seccomp_program"], seccomp)
        capabilities = spec_process.get("capabilities")
        process.drop_bounding(capabilities)
        process.change_user(spec_process.get("user", {}), process.setgroups_denied())
        process.set_capabilities(capabilities)
        os.chdir(spec_process.get("cwd", "/"))
        if nnp:
            proc.set_no_new_privs()
        executable = process.find_executable(spec_process["args"][0],
                                             spec_process.get("env", []))  # fmt: skip
        process.set_exec_labels(spec_process)
        _close_extra_fds(ctx["preserve_fds"], channel)
        if seccomp and nnp:
            _load_seccomp(ctx["seccomp_program"], seccomp)
        process.exec_process(spec_process, executable)
    except BaseException as err:  # noqa: BLE001 - reported to the parent once
        channel.send_error(err)
        os._exit(1)


def _load_seccomp(program: bytes, seccomp: dict) -> None:
    from capsa.runtime import seccomp as filters

    listener = filters.install(program, seccomp)
    if listener is not None:  # the container's agent already has the init's
        os.close(listener)


def _close_extra_fds(preserve_fds: int, channel: sync.Channel) -> None:
    keep = 3 + preserve_fds
    for fd in range(3, keep):
        os.set_inheritable(fd, True)
    # The channel's write end stays open (close-on-exec) to signal the exec.
    proc.close_fds_from(keep, keep=(channel.wfd,))
