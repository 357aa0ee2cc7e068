"""A container's root filesystem from an image: an overlay mount of the
image's snapshots under a writable upper directory, or, where overlayfs is
unavailable, a private copy made by applying the image's layers in order.
"""

import os

from capsa.images import snapshots
from capsa.images.store import Image, ImageStore


def mount(store: ImageStore, image: Image, target: str, upper: str, work: str,
          copy: bool | None = None, volatile: bool = False) -> str:  # fmt: skip
    """Make TARGET the image's rootfs; returns "overlay" or "copy" (what
    unmount needs). COPY forces the choice; by default overlay if the
    kernel has it. VOLATILE: an overlay whose writes are never synced."""
    if copy is None:
        copy = not snapshots.overlay_available()
    if copy:
        apply_layers(store, image, target)
        return "copy"
    lowers = store.snapshots.lowerdirs(image.chain) if image.chain else []
    if not lowers:  # an image without layers: overlayfs still wants a lowerdir
        lowers.append(_empty_dir(store))
    snapshots.mount_overlay(lowers, upper, work, target, volatile)
    return "overlay"


def apply_layers(store: ImageStore, image: Image, target: str) -> None:
    """Unpack every layer of IMAGE onto TARGET, whiteouts deleting."""
    from capsa.images import manifest as manifests
    from capsa.images import unpack  # with manifest, 10 ms of imports that overlay never needs

    manifest = manifests.parse_manifest(store.content.read(image.manifest), f"manifest {image.manifest}")
    os.makedirs(target, exist_ok=True)
    for layer in manifest.layers:
        with store.content.open(layer.digest) as source:
            unpack.unpack(source, layer.media_type, target, overlay=False)


def _empty_dir(store: ImageStore) -> str:
    path = os.path.join(store.root, "empty")
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path
