"""A container's OCI bundle: the image's rootfs mounted (overlay, or a
copy), the files Docker gives every container (/etc/hosts, /etc/hostname,
/etc/resolv.conf, bind-mounted from the bundle), volumes, and config.json
built from the image config and the run options."""

import os
import socket

from capsa import fastjson as json
from capsa.engine import spec, users, volumes
from capsa.engine.options import RunOptions
from capsa.errors import Unsupported
from capsa.images import rootfs as image_rootfs
from capsa.images.store import Image
from capsa.network import names

INIT = "/usr/bin/tini-static"
INIT_TARGET = "/sbin/docker-init"


def prepare(engine, container, image: Image, options: RunOptions) -> dict:
    """Make the bundle; returns its config.json."""
    paths = engine.paths(container)
    os.makedirs(paths.bundle, mode=0o700)
    mount_rootfs(engine, container, image)
    config = json.loads(engine.images.content.read(image.id)).get("config") or {}
    user = users.resolve(paths.rootfs, options.user or config.get("User") or "", options.group_add)
    hostname, netns_path, extra_files = network_files(engine, container, options)
    mounts = volumes.resolve_mounts(engine, container.id, options, config, paths.rootfs)
    document = spec.build_spec(container_id=container.id, image_config=config, rootfs=paths.rootfs,
                               options=options, user=user, mounts=mounts, hostname=hostname,
                               cgroups_path=f"/capsa/{container.id}", extra_files=extra_files,
                               netns_path=netns_path)  # fmt: skip
    if netns_path is None:  # the host's network, or a container's that has it
        host_network(document)
    if options.init:
        add_init(document)
    with open(paths.in_bundle("config.json"), "w") as f:
        f.write(json.dumps(document))
    return document


def add_init(document: dict) -> None:
    """--init: Debian's static tini as pid 1 (Docker's docker-init), which
    forwards signals and reaps orphans, then runs the command."""
    if not os.path.exists(INIT):
        raise Unsupported(f"--init needs {INIT} (Debian's tini package)")
    document["mounts"].append({"destination": INIT_TARGET, "type": "bind", "source": INIT,
                               "options": ["rbind", "ro", "nosuid", "nodev"]})  # fmt: skip
    document["process"]["args"] = [INIT_TARGET, "--", *document["process"]["args"]]


def mount_rootfs(engine, container, image: Image) -> str:
    """Mount IMAGE at the bundle's rootfs over the container's own upper
    directory (kept across restarts); "overlay" or "copy". The upper
    directory of a container removed at its exit (--rm) is volatile, as
    podman makes it: nothing it writes is worth a sync, and unmounting it
    then syncs nothing either."""
    paths = engine.paths(container)
    upper, work = paths.in_bundle("upper"), paths.in_bundle("work")
    for directory in (paths.rootfs, upper, work):
        os.makedirs(directory, mode=0o755, exist_ok=True)
    if os.listdir(paths.rootfs):
        return "copy"  # copied before: where overlayfs is missing the copy is the container's
    volatile = bool(container.config.get("rm"))
    return image_rootfs.mount(engine.images, image, paths.rootfs, upper, work, volatile=volatile)


def network_files(engine, container, options: RunOptions) -> tuple[str, str | None, dict[str, str]]:
    """The hostname, the network namespace to join (None: the host's) and
    the /etc files ({path in the container: host file}) of the network mode."""
    paths = engine.paths(container)
    mode = options.network
    if mode.startswith("container:"):
        other = engine.containers.get(mode.split(":", 1)[1])
        other_paths = engine.paths(other)
        with open(other_paths.in_bundle("hostname")) as f:
            hostname = f.read().strip()
        files = {f"/etc/{name}": other_paths.in_bundle(name) for name in ("hostname", "hosts", "resolv.conf")}
        netns_path = other.config.get("netns_path")
        engine.containers.update(container.id, config={**container.config, "netns_path": netns_path})
        container.config["netns_path"] = netns_path
        return hostname, netns_path, files
    if mode == "host":
        hostname = options.hostname or socket.gethostname()
        with open("/etc/hosts") as f:
            hosts = f.read()
    else:
        hostname = options.hostname or container.id[:12]
        hosts = names.hosts_text(hostname, "", [], options.add_host)
    texts = {"hostname": f"{hostname}\n", "hosts": hosts,
             "resolv.conf": names.resolv_text(options.dns, options.dns_search, options.dns_option,
                                              host_network=mode == "host")}  # fmt: skip
    files = {}
    for name, text in texts.items():
        files[f"/etc/{name}"] = paths.in_bundle(name)
        with open(paths.in_bundle(name), "w") as f:
            f.write(text)
    netns_path = engine.wiring.netns_path(container.id) if mode != "host" else None
    engine.containers.update(container.id, config={**container.config, "hostname": hostname,
                                                   "netns_path": netns_path})  # fmt: skip
    container.config.update(hostname=hostname, netns_path=netns_path)
    return hostname, netns_path, files


def host_network(document: dict) -> None:
    """--network host: no network namespace, and so no net.* sysctls."""
    linux = document["linux"]
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
    linux["sysctl"] = {k: v for k, v in linux.get("sysctl", {}).items() if not k.startswith("net.")}
