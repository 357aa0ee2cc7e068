"""Lifecycle hooks: run each with the state JSON on stdin, honouring timeout.

Where each kind runs (runtime-spec "POSIX-platform Hooks"): prestart and
createRuntime in the runtime's namespaces during `create`; createContainer in
the container's namespaces before pivot_root; startContainer in the
container after `start`, before the program; poststart after it started;
poststop after `delete`. A poststart or poststop failure only warns.
"""

from capsa import fastjson as json
from capsa.errors import CapsaError

class HookError(CapsaError):
    pass

def run_hooks(config: dict, kind: str, state: dict) -> None:
    """Run every hook of kind in order; the first failure raises HookError."""
    for hook in config.get("hooks", {}).get(kind, []):
        run_hook(kind, hook, state)

def run_hook(kind: str, hook: dict, state: dict) -> None:
    import subprocess

    args = hook.get("args") or [hook["path"]]
    env = dict(e.split("=", 1) for e in hook.get("env", []))
    timeout = hook.get("timeout")
    if timeout is not None and timeout <= 0:
        raise HookError(f"{kind} hook {hook['path']}: timeout must be positive")
    try:
        result = subprocess.run(
            args, executable=hook["path"], env=env, input=json.dumps(state).encode(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, close_fds=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise HookError(f"{kind} hook {hook['path']} timed out after {timeout}s") from None
    except OSError as err:
        raise HookError(f"failed to run {kind} hook {hook['path']}: {err.strerror}") from err
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        detail = detail.splitlines()[-1] if detail else f"exit status {result.returncode}"
        raise HookError(f"{kind} hook {hook['path']} failed: {detail}")

def run_hooks_warn(config: dict, kind: str, state: dict, warn) -> None:
    """Run hooks of kind; failures are reported with warn() and do not stop us."""
    for hook in config.get("hooks", {}).get(kind, []):
        try:
            run_hook(kind, hook, state)
        except HookError as err:
            warn(str(err))

def hook_state(config: dict, container_id: str, status: str, pid: int, bundle: str) -> dict:
    return {
        "ociVersion": config.get("ociVersion", "1.2.0"),
        "id": container_id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": config.get("annotations", {}),
    }

