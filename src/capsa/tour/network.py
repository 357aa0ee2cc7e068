"""Step 7, the network (2015-): two containers on a user network reaching
each other by name, and one port published on the host's 127.0.0.1."""

import json
import os
import secrets
import socket
import time
import urllib.request

from capsa.tour import rootfs
from capsa.tour.scratch import Scratch
from capsa.tour.store import CapsaStore

TITLE, YEAR = "the network", "2015"
SUMMARY = "two containers reach each other by name; a port published on 127.0.0.1"
PLUGINS = ("bridge", "host-local", "portmap")
# Prints web's line of /etc/hosts, then its page (httpd may take a moment to listen).
FETCH_WEB = ("grep -w web /etc/hosts; for i in 1 2 3 4 5 6 7 8 9 10; do "
             "wget -q -O- http://web/ && exit 0; sleep 0.3; done; echo unreachable")
HTTPD = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"


def run(voice) -> dict:
    voice.explain("""
        Each container has its own network namespace (step 2): only lo until
        something wires it. CNI, the Container Network Interface (CoreOS,
        2015, now a CNCF project), is how rkt, Kubernetes, podman and capsa
        do that: small plugin programs that take a namespace and a JSON
        config. `bridge` makes a veth pair into a Linux bridge, `host-local`
        hands out addresses, `portmap` adds the iptables rules (DNAT) that
        publish a port. Docker (libnetwork) does the same with its own code.""")
    _require_plugins()
    rootfs.require_program("iptables", "iptables")
    network = f"tour-net-{secrets.token_hex(3)}"
    port = _free_port()
    report = {"step": 7, "network": network, "port": port}
    with Scratch(7) as scratch, CapsaStore(scratch) as capsa:
        capsa.import_busybox()
        voice.run(f"capsa network create {network}")
        capsa.create_network(network)
        bridge = _bridge_of(capsa, network)
        up = "up already" if os.path.exists(f"/sys/class/net/{bridge}") else "made when the first container joins"
        voice.result(f"its bridge: {bridge} ({up}); its subnet: {_subnet_of(capsa, network)}")
        voice.run(f"capsa run -d --name web --network {network} -p 127.0.0.1:{port}:80 busybox httpd ...")
        capsa("run", "-d", "--name", "web", "--network", network, "-p", f"127.0.0.1:{port}:80",
              "-h", "web", "busybox", "sh", "-c", HTTPD)  # fmt: skip
        voice.run(f"capsa run --rm --network {network} busybox sh -c "
                  "'grep web /etc/hosts; wget -q -O- http://web/'")
        out = capsa("run", "--rm", "--network", network, "busybox", "sh", "-c",
                    FETCH_WEB).stdout  # fmt: skip
        voice.show(out.splitlines())
        report["by_name"] = out.strip().splitlines()[-1:] == ["hello from web"]
        voice.result("the second container found web by name (capsa writes every member's /etc/hosts)"
                     if report["by_name"] else "web could not be reached by name")
        voice.run(f"curl http://127.0.0.1:{port}/   (from the host)")
        answer = _fetch(f"http://127.0.0.1:{port}/")
        voice.show([answer.strip() or "(no answer)"])
        report["port_answered"] = answer.strip() == "hello from web"
        voice.result(f"the published port answers on the host: 127.0.0.1:{port} → web:80"
                     if report["port_answered"] else "the published port did not answer")
        voice.run(f"capsa rm -f web; capsa network rm {network}")
        capsa("rm", "-f", "web")
        capsa("network", "rm", network)
        report["bridge_removed"] = not os.path.exists(f"/sys/class/net/{bridge}")
        voice.result(f"{bridge}, its veths, leases and iptables rules are gone" if report["bridge_removed"]
                     else f"{bridge} is still there")
    return report


def _require_plugins() -> None:
    from capsa.network.cni import plugin_dirs

    for plugin in PLUGINS:
        if not any(os.access(os.path.join(d, plugin), os.X_OK) for d in plugin_dirs()):
            raise rootfs.MissingPackage(f"the CNI plugin {plugin}", "containernetworking-plugins")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inspect_network(capsa, network: str) -> dict:
    return json.loads(capsa("network", "inspect", network).stdout)[0]


def _bridge_of(capsa, network: str) -> str:
    info = _inspect_network(capsa, network)
    return (info.get("Options") or {}).get("com.docker.network.bridge.name") or info.get("Bridge") or "?"


def _subnet_of(capsa, network: str) -> str:
    config = (_inspect_network(capsa, network).get("IPAM") or {}).get("Config") or [{}]
    return config[0].get("Subnet", "?")


def _fetch(url: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.1)
