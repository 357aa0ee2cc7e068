"""The container process's identity: rlimits, user and groups, capabilities, exec.

Order matters and follows the kernel's rules: rlimits and the bounding set
need privileges we are about to give up; PR_SET_KEEPCAPS keeps the permitted
set across the change from uid 0, after which capset() gives the process
exactly the sets config.json names.
"""

import os
import resource
import _signal as signal

from capsa.linux import caps, proc
from capsa.runtime.spec import RLIMITS


def apply_rlimits(rlimits: list[dict]) -> None:
    for rlimit in rlimits:
        limit = (_rlim(rlimit["soft"]), _rlim(rlimit["hard"]))
        try:
            resource.setrlimit(RLIMITS[rlimit["type"]], limit)
        except (ValueError, OSError) as err:
            raise OSError(getattr(err, "errno", 1) or 1,
                          f"failed to set {rlimit['type']} to {limit}: {err}") from None  # fmt: skip


def _rlim(value: int) -> int:
    # 2^64-1 is RLIM_INFINITY in JSON; Python spells it -1.
    return resource.RLIM_INFINITY if value >= 2**63 or value < 0 else value


def set_oom_score_adj(value: int | None) -> None:
    if value is not None:
        write_kernel_file("/proc/self/oom_score_adj", str(value))


def capability_masks(capabilities: dict) -> dict[str, int]:
    return {kind: caps.to_mask(names) for kind, names in capabilities.items()}


def drop_bounding(capabilities: dict | None) -> None:
    """Must run while we still hold CAP_SETPCAP, i.e. before changing user."""
    if capabilities is not None:
        caps.drop_bounding(caps.to_mask(capabilities.get("bounding", [])))


def change_user(user: dict, userns_setgroups_denied: bool) -> None:
    """setgroups + setresgid + setresuid, keeping the permitted capabilities."""
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    proc.set_keepcaps(True)
    if not userns_setgroups_denied:
        os.setgroups(user.get("additionalGids", []))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    proc.set_keepcaps(False)
    if "umask" in user:
        os.umask(user["umask"])


def set_capabilities(capabilities: dict | None) -> None:
    """Make effective, permitted, inheritable and ambient exactly as asked."""
    if capabilities is None:
        return
    mask = capability_masks(capabilities)
    caps.set(mask.get("effective", 0), mask.get("permitted", 0), mask.get("inheritable", 0))
    # The kernel only lets a capability be ambient if it is also permitted
    # and inheritable; like runc, the others are left out silently.
    ambient = mask.get("ambient", 0) & mask.get("inheritable", 0) & mask.get("permitted", 0)
    caps.set_ambient(ambient & _known_caps())


def _known_caps() -> int:
    return (1 << (caps.last_cap() + 1)) - 1


def setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def find_executable(name: str, env: list[str]) -> str:
    """Look name up in the container's PATH (from process.env) as execvp would.

    The messages are runc's, word for word: podman and dockerd turn them into
    exit codes 127 and 126 by matching "no such file or directory",
    "executable file not found" and "permission denied".
    """
    quoted = '"' + name.replace('"', '\\"') + '"'
    if "/" in name:
        if not os.path.exists(name):
            raise FileNotFoundError(2, f"exec: {quoted}: stat {name}: no such file or directory")
        if not os.path.isfile(name) or not os.access(name, os.X_OK):
            raise PermissionError(13, f"exec: {quoted}: permission denied")
        return name
    path = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/bin:/bin")
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, f"exec: {quoted}: executable file not found in $PATH")


def set_exec_labels(process: dict, attr_dir: str = "/proc/self/attr") -> None:
    """The AppArmor profile and SELinux label, to take effect at execve.

    spec.validate refuses both on hosts without that LSM, so here the kernel
    interface exists.
    """
    profile = process.get("apparmorProfile")
    if profile:
        apparmor = os.path.join(attr_dir, "apparmor", "exec")
        path = apparmor if os.path.exists(apparmor) else os.path.join(attr_dir, "exec")
        write_kernel_file(path, f"exec {profile}")
    label = process.get("selinuxLabel")
    if label:
        write_kernel_file(os.path.join(attr_dir, "exec"), label)


def write_kernel_file(path: str, value: str) -> None:
    """Write a /proc or /sys setting; the error names the file and the value."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as err:
        raise OSError(err.errno, f"failed to set {value!r} in {path}: "
                      f"{os.strerror(err.errno)}") from None  # fmt: skip


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; ignored signals survive execve."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                   signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT):  # fmt: skip
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def exec_process(process: dict, executable: str) -> None:
    """Replace the init with the container's program (found by find_executable
    earlier, before seccomp could deny the lookup); never returns."""
    env = process.get("env", [])
    environ = dict(e.split("=", 1) for e in env)
    if "HOME" not in environ:
        environ["HOME"] = "/"
    reset_signals()
    os.execve(executable, process["args"], environ)
