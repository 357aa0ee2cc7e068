"""Step 6, the engine and the image spec (2013-2017): an image imported,
its manifest and layers shown, `capsa run`, `ps`, `logs`; the same
container on another OCI runtime (runc) when one is installed."""

import json
import os
import shutil
import time

from capsa.tour.scratch import Scratch
from capsa.tour.store import CapsaStore

TITLE, YEAR = "the engine and the image spec", "2013-2017"
SUMMARY = "an image, its manifest and layers; capsa run, ps, logs; the same on runc"
IMAGE = "tour/busybox:1"
NAME = "tour-web"
GREETING = 'echo "hello from $(hostname), I am pid $$"'


def run(voice) -> dict:
    voice.explain("""
        Docker (2013) made containers easy to share: an image is a stack of
        filesystem layers (tarballs) plus a JSON config, named by a manifest
        that lists them all by their sha256 digest. The OCI image-spec (1.0 in
        2017) standardised Docker's format, the distribution-spec (2021) its
        registry protocol. An engine unpacks the layers, stacks them with
        overlayfs, writes an OCI bundle and hands it to a runtime.""")
    report = {"step": 6}
    with Scratch(6) as scratch, CapsaStore(scratch) as capsa:
        scratch.announce(voice)
        voice.run(f"capsa import <scratch>/busybox-rootfs {IMAGE}   (a directory becomes a one-layer image)")
        capsa.import_busybox(IMAGE)
        voice.run("capsa images")
        voice.show(capsa("images").stdout.splitlines())
        manifest, config_digest = _manifest(capsa.root, IMAGE, capsa)
        voice.run(f"cat <root>/content/blobs/sha256/{_hex(manifest['digest'])[:12]}…   (the manifest)")
        voice.show(_describe(manifest["json"]))
        report["layers"] = [layer["digest"] for layer in manifest["json"].get("layers", [])]
        report["config"] = config_digest
        voice.result(f"{len(report['layers'])} layer, config {config_digest[:19]}… (the image ID), "
                     "every blob stored under its digest")
        voice.run(f"capsa run -d --name {NAME} --network none {IMAGE} sh -c '{GREETING}; sleep 60'")
        capsa("run", "-d", "--name", NAME, "--network", "none", IMAGE, "sh", "-c", f"{GREETING}; sleep 60")
        voice.run("capsa ps")
        ps = capsa("ps").stdout.splitlines()
        voice.show(ps)
        report["listed"] = any(NAME in line for line in ps[1:])
        voice.run(f"capsa logs {NAME}")
        report["logs"] = _wait_for_logs(capsa, NAME)
        voice.show(report["logs"].splitlines())
        capsa("rm", "-f", NAME)
        runc = shutil.which("runc")
        if runc is None:
            voice.note("runc is not installed (apt-get install runc): the runtime comparison is skipped")
            report["runc"] = None
        else:
            voice.explain("""
                The runtime is pluggable, as with `dockerd --add-runtime` or
                podman's --runtime: the same image and bundle, started by runc
                instead of capsa-runtime.""")
            for runtime in ("capsa", "runc"):
                voice.run(f"capsa run --rm --runtime {runtime} --network none {IMAGE} sh -c '{GREETING}'")
                out = capsa("run", "--rm", "--runtime", runtime, "--network", "none", IMAGE, "sh", "-c",
                            GREETING).stdout.strip()  # fmt: skip
                voice.show([out])
                report[runtime] = out
    return report


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def _manifest(root: str, image: str, capsa) -> tuple[dict, str]:
    """The image's manifest (found in the content store by its config's
    digest, the image ID) and that digest."""
    config_digest = json.loads(capsa("image", "inspect", image).stdout)[0]["Id"]
    blobs = os.path.join(root, "content", "blobs", "sha256")
    for name in sorted(os.listdir(blobs)):
        path = os.path.join(blobs, name)
        if os.path.getsize(path) > 65536:
            continue
        try:
            with open(path) as f:
                document = json.load(f)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(document, dict) and (document.get("config") or {}).get("digest") == config_digest:
            return {"digest": f"sha256:{name}", "json": document}, config_digest
    raise FileNotFoundError(f"no manifest for {image} in {blobs}")


def _describe(manifest: dict) -> list[str]:
    lines = [f'"mediaType": "{manifest.get("mediaType", "")}"',
             f'"config": {{"digest": "{manifest["config"]["digest"][:19]}…", "size": {manifest["config"]["size"]}}}']
    for layer in manifest.get("layers", []):
        lines.append(f'"layers": [{{"mediaType": "{layer["mediaType"]}",')
        lines.append(f'            "digest": "{layer["digest"][:19]}…", "size": {layer["size"]}}}]')
    return lines


def _wait_for_logs(capsa, name: str, seconds: float = 5) -> str:
    deadline = time.monotonic() + seconds
    while not (logs := capsa("logs", name).stdout) and time.monotonic() < deadline:
        time.sleep(0.05)
    return logs
