"""`capsa inspect`: a container as Docker's inspect JSON shapes it."""

import os

from capsa import fastjson as json


def describe(engine, container) -> dict:
    paths = engine.paths(container)
    try:
        with open(paths.in_bundle("config.json")) as f:
            spec = json.loads(f.read())
    except FileNotFoundError:
        spec = {}
    process = spec.get("process", {})
    running = container.state in ("running", "paused")
    options = container.config
    live = (engine.shim_status(container) if running or options.get("health_cmd") else None) or {}
    restarting = running and live.get("status") == "restarting"  # the shim waits out a back-off
    return {
        "Id": container.id,
        "Created": _rfc3339(container.created),
        "Path": (process.get("args") or [""])[0],
        "Args": (process.get("args") or [])[1:],
        "State": {
            "Status": "restarting" if restarting else container.state, "Running": running,
            "Paused": container.state == "paused", "Restarting": restarting,
            "OOMKilled": container.oom_killed, "Dead": container.state == "dead",
            "Pid": container.pid if running and not restarting else 0, "ExitCode": container.exit_code,
            "Error": "",
            "StartedAt": container.started_at or "0001-01-01T00:00:00Z",
            "FinishedAt": container.finished_at or "0001-01-01T00:00:00Z",
            **({"Health": _health(live.get("health"))} if options.get("health_cmd") else {}),
        },
        "Image": container.image,
        "ResolvConfPath": paths.in_bundle("resolv.conf"),
        "HostnamePath": paths.in_bundle("hostname"),
        "HostsPath": paths.in_bundle("hosts"),
        "LogPath": paths.log,
        "Name": "/" + container.name,
        "RestartCount": container.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Runtime": container.runtime, "AutoRemove": bool(options.get("rm")),
            "RestartPolicy": _restart(options.get("restart") or "no"),
            "NetworkMode": options.get("network") or "bridge",
            "PortBindings": _port_bindings(options),
            "Dns": options.get("dns") or [], "DnsSearch": options.get("dns_search") or [],
            "ExtraHosts": options.get("add_host") or None,
            "Privileged": bool(options.get("privileged")), "ReadonlyRootfs": bool(options.get("read_only")),
            "CapAdd": options.get("cap_add") or None, "CapDrop": options.get("cap_drop") or None,
            "SecurityOpt": options.get("security_opt") or None,
            "Memory": spec.get("linux", {}).get("resources", {}).get("memory", {}).get("limit", 0),
            "LogConfig": {"Type": "json-file", "Config": dict(o.split("=", 1) for o in options.get("log_opts") or [])},
        },
        "Mounts": [{"Type": "bind" if "bind" in (m.get("options") or []) else m.get("type", ""),
                    "Source": m.get("source", ""), "Destination": m["destination"],
                    "RW": "ro" not in (m.get("options") or [])}
                   for m in spec.get("mounts", []) if m.get("source", "").startswith("/")
                   and not m["destination"].startswith("/etc/")],  # fmt: skip
        "Config": {
            "Hostname": spec.get("hostname", ""), "User": options.get("user") or "",
            "Tty": bool(process.get("terminal")), "OpenStdin": bool(options.get("stdin")),
            "Env": process.get("env", []), "Cmd": options.get("command"), "Image": container.image_name,
            "WorkingDir": process.get("cwd", ""), "Entrypoint": options.get("entrypoint"),
            "Labels": options.get("labels") or {},
            "ExposedPorts": {key: {} for key in options.get("expose") or []} or None,
        },
        "GraphDriver": {"Name": "overlay", "Data": {"MergedDir": paths.rootfs,
                                                    "UpperDir": paths.in_bundle("upper"),
                                                    "WorkDir": paths.in_bundle("work")}},  # fmt: skip
        "NetworkSettings": engine.wiring.settings(container),
        "BundlePath": paths.bundle if os.path.isdir(paths.bundle) else "",
    }


def _rfc3339(seconds: float) -> str:
    import time

    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e9):09d}Z"


def _port_bindings(options: dict) -> dict:
    from capsa.network import ports

    wanted = [m for spec in options.get("publish") or [] for m in ports.parse_publish(spec)]
    return {key: [{"HostIp": b["HostIp"] if b["HostIp"] != "0.0.0.0" else "",
                   "HostPort": b["HostPort"] if b["HostPort"] != "0" else ""} for b in bindings]
            for key, bindings in ports.describe(wanted).items()}  # fmt: skip


def _restart(policy: str) -> dict:
    name, _, count = policy.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _health(status: dict | None) -> dict:
    if not status:
        return {"Status": "unhealthy", "FailingStreak": 0, "Log": []}
    return {"Status": status.get("status", "starting"), "FailingStreak": status.get("failing_streak", 0),
            "Log": [{"Start": e.get("start"), "End": e.get("end"), "ExitCode": e.get("exit_code"),
                     "Output": e.get("output", "")} for e in status.get("log", [])]}  # fmt: skip
