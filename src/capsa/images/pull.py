"""`capsa pull`: resolve a name at its registry, choose the platform's
manifest, fetch the config, then fetch and unpack the missing layers in
parallel, and record the image (one transaction) once everything verified.

Each layer streams from the registry into the content store and, through a
pipe, into the unpacker at the same time, so a layer is unpacked when its
download ends. A layer is committed as a snapshot only when both its blob
digest and its uncompressed diff ID are the ones the manifest and config
name; otherwise its directory is removed and the pull fails.
"""

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from capsa.errors import CapsaError, InvalidArgument, NotFound
from capsa.images import digest as digests
from capsa.images import manifest as manifests
from capsa.images import mediatypes, unpack
from capsa.images.progress import Quiet
from capsa.images.reference import Reference
from capsa.images.snapshots import remove_tree
from capsa.images.store import Image, ImageStore

DEFAULT_DOWNLOADS = 3


class Cancelled(CapsaError):
    """Another layer failed; this one stops early."""


class Pull:
    def __init__(self, store: ImageStore, registry, ref: Reference, platform: manifests.Platform,
                 progress: Quiet, downloads: int = DEFAULT_DOWNLOADS, platform_given: bool = False):  # fmt: skip
        self.store = store
        self.registry = registry
        self.ref = ref
        self.platform = platform
        self.platform_given = platform_given
        self.progress = progress
        self.downloads = max(1, downloads)
        self.failed = threading.Event()
        self.fetched_new = False

    def run(self) -> Image:
        ref = self.ref
        self.progress.say(f"{ref.tag or ref.digest}: Pulling from {ref.path}")
        target, media_type, body = self.registry.get_manifest(ref)
        blobs = [self.store.content.put(body, target)]
        kind = manifests.media_type_of(body, media_type, f"manifest for {ref}")
        if kind in mediatypes.INDEXES:
            chosen = manifests.select(manifests.parse_index(body, f"index {target}"), self.platform, str(ref))
            digest, media_type, body = self.registry.get_manifest(ref, chosen.digest)
            blobs.append(self.store.content.put(body, digest))
        else:
            digest = target
        manifest = manifests.parse_manifest(body, f"manifest {digest}")
        config = manifests.parse_config(self._small_blob(manifest.config), f"config {manifest.config.digest}")
        self._check(manifest, config)
        with self.store.lock():
            size = self._layers(manifest, config)
            image = Image(id=manifest.config.digest, manifest=digest, manifest_type=manifest.media_type,
                          platform=str(config.platform), chain=(digests.chain_ids(config.diff_ids) or [None])[-1],
                          size=size, created=config.created, added=time.time())  # fmt: skip
            blobs += [manifest.config.digest] + [layer.digest for layer in manifest.layers]
            self.store.add(image, blobs, names_for(ref, target))
        self.progress.say(f"Digest: {target}")
        news = "Downloaded newer image" if self.fetched_new else "Image is up to date"
        self.progress.say(f"Status: {news} for {ref.familiar()}")
        return self.store.get(image.id)

    def _check(self, manifest: manifests.Manifest, config: manifests.Config) -> None:
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"image {self.ref} is broken: its manifest has {len(manifest.layers)} "
                                  f"layers, its config {len(config.diff_ids)} diff IDs")  # fmt: skip
        if config.platform.architecture and not self.platform.matches(config.platform):
            what = f"image {self.ref} is for {config.platform}, not {self.platform}"
            if self.platform_given:
                raise NotFound(what)
            print(f"WARNING: {what}", file=sys.stderr)

    def _small_blob(self, desc: manifests.Descriptor) -> bytes:
        """A config: fetched whole into the content store, then read."""
        if not self.store.content.has(desc.digest):
            with self.store.content.ingest(desc.digest, desc.size) as ingest:
                if not ingest.done:
                    self.registry.fetch_blob(self.ref, desc.digest, desc.size, ingest)
        return self.store.content.read(desc.digest)

    def _layers(self, manifest: manifests.Manifest, config: manifests.Config) -> int:
        chains = digests.chain_ids(config.diff_ids)
        jobs = [(layer, diff_id, chain, chains[i - 1] if i else None)
                for i, (layer, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains))]  # fmt: skip
        with ThreadPoolExecutor(self.downloads, thread_name_prefix="layer") as pool:
            futures = [pool.submit(self._layer, *job) for job in jobs]
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as err:  # noqa: BLE001 - every layer is waited for, the first error raised
                    errors.append(err)
        if errors:  # the first real failure, not a layer it cancelled
            raise next((err for err in errors if not isinstance(err, Cancelled)), errors[0])
        return sum(self.store.snapshots.get(chain)["size"] for chain in chains)

    def _layer(self, layer: manifests.Descriptor, *job) -> None:
        try:
            self._fetch_layer(layer, *job)
        except Cancelled:
            raise
        except CapsaError as err:
            self.failed.set()  # the other layers stop at their next chunk
            if layer.digest in str(err):
                raise
            raise type(err)(f"failed to pull layer {layer.digest}: {err}") from None
        except BaseException:
            self.failed.set()
            raise

    def _fetch_layer(self, layer: manifests.Descriptor, diff_id: str, chain: str, parent: str | None) -> None:
        bar = self.progress.layer(layer.digest, layer.size)
        if self.store.snapshots.get(chain):
            bar.status("Already exists")
            return
        self.fetched_new = True
        if self.store.content.has(layer.digest):
            unpack_stored(self.store, layer, diff_id, chain, parent)
        else:
            bar.status("Downloading")
            directory = self.store.snapshots.new_dir()
            try:
                unpacked = self._download_unpacking(layer, directory, bar)
                check_diff_id(layer, unpacked, diff_id)
                self.store.snapshots.commit(directory, chain, parent, diff_id, unpacked.size)
            except BaseException:
                remove_tree(directory)
                raise
        bar.status("Pull complete")

    def _download_unpacking(self, layer: manifests.Descriptor, directory: str, bar) -> unpack.Unpacked:
        """Download LAYER into the content store while a thread unpacks the
        same bytes, read from a pipe, into DIRECTORY."""
        read_end, write_end = os.pipe()
        outcome: dict = {}

        def unpack_from_pipe() -> None:
            # Closing the read end on failure makes the download stop (EPIPE).
            with open(read_end, "rb", buffering=1 << 20) as source:
                try:
                    outcome["unpacked"] = unpack.unpack(source, layer.media_type, directory, overlay=True)
                except BaseException as err:  # noqa: BLE001 - handed to the downloading thread
                    outcome["error"] = err

        unpacker = threading.Thread(target=unpack_from_pipe, name="unpack")
        unpacker.start()
        def on_data(chunk: bytes) -> None:
            if self.failed.is_set():
                raise Cancelled("another layer failed")
            view = memoryview(chunk)
            while view:  # a pipe write may be short (a signal, a full pipe)
                view = view[os.write(write_end, view):]
            bar.advance(len(chunk))

        download_error = None
        try:
            with self.store.content.ingest(layer.digest, layer.size) as ingest:
                if ingest.done:
                    with self.store.content.open(layer.digest) as stored:
                        while chunk := stored.read(1 << 20):
                            on_data(chunk)
                else:
                    self.registry.fetch_blob(self.ref, layer.digest, layer.size, ingest, on_data=on_data)
        except BaseException as err:  # noqa: BLE001 - which error is the cause is decided below
            download_error = err
        # An unpack that failed before its input ended is the cause; one that
        # failed after is only seeing the download's end.
        unpack_failed_first = "error" in outcome
        os.close(write_end)
        unpacker.join()
        if unpack_failed_first or (download_error is None and "error" in outcome):
            raise outcome["error"]
        if download_error is not None:
            raise download_error
        return outcome["unpacked"]


def names_for(ref: Reference, target: str) -> list[tuple[str, str]]:
    """The names a pull of REF records: its tag, and the repository digest."""
    names = [(f"{ref.name}@{target}", "digest")]
    if ref.tag and not ref.digest:
        names.append((f"{ref.name}:{ref.tag}", "tag"))
    return names


def install(store: ImageStore, manifest_digest: str, names: list[tuple[str, str]],
            blobs: tuple[str, ...] = ()) -> Image:  # fmt: skip
    """Record the image whose manifest, config and layers are already in
    the content store (load, import): unpack the layers that have no
    snapshot yet, then add the image with NAMES. The caller holds the
    store's lock. BLOBS: more blobs the image keeps (an index)."""
    manifest, config, size = unpack_missing(store, manifest_digest)
    chains = digests.chain_ids(config.diff_ids)
    image = Image(id=manifest.config.digest, manifest=manifest_digest, manifest_type=manifest.media_type,
                  platform=str(config.platform), chain=chains[-1] if chains else None, size=size,
                  created=config.created, added=time.time())  # fmt: skip
    needed = [*blobs, manifest_digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)]
    store.add(image, needed, names)
    return store.get(image.id)


def unpack_missing(store: ImageStore, manifest_digest: str) -> tuple[manifests.Manifest, manifests.Config, int]:
    """Unpack the stored image's layers that have no snapshot yet; returns
    its manifest, config and unpacked size."""
    manifest = manifests.parse_manifest(store.content.read(manifest_digest), f"manifest {manifest_digest}")
    config = manifests.parse_config(store.content.read(manifest.config.digest), f"config {manifest.config.digest}")
    if len(config.diff_ids) != len(manifest.layers):
        raise InvalidArgument(f"image {manifest_digest} is broken: its manifest has {len(manifest.layers)} "
                              f"layers, its config {len(config.diff_ids)} diff IDs")  # fmt: skip
    chains = digests.chain_ids(config.diff_ids)
    size = 0
    for i, (layer, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains)):
        if (row := store.snapshots.get(chain)) is None:
            row = unpack_stored(store, layer, diff_id, chain, chains[i - 1] if i else None)
        size += row["size"]
    return manifest, config, size


def unpack_stored(store: ImageStore, layer: manifests.Descriptor, diff_id: str, chain: str,
                  parent: str | None):  # fmt: skip
    """Unpack a layer blob from the content store into a new snapshot."""
    directory = store.snapshots.new_dir()
    try:
        with store.content.open(layer.digest) as source:
            unpacked = unpack.unpack(source, layer.media_type, directory, overlay=True)
        check_diff_id(layer, unpacked, diff_id)
        return store.snapshots.commit(directory, chain, parent, diff_id, unpacked.size)
    except BaseException:
        remove_tree(directory)
        raise


def check_diff_id(layer: manifests.Descriptor, unpacked: unpack.Unpacked, diff_id: str) -> None:
    if unpacked.diff_id != diff_id:
        raise InvalidArgument(f"layer {layer.digest} failed verification: its content has diff ID "
                              f"{unpacked.diff_id}, the image config says {diff_id}")  # fmt: skip
