"""The CNI protocol, as the runtime side of the spec runs it: each plugin of
a network's configuration list is a program, given the command and the
attachment in CNI_* variables and its configuration on stdin, which prints
a result (or an error) as JSON.

ADD runs the plugins in order, each one getting the previous result as
prevResult; DEL runs them in reverse with the result ADD produced, read from
the cache, so an attachment made before a crash can still be undone. CHECK
runs them in order with that result.

The cache (one JSON file per attachment, written before ADD and completed
after) plays the part of libcni's /var/lib/cni/results.
"""

import json
import os

from capsa.errors import CapsaError

PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
VERSION = "1.0.0"


class PluginError(CapsaError):
    """A plugin failed: its CNI error message, or why it could not run."""


class Attachment:
    """One container interface on one network: what CNI_* describes."""

    def __init__(self, container_id: str, netns: str, ifname: str, runtime_config: dict | None = None):
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.runtime_config = runtime_config or {}

    def env(self, command: str) -> dict:
        return {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": self.container_id,
                "CNI_NETNS": self.netns, "CNI_IFNAME": self.ifname, "CNI_ARGS": "",
                "CNI_PATH": os.pathsep.join(plugin_dirs())}  # fmt: skip


def plugin_dirs() -> list[str]:
    configured = os.environ.get("CNI_PATH")
    return configured.split(os.pathsep) if configured else list(PLUGIN_DIRS)


def find_plugin(kind: str) -> str:
    if "/" in kind or not kind:
        raise PluginError(f"invalid CNI plugin type {kind!r}")
    for directory in plugin_dirs():
        path = os.path.join(directory, kind)
        if os.access(path, os.X_OK):
            return path
    raise PluginError(f"the CNI plugin {kind!r} is not installed "
                      f"(looked in {', '.join(plugin_dirs())}; Debian's containernetworking-plugins)")  # fmt: skip


def plugin_config(conflist: dict, plugin: dict, attachment: Attachment, prev_result: dict | None) -> dict:
    """What one plugin reads on stdin: its own entry, the list's name and
    version, the capabilities it declares filled from the runtime config."""
    config = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    capabilities = plugin.get("capabilities") or {}
    wanted = {k: v for k, v in attachment.runtime_config.items() if capabilities.get(k)}
    config.pop("capabilities", None)
    if wanted:
        config["runtimeConfig"] = wanted
    if prev_result is not None:
        config["prevResult"] = prev_result
    return config


def run_plugin(command: str, config: dict, attachment: Attachment) -> dict | None:
    """Execute one plugin; its result (None when it prints nothing, as DEL does)."""
    import subprocess  # 9 ms of imports that a container without a network never needs

    path = find_plugin(config["type"])
    try:
        done = subprocess.run([path], input=json.dumps(config).encode(), env=attachment.env(command),
                              capture_output=True, check=False)  # fmt: skip
    except OSError as err:
        raise PluginError(f"failed to run the CNI plugin {path}: {err.strerror}") from None
    output = done.stdout.strip()
    answer = None
    if output:
        try:
            answer = json.loads(output)
        except ValueError:
            raise PluginError(f"the CNI plugin {config['type']} printed no JSON: {output[:200]!r}") from None
    if done.returncode != 0:
        raise PluginError(_error_text(config["type"], command, answer, done))
    return answer


def _error_text(kind: str, command: str, answer, done) -> str:
    if isinstance(answer, dict) and answer.get("msg"):
        why = answer["msg"] + (f": {answer['details']}" if answer.get("details") else "")
    else:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return f"CNI plugin {kind} failed ({command}): {why}"


def add(conflist: dict, attachment: Attachment) -> dict:
    """ADD through the whole list; the last plugin's result. On a failure
    the plugins already run are undone (DEL) before the error is raised."""
    result = None
    for done, plugin in enumerate(conflist["plugins"]):
        try:
            result = run_plugin("ADD", plugin_config(conflist, plugin, attachment, result), attachment) or result
        except PluginError:
            try:
                delete({**conflist, "plugins": conflist["plugins"][: done + 1]}, attachment, result)
            except PluginError:
                pass  # the ADD failure is the one to report
            raise
    return result or {}


def delete(conflist: dict, attachment: Attachment, result: dict | None) -> None:
    """DEL through the list in reverse. Every plugin is run even when one
    fails (DEL must undo all it can); the first failure is raised after."""
    failure = None
    for plugin in reversed(conflist["plugins"]):
        try:
            run_plugin("DEL", plugin_config(conflist, plugin, attachment, result), attachment)
        except PluginError as err:
            failure = failure or err
    if failure:
        raise failure


def check(conflist: dict, attachment: Attachment, result: dict) -> None:
    for plugin in conflist["plugins"]:
        run_plugin("CHECK", plugin_config(conflist, plugin, attachment, result), attachment)


class Cache:
    """<dir>/<network>-<container>-<ifname>.json: the list, the attachment
    and (once ADD succeeded) its result, for a DEL after a crash."""

    def __init__(self, directory: str):
        self.directory = directory

    def path(self, network: str, attachment: Attachment) -> str:
        return os.path.join(self.directory, f"{network}-{attachment.container_id}-{attachment.ifname}.json")

    def write(self, network: str, conflist: dict, attachment: Attachment, result: dict | None) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        entry = {"kind": "capsaCNICacheV1", "config": conflist, "containerId": attachment.container_id,
                 "netns": attachment.netns, "ifName": attachment.ifname,
                 "runtimeConfig": attachment.runtime_config, "result": result}  # fmt: skip
        path = self.path(network, attachment)
        with open(path + ".tmp", "w") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)

    def read(self, network: str, container_id: str, ifname: str) -> tuple[dict, Attachment, dict | None] | None:
        path = self.path(network, Attachment(container_id, "", ifname))
        try:
            with open(path) as f:
                entry = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        attachment = Attachment(entry["containerId"], entry["netns"], entry["ifName"], entry["runtimeConfig"])
        return entry["config"], attachment, entry["result"]

    def remove(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self.path(network, Attachment(container_id, "", ifname)))
        except FileNotFoundError:
            pass

    def entries_of(self, container_id: str) -> list[tuple[str, str]]:
        """(network, ifname) of every cached attachment of CONTAINER_ID."""
        found = []
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            network, sep, rest = name.partition(f"-{container_id}-")
            if sep and rest.endswith(".json"):
                found.append((network, rest[: -len(".json")]))
        return found
