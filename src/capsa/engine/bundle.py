"""A container's OCI bundle: the image's rootfs mounted (overlay, or a
copy), the files Docker gives every container (/etc/hosts, /etc/hostname,
/etc/resolv.conf, bind-mounted from the bundle), volumes, and config.json
built from the image config and the run options."""

import os

from capsa import fastjson as json
from capsa.engine import spec, users, volumes
from capsa.engine.options import RunOptions
from capsa.errors import Unsupported
from capsa.images import rootfs as image_rootfs
from capsa.images.store import Image

INIT = "/usr/bin/tini-static"
INIT_TARGET = "/sbin/docker-init"
HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


def prepare(engine, container, image: Image, options: RunOptions) -> dict:
    """Make the bundle; returns its config.json."""
    paths = engine.paths(container)
    os.makedirs(paths.bundle, mode=0o700)
    mount_rootfs(engine, container, image)
    config = json.loads(engine.images.content.read(image.id)).get("config") or {}
    user = users.resolve(paths.rootfs, options.user or config.get("User") or "", options.group_add)
    hostname = options.hostname or container.id[:12]
    extra_files = write_etc_files(paths, hostname)
    mounts = volumes.resolve_mounts(engine, container.id, options, config, paths.rootfs)
    document = spec.build_spec(container_id=container.id, image_config=config, rootfs=paths.rootfs,
                               options=options, user=user, mounts=mounts, hostname=hostname,
                               cgroups_path=f"/capsa/{container.id}", extra_files=extra_files)  # fmt: skip
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
    directory (kept across restarts); "overlay" or "copy"."""
    paths = engine.paths(container)
    upper, work = paths.in_bundle("upper"), paths.in_bundle("work")
    for directory in (paths.rootfs, upper, work):
        os.makedirs(directory, mode=0o755, exist_ok=True)
    if os.listdir(paths.rootfs):
        return "copy"  # copied before: where overlayfs is missing the copy is the container's
    return image_rootfs.mount(engine.images, image, paths.rootfs, upper, work)


def write_etc_files(paths, hostname: str) -> dict[str, str]:
    """Docker's per-container /etc files; {path in the container: file}."""
    files = {"/etc/hostname": f"{hostname}\n", "/etc/hosts": HOSTS + f"127.0.1.1\t{hostname}\n",
             "/etc/resolv.conf": resolv_conf()}  # fmt: skip
    out = {}
    for target, text in files.items():
        host_path = paths.in_bundle(os.path.basename(target))
        with open(host_path, "w") as f:
            f.write(text)
        out[target] = host_path
    return out


def resolv_conf() -> str:
    """The host's resolv.conf without loopback nameservers (they mean
    nothing in the container's network namespace), as Docker filters it."""
    try:
        with open("/etc/resolv.conf") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if not (line.split()[:1] == ["nameserver"] and _loopback(line.split()[1:2]))]
    return "\n".join(kept) + "\n"


def _loopback(address: list[str]) -> bool:
    return bool(address) and (address[0].startswith("127.") or address[0] == "::1")
