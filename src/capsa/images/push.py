"""`capsa push`: upload an image's blobs that the registry lacks, then its
manifest, as `docker push` does.

A blob the repository already has is skipped; one the registry holds in
another repository the image came from is mounted across (no upload);
the rest are uploaded from the content store. The manifest goes last, by
tag, exactly as stored, so its digest is the one the image has locally.
"""

from capsa.images import manifest as manifests
from capsa.images import reference
from capsa.images.progress import Quiet
from capsa.images.reference import Reference
from capsa.images.store import Image, ImageStore


def push(store: ImageStore, registry, ref: Reference, image: Image, progress: Quiet) -> str:
    """Push IMAGE as REF (a tag); returns the manifest digest."""
    progress.say(f"The push refers to repository [{ref.name}]")
    body = store.content.read(image.manifest)
    manifest = manifests.parse_manifest(body, f"manifest {image.manifest}")
    sources = mount_sources(image, ref)
    for desc in [*manifest.layers, manifest.config]:
        _push_blob(store, registry, ref, desc, sources, progress)
    digest = registry.put_manifest(ref, manifest.media_type, body)
    store.add(image, [], [(f"{ref.name}@{digest}", "digest")])
    progress.say(f"{ref.tag}: digest: {digest} size: {len(body)}")
    return digest


def mount_sources(image: Image, ref: Reference) -> list[str]:
    """Repositories on REF's registry the image came from: a blob can be
    mounted from them instead of uploaded."""
    paths = []
    for name in image.tags + image.digests:
        known = reference.parse(name)
        if known.domain == ref.domain and known.path != ref.path and known.path not in paths:
            paths.append(known.path)
    return paths


def _push_blob(store: ImageStore, registry, ref: Reference, desc: manifests.Descriptor,
               sources: list[str], progress: Quiet) -> None:  # fmt: skip
    bar = progress.layer(desc.digest, desc.size)
    if registry.blob_exists(ref, desc.digest):
        bar.status("Layer already exists")
        return
    for source in sources:
        if registry.mount_blob(ref, desc.digest, source):
            bar.status(f"Mounted from {source}")
            return
    bar.status("Pushing")
    with store.content.open(desc.digest) as blob:
        registry.upload_blob(ref, desc.digest, desc.size, blob)
    bar.advance(desc.size)
    bar.status("Pushed")
