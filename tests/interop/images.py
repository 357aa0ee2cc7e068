"""The busybox image every peer runs, built here with umoci from Debian's
busybox-static, and written as one archive that podman, containerd and
dockerd all load.

The archive is an OCI image layout (oci-layout, index.json, blobs/) that
also carries a Docker `manifest.json` pointing at the same blobs, the way
`ctr images export` writes it: podman and containerd read the OCI index,
dockerd 20.10 (which predates loading OCI layouts) reads manifest.json.
"""

import io
import json
import os
import subprocess
import tarfile

from capsa.tour import rootfs

IMAGE = "localhost/busybox:interop"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _umoci(*args: str) -> None:
    result = subprocess.run(["umoci", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"umoci {' '.join(args)} failed: {result.stderr.strip()}")


def build_layout(workdir: str) -> str:
    """An OCI image layout at WORKDIR/layout whose tag `busybox` is the image."""
    layout = os.path.join(workdir, "layout")
    unpacked = os.path.join(workdir, "unpacked")
    _umoci("init", "--layout", layout)
    _umoci("new", "--image", f"{layout}:busybox")
    _umoci("unpack", "--image", f"{layout}:busybox", unpacked)
    rootfs.build(os.path.join(unpacked, "rootfs"))
    _umoci("repack", "--image", f"{layout}:busybox", unpacked)
    _umoci("config", "--image", f"{layout}:busybox", "--config.cmd", "sh",
           "--config.env", PATH_ENV, "--config.workingdir", "/")  # fmt: skip
    _umoci("gc", "--layout", layout)
    return layout


def _blob_path(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexdigest}"


def write_archive(layout: str, archive: str, name: str = IMAGE) -> None:
    """Tar LAYOUT into ARCHIVE, its single manifest named NAME, with a Docker
    manifest.json beside the OCI index."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    (descriptor,) = index["manifests"]
    with open(os.path.join(layout, _blob_path(descriptor["digest"]))) as f:
        manifest = json.load(f)
    descriptor.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = name
    docker_manifest = [{"Config": _blob_path(manifest["config"]["digest"]),
                        "RepoTags": [name],
                        "Layers": [_blob_path(layer["digest"]) for layer in manifest["layers"]]}]  # fmt: skip

    def add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
        info = tarfile.TarInfo(arcname)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(archive, "w") as tar:
        tar.add(os.path.join(layout, "oci-layout"), arcname="oci-layout")
        tar.add(os.path.join(layout, "blobs"), arcname="blobs")
        add_bytes(tar, "index.json", json.dumps(index).encode())
        add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())


def build_archive(workdir: str) -> str:
    """Build the image under WORKDIR and return the archive's path."""
    layout = build_layout(workdir)
    archive = os.path.join(workdir, "busybox.tar")
    write_archive(layout, archive)
    return archive
