#!/usr/bin/env python3
"""Time `capsa pull` against podman, ctr (containerd) and skopeo+umoci with hyperfine, in one run.

Usage (as root): .venv/bin/python bench/pull.py [--runs N] [--only capsa,podman,ctr,skopeo]
                                                [--keep] [--markdown] [--rebuild] [--on-host]

The image: a Debian bookworm `debootstrap --variant=minbase` rootfs (the
mirror is the first bookworm `main` source in /etc/apt/sources.list(.d)),
without the downloaded .debs, apt's *.bin caches and its package lists (as
Debian's own images), /dev, /proc and /sys empty, split into five gzip
layers (the rest, usr/lib/x86_64-linux-gnu, usr/share, usr/bin+usr/sbin,
var; each with its subtree's parent directories), about 50 MB compressed,
written as an OCI image layout (config: amd64/linux, Cmd ["bash"], diff_ids
the sha256 of the uncompressed tars). It is built once and cached in
/var/cache/capsa-bench/ (--rebuild builds it again). The tars are made here
with tarfile, sorted, with numeric owners and no user/group names, and gzip
without a name or time, so the same rootfs always gives the same blobs.

Each run starts Debian's docker-registry (distribution 2.8) on 127.0.0.1 at a
free port, with its storage in the temporary directory, and pushes the image
there with `skopeo copy`. Rows (each one hyperfine invocation, medians quoted):

  cold pull   the tool's store is wiped in --prepare before every run:
              capsa   `capsa --root R pull -q REF`                (prepare: rm -rf R)
              podman  `podman --root R --runroot RR ... pull -q --tls-verify=false REF`
                      (prepare: podman system reset -f, umount R/overlay, rm -rf)
              ctr     `ctr --address SOCK -n bench images pull --plain-http REF` against a
                      private containerd 1.6 (cri disabled; pull includes unpacking into the
                      overlayfs snapshotter). prepare: `images rm --sync`, then it checks
                      that `content ls` and `snapshots ls` are empty (else the run fails)
              skopeo  `skopeo copy docker://REF oci:DIR:latest && umoci unpack --image DIR:latest B`
                      (prepare: rm -rf DIR B)
  unpack      capsa only: `capsa pull` with every blob already in its content store but no
              snapshot and no image record (prepare: rm -rf R, copy back the content/blobs
              of an earlier pull), so it is download-free: read, gunzip, verify, extract.
              The registry's access log is checked once to confirm that no layer is fetched.
  no-op pull  pull again with the image present (capsa, podman, ctr): each asks the
              registry for the manifest and finds it has everything.

Ratio = peer median / capsa median of the same row: above 1 means capsa is faster.
Every tool is smoke-run once first; one that fails is reported and left out.

The tools' stores are on a fresh ext4 made for the run (a 4 GiB sparse file
in the temporary directory, `mkfs.ext4` defaults, so with a journal, on a
loop device), not on the host's filesystem (--on-host puts them there).
These machines' root filesystem is ext4 *without a journal*, and there ext4's
inode allocator skips every inode freed in the last 60 s (300 s while its
inode table block is dirty), reading its table block to find out
(`recently_deleted()`, only checked when there is no journal). A benchmark
that deletes a tree of 7,000 files and then creates one is the worst case: in
`perf` 60% of the time was that scan, unpacking the image took 10 to 19 s
instead of 1.5 s, more with every run as freed inodes pile up, for tar as
for capsa. On the journaled ext4 the same unpack takes 1.4 to 1.8 s, run
after run.

Everything runs in a private mount namespace (the script re-executes itself
under `unshare --mount --propagation private`) with a tmpfs over
/var/lib/containers, where containers/image keeps its blob-info cache
whatever --root says; podman and skopeo get their own registries.conf,
policy.json, containers.conf and storage.conf from the temporary directory,
so the host's configuration is not read. Every command runs in a process
group of its own, which gets SIGINT (then SIGKILL) if this script is
interrupted. At the end (also on an error, Ctrl-C or SIGTERM) the stores are
emptied, the registry and containerd are stopped by their pids, everything
mounted under the temporary directory is unmounted, and it is removed
(--keep keeps it, with the logs and hyperfine's JSON).
"""

import argparse
import datetime
import glob
import gzip
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

import harness
from harness import error_line, loadavg, log, run, unmount_under

CACHE = "/var/cache/capsa-bench/debian-bookworm-minbase"
SUITE = "bookworm"
REPOSITORY = "bench/debian"
TAG = "latest"
TOOLS = ("capsa", "podman", "ctr", "skopeo")
LABELS = {"capsa": "capsa", "podman": "podman", "ctr": "ctr (containerd)", "skopeo": "skopeo+umoci"}
NS_MARK = "CAPSA_BENCH_PULL_NS"
STORE_FS_SIZE = 4 << 30  # sparse; a run writes about 1 GB to it
IMAGE_FORMAT = 4  # bump when the way the image is built changes; a cached image of another format is rebuilt
# Subtrees that get a layer of their own, in layer order; everything else is the first layer.
SPLIT = (("usr/lib/x86_64-linux-gnu",), ("usr/share",), ("usr/bin", "usr/sbin"), ("var",))
EMPTIED = ("dev", "proc", "sys")  # kept as empty directories
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERD_PLUGINS_OFF = ("io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                          "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                          "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
                          "io.containerd.internal.v1.tracing")


def mib(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# -- the image


def apt_mirror() -> str:
    """The URI of the first enabled Debian source for SUITE with `main`, from apt's sources."""
    candidates = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                key = None
                for line in stanza.splitlines():
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    if line[0].isspace() and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split() \
                        and "main" in fields.get("components", "").split():
                    candidates += fields.get("uris", "").split()
        elif path.endswith(".list"):
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if words[:1] != ["deb"]:
                    continue
                words = words[1:]
                if words and words[0].startswith("["):  # [options]
                    while words and not words[0].endswith("]"):
                        words.pop(0)
                    words = words[1:]
                if len(words) >= 3 and words[1] == SUITE and "main" in words[2:]:
                    candidates.append(words[0])
    for uri in candidates:
        if uri.startswith(("http://", "https://")):
            return uri
    sys.exit(f"bench: no http(s) Debian source for {SUITE} main in /etc/apt/sources.list(.d)")


def debootstrap(rootfs: str) -> None:
    mirror = apt_mirror()
    log(f"bench: debootstrap --variant=minbase {SUITE} {rootfs} (mirror from the apt sources); a few minutes")
    with open(rootfs + ".log", "w") as out:
        rc = subprocess.run(["debootstrap", "--variant=minbase", SUITE, rootfs, mirror],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        with open(rootfs + ".log") as f:
            sys.exit(f"bench: debootstrap failed: {error_line(f.read())} (log: {rootfs}.log)")
    os.unlink(rootfs + ".log")
    # What Debian's own images drop too: the downloaded .debs (45 MB gzip,
    # already compressed), apt's binary caches and its package lists (40 MB).
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for path in glob.glob(os.path.join(rootfs, pattern)):
            os.unlink(path)


class HashingWriter:
    """A file-like sink that hashes and counts what is written, then passes it on."""

    def __init__(self, target):
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()

    def tell(self) -> int:
        return self.size


def layer_paths(rootfs: str, index: int) -> list[str]:
    """The relative paths (sorted, parents first) in layer INDEX: 0 is everything
    outside SPLIT (with the SPLIT roots themselves as directories), i>0 is SPLIT[i-1]
    with its parent directories."""
    split_roots = {p for group in SPLIT for p in group}
    tops = [""] if index == 0 else list(SPLIT[index - 1])
    paths = []
    for top in tops:
        start = os.path.join(rootfs, top) if top else rootfs
        if top and not os.path.isdir(start):
            continue
        if top:
            # The subtree's root and its parents, as a layer a build makes
            # has them (otherwise unpacking creates them, with the time of day).
            parts = top.split("/")
            paths += ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for dirpath, dirnames, filenames in os.walk(start):
            rel = os.path.relpath(dirpath, rootfs)
            rel = "" if rel == "." else rel
            dirnames.sort()
            keep = []
            for name in dirnames:
                child = f"{rel}/{name}" if rel else name
                paths.append(child)
                if index == 0 and (child in split_roots or child in EMPTIED):
                    continue  # its content is in another layer, or dropped
                keep.append(name)
            dirnames[:] = keep
            paths += [f"{rel}/{name}" if rel else name for name in sorted(filenames)]
    return sorted(set(paths), key=lambda p: p.split("/"))


def write_layer(rootfs: str, index: int, blobs: str) -> tuple[dict, str, int]:
    """Write layer INDEX as a gzip blob; return (descriptor, diff_id, uncompressed size)."""
    tmp = os.path.join(blobs, f".layer{index}.tmp")
    with open(tmp, "wb") as raw:
        compressed = HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=6, mtime=0) as gz:
            plain = HashingWriter(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in layer_paths(rootfs, index):
                    info = tar.gettarinfo(os.path.join(rootfs, rel), arcname=rel)
                    if info is None:  # a socket
                        continue
                    info.mtime = int(info.mtime)
                    info.uname = info.gname = ""
                    if info.isreg():
                        with open(os.path.join(rootfs, rel), "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    digest = "sha256:" + compressed.sha.hexdigest()
    os.rename(tmp, os.path.join(blobs, compressed.sha.hexdigest()))
    return ({"mediaType": LAYER_TYPE, "digest": digest, "size": compressed.size},
            "sha256:" + plain.sha.hexdigest(), plain.size)


def put_json(blobs: str, obj: dict, media_type: str) -> dict:
    data = json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True).encode()
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data)}


def build_layout(rootfs: str, layout: str) -> dict:
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    layers, diff_ids, sizes = [], [], []
    for index in range(len(SPLIT) + 1):
        name = "the rest" if index == 0 else "+".join(SPLIT[index - 1])
        desc, diff_id, size = write_layer(rootfs, index, blobs)
        log(f"bench:   layer {index + 1} ({name}): {mib(desc['size'])} gzip, {mib(size)} tar")
        layers.append(desc)
        diff_ids.append(diff_id)
        sizes.append(size)
    with open(os.path.join(rootfs, "etc", "debian_version")) as f:
        version = f.read().strip()
    created = datetime.datetime.fromtimestamp(int(os.stat(os.path.join(rootfs, "var", "lib", "dpkg", "status"))
                                                  .st_mtime), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": [PATH_ENV], "Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"debootstrap --variant=minbase {SUITE} ({version}), "
                     f"layer {i + 1}: {'the rest' if i == 0 else '+'.join(SPLIT[i - 1])}"}
                    for i in range(len(layers))],
    }
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": put_json(blobs, config, CONFIG_TYPE), "layers": layers}
    mdesc = put_json(blobs, manifest, MANIFEST_TYPE)
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [mdesc]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return {"format": IMAGE_FORMAT, "manifest": mdesc["digest"], "debian_version": version, "layers": len(layers),
            "compressed": sum(d["size"] for d in layers), "uncompressed": sum(sizes),
            "layer_sizes": [[d["size"], s] for d, s in zip(layers, sizes)]}


def cached_summary() -> dict | None:
    """The cached image's summary, if the cache holds a complete image of IMAGE_FORMAT."""
    blobs = os.path.join(CACHE, "oci", "blobs", "sha256")
    try:
        with open(os.path.join(CACHE, "image.json")) as f:
            summary = json.load(f)
        with open(os.path.join(CACHE, "oci", "index.json")) as f:
            digest = json.load(f)["manifests"][0]["digest"]
        with open(os.path.join(blobs, digest.split(":")[1])) as f:
            manifest = json.load(f)
    except (OSError, ValueError, KeyError, IndexError):
        return None
    needed = [manifest["config"]] + manifest["layers"]
    if summary.get("format") != IMAGE_FORMAT or digest != summary.get("manifest") or not all(
            os.path.exists(os.path.join(blobs, d["digest"].split(":")[1])) for d in needed):
        return None
    return summary


def cached_image(rebuild: bool) -> dict:
    """The image's summary; builds the OCI layout in CACHE first when it is not there."""
    if not rebuild:
        if summary := cached_summary():
            return summary
        if os.path.exists(CACHE):
            log("bench: the cached image is incomplete or from an older version of this script; building it again")
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    work = tempfile.mkdtemp(prefix="capsa-bench-image-", dir="/var/tmp")
    try:
        rootfs = os.path.join(work, "rootfs")
        debootstrap(rootfs)
        unmount_under(rootfs)
        log(f"bench: writing the OCI layout ({len(SPLIT) + 1} layers)")
        layout = os.path.join(work, "oci")
        summary = build_layout(rootfs, layout)
        with open(os.path.join(work, "image.json"), "w") as f:
            json.dump(summary, f, indent=1)
        old = CACHE + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(CACHE):
            os.rename(CACHE, old)
        os.makedirs(CACHE)
        shutil.move(layout, os.path.join(CACHE, "oci"))
        shutil.move(os.path.join(work, "image.json"), os.path.join(CACHE, "image.json"))
        shutil.rmtree(old, ignore_errors=True)
        return summary
    finally:
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


# -- the host


def fs_type(path: str) -> str:
    rc, out = run(["findmnt", "-n", "-o", "FSTYPE", "--target", path])
    fstype = out.strip() if rc == 0 else "?"
    if fstype == "ext4" and os.path.isdir("/proc/fs/jbd2"):
        source = run(["findmnt", "-n", "-o", "SOURCE", "--target", path])[1].strip()
        if not any(os.path.basename(source) in name for name in os.listdir("/proc/fs/jbd2")):
            fstype += " without a journal"
    return fstype


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


# -- the bench


class Bench(harness.Bench):
    def __init__(self, workdir: str, stores: str, runs: int):
        super().__init__(workdir, runs)  # workdir: configuration, the registry, logs, hyperfine's JSON
        self.stores = stores  # the tools' stores (a fresh ext4 unless --on-host)
        self.port = free_port()
        self.ref = f"127.0.0.1:{self.port}/{REPOSITORY}:{TAG}"
        self.conf = os.path.join(workdir, "conf")
        os.makedirs(self.conf)
        self.env = {**os.environ,
                    "CONTAINERS_REGISTRIES_CONF": os.path.join(self.conf, "registries.conf"),
                    "CONTAINERS_CONF": os.path.join(self.conf, "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": os.path.join(self.conf, "storage.conf"),
                    "TMPDIR": os.path.join(workdir, "tmp")}
        os.makedirs(self.env["TMPDIR"])
        self.policy = os.path.join(self.conf, "policy.json")
        self.registry_log = os.path.join(workdir, "registry.log")
        self.containerd: harness.Service | None = None
        self.sock = os.path.join(workdir, "containerd.sock")
        self.layer_count = 0

    def write_configs(self) -> None:
        with open(self.env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
            f.write('unqualified-search-registries = []\nshort-name-mode = "disabled"\n\n'
                    f'[[registry]]\nlocation = "127.0.0.1:{self.port}"\ninsecure = true\n')
        with open(self.policy, "w") as f:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            f.write("[engine]\n"
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n'
                    'lock_type = "file"\n'
                    f"image_copy_tmp_dir = {json.dumps(self.env['TMPDIR'])}\n")
        pm = self.podman_paths()
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write('[storage]\ndriver = "overlay"\n'
                    f"graphroot = {json.dumps(pm['root'])}\nrunroot = {json.dumps(pm['run'])}\n")

    # registry

    def start_registry(self, layout: str) -> None:
        storage = os.path.join(self.workdir, "registry")
        os.makedirs(storage)
        cfg = os.path.join(self.conf, "registry.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\n"
                    "log:\n  level: info\n  formatter: text\n"
                    "storage:\n  filesystem:\n    rootdirectory: " + json.dumps(storage) + "\n"
                    "  cache:\n    blobdescriptor: inmemory\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
        svc = self.start_service("docker-registry", ["docker-registry", "serve", cfg], self.registry_log)
        self.wait_ready(svc, lambda: http_ok(f"http://127.0.0.1:{self.port}/v2/"),
                        f"on 127.0.0.1:{self.port}; pushing with skopeo")
        rc, out = run(["skopeo", "--policy", self.policy, "copy", "--quiet", "--dest-tls-verify=false",
                       f"oci:{layout}:{TAG}", f"docker://{self.ref}"], env=self.env)
        if rc:
            raise RuntimeError(f"skopeo copy to the registry failed: {error_line(out)}")

    def layer_gets(self, layers: list[str]) -> int:
        """How many GETs of the image's layer blobs the registry has logged."""
        with open(self.registry_log, errors="replace") as f:
            return sum(1 for line in f if "GET /v2/" in line and any(d in line for d in layers))

    # tools

    def podman_paths(self) -> dict[str, str]:
        base = os.path.join(self.stores, "podman")
        # The overlay driver refuses a runroot path longer than 50 characters.
        return {n: os.path.join(base, n) for n in ("root", "run", "tmp", "networks", "volumes")}

    def podman(self) -> str:
        p = self.podman_paths()
        return shlex.join(["podman", "--root", p["root"], "--runroot", p["run"], "--tmpdir", p["tmp"],
                           "--network-config-dir", p["networks"], "--volumepath", p["volumes"],
                           "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                           "--events-backend", "file"])

    def podman_reset(self) -> str:
        p = self.podman_paths()
        overlay = shlex.quote(os.path.join(p["root"], "overlay"))
        return (f"{self.podman()} system reset -f >/dev/null 2>&1; "
                f"if mountpoint -q {overlay}; then umount {overlay}; fi; "
                f"rm -rf {' '.join(shlex.quote(v) for v in p.values())}")

    def ctr(self) -> str:
        return shlex.join(["ctr", "--address", self.sock, "-n", "bench"])

    def ctr_reset(self) -> str:
        c = self.ctr()
        # images rm --sync waits for the garbage collector, which removes the
        # content and snapshots nothing refers to; the checks fail the run if not.
        return (f"{c} images rm --sync {shlex.quote(self.ref)} >/dev/null 2>&1; "
                f'test -z "$({c} content ls -q)" || {{ echo "ctr content left after prepare" >&2; exit 1; }}; '
                f'test -z "$({c} snapshots ls | tail -n +2)" || '
                '{ echo "ctr snapshots left after prepare" >&2; exit 1; }')

    def start_containerd(self) -> None:
        base = os.path.join(self.stores, "containerd")
        root, state = os.path.join(base, "root"), os.path.join(base, "state")
        os.makedirs(root)
        os.makedirs(state)
        cfg = os.path.join(self.conf, "containerd.toml")
        with open(cfg, "w") as f:
            f.write("version = 2\n"
                    f"root = {json.dumps(root)}\nstate = {json.dumps(state)}\n"
                    f"disabled_plugins = {json.dumps(list(CONTAINERD_PLUGINS_OFF))}\n"
                    f"[grpc]\n  address = {json.dumps(self.sock)}\n"
                    '[debug]\n  address = ""\n  level = "warn"\n'
                    '[metrics]\n  address = ""\n'
                    '[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n'
                    f"    path = {json.dumps(os.path.join(base, 'opt'))}\n")
        self.containerd = self.start_service(
            "containerd", ["containerd", "--root", root, "--state", state, "--address", self.sock, "--config", cfg],
            os.path.join(self.workdir, "containerd.log"))
        self.wait_ready(self.containerd, lambda: os.path.exists(self.sock) and run(
            ["ctr", "--address", self.sock, "version"], timeout=10)[0] == 0, f"at {self.sock}")

    def skopeo_dirs(self) -> tuple[str, str]:
        os.makedirs(os.path.join(self.stores, "skopeo"), exist_ok=True)  # skopeo wants oci:DIR's parent
        return os.path.join(self.stores, "skopeo", "oci"), os.path.join(self.stores, "skopeo", "bundle")

    def capsa_root(self, name: str = "capsa") -> str:
        return os.path.join(self.stores, name)

    def command(self, tool: str, root: str | None = None) -> str:
        """The shell command that pulls REF with TOOL."""
        if tool == "capsa":
            return shlex.join([self.capsa, "--root", root or self.capsa_root(), "pull", "-q", self.ref])
        if tool == "podman":
            return (f"{self.podman()} pull -q --tls-verify=false --signature-policy {shlex.quote(self.policy)} "
                    f"{shlex.quote(self.ref)}")
        if tool == "ctr":
            return f"{self.ctr()} images pull --plain-http {shlex.quote(self.ref)}"
        if tool == "skopeo":
            oci, bundle = self.skopeo_dirs()
            return (shlex.join(["skopeo", "--policy", self.policy, "copy", "--quiet", "--src-tls-verify=false",
                                f"docker://{self.ref}", f"oci:{oci}:{TAG}"]) + " && "
                    + shlex.join(["umoci", "unpack", "--image", f"{oci}:{TAG}", bundle]))
        raise ValueError(tool)

    def reset(self, tool: str, root: str | None = None) -> str:
        """The shell command that empties TOOL's store (hyperfine --prepare)."""
        if tool == "capsa":
            return f"rm -rf {shlex.quote(root or self.capsa_root())}"
        if tool == "podman":
            return self.podman_reset()
        if tool == "ctr":
            return self.ctr_reset()
        if tool == "skopeo":
            return "rm -rf " + " ".join(shlex.quote(d) for d in self.skopeo_dirs())
        raise ValueError(tool)

    def smoke(self, tool: str) -> str:
        """Pull once from an empty store; '' if it worked, else why not."""
        if tool == "capsa" and not self.capsa:
            return "capsa not found (.venv/bin/capsa or on PATH)"
        if tool == "ctr":
            try:
                self.start_containerd()
            except RuntimeError as e:
                return str(e)
        for step, cmd in (("prepare", self.reset(tool)), ("pull", self.command(tool))):
            rc, out = run(cmd, env=self.env, shell=True)
            if rc:
                return f"{step}: {error_line(out) if out.strip() else f'exit status {rc}'}"
        if tool == "ctr":  # the pull must have unpacked, as the others do
            rc, out = run(f"{self.ctr()} snapshots ls", env=self.env, shell=True)
            count = len(out.splitlines()) - 1
            if rc or count != self.layer_count:
                return f"ctr images pull left {count} snapshots, not {self.layer_count}: it did not unpack"
            self.notes.append(f"ctr: checked that the pull unpacks ({count} overlayfs snapshots) and that "
                              "--prepare leaves no content and no snapshot")
        return ""

    # timing

    def cold(self, tools: list[str]) -> None:
        for tool in tools:
            if tool in self.failures:
                continue
            self.results[("cold pull", tool)] = self.hyperfine(f"{tool} cold pull", self.command(tool),
                                                                self.reset(tool))

    def unpack_only(self, layers: list[str]) -> None:
        """capsa pull with the blobs in its content store but nothing unpacked."""
        if "capsa" in self.failures:
            return
        root = self.capsa_root("capsa-unpack")
        saved = os.path.join(self.stores, "capsa-blobs")
        rc, out = run(f"{self.reset('capsa', root)} && {self.command('capsa', root)}", env=self.env, shell=True)
        blobs = os.path.join(root, "content", "blobs")
        if rc or not os.path.isdir(blobs):
            self.results[("unpack", "capsa")] = ("fails: " + error_line(out)) if rc else \
                f"fails: no {blobs} after a pull (the content store's layout changed?)"
            return
        shutil.copytree(blobs, saved, symlinks=True)
        prepare = (f"rm -rf {shlex.quote(root)} && mkdir -p {shlex.quote(os.path.join(root, 'content'))} && "
                   f"cp -a {shlex.quote(saved)} {shlex.quote(blobs)}")
        run(prepare, shell=True)
        before = self.layer_gets(layers)
        rc, out = run(self.command("capsa", root), env=self.env, shell=True)
        fetched = self.layer_gets(layers) - before
        if rc:
            self.results[("unpack", "capsa")] = "fails: " + error_line(out)
            return
        if fetched:
            self.results[("unpack", "capsa")] = (f"fails: capsa fetched {fetched} layer blob(s) although they "
                                                 "were in its content store")
            return
        self.notes.append("unpack row: checked in the registry's access log that a pull with the blobs in "
                          "capsa's content store fetches no layer")
        self.results[("unpack", "capsa")] = self.hyperfine("capsa unpack (blobs stored)",
                                                           self.command("capsa", root), prepare)

    def noop(self, tools: list[str]) -> None:
        for tool in tools:
            if tool in self.failures or tool == "skopeo":
                continue
            rc, out = run(f"{self.reset(tool)}; {self.command(tool)}", env=self.env, shell=True)
            if rc:
                self.results[("no-op pull", tool)] = "fails: " + error_line(out)
                continue
            self.results[("no-op pull", tool)] = self.hyperfine(f"{tool} no-op pull", self.command(tool), None)

    def stop(self) -> None:
        """Empty the stores, stop the services by pid, unmount what is left under workdir."""
        if os.path.isdir(self.podman_paths()["root"]):
            run(self.podman_reset(), env=self.env, shell=True, timeout=120)
        if self.containerd and self.containerd.alive():
            run(self.ctr_reset(), env=self.env, shell=True, timeout=120)
        self.stop_services(grace=15)
        unmount_under(self.workdir)


# -- output


def verdict(bench: Bench, tools: list[str]) -> str:
    base = bench.results.get(("cold pull", "capsa"))
    if not isinstance(base, dict):
        return "target (capsa's cold pull faster than every peer's): not measured, capsa did not run"
    peers = [(t, bench.results.get(("cold pull", t))) for t in tools if t != "capsa"]
    timed = [(t, r) for t, r in peers if isinstance(r, dict)]
    slower = [f"{LABELS[t]} {r['median']:.2f} s" for t, r in timed if r["median"] <= base["median"]]
    missing = [LABELS[t] for t, r in peers if not isinstance(r, dict)]
    if not timed:
        return "target (capsa's cold pull faster than every peer's): not measured, no peer was timed"
    if slower:
        status = f"NOT met: capsa {base['median']:.2f} s, not faster than {', '.join(slower)}"
    else:
        status = f"met: capsa {base['median']:.2f} s is faster than every peer timed"
    if missing:
        status += f" ({', '.join(missing)} not timed)"
    return "target (capsa's cold pull faster than every peer's): " + status


# -- main


def make_store_fs(workdir: str) -> str:
    """A fresh journaled ext4 (a sparse file on a loop device) mounted at
    WORKDIR/fs; returns the mount point. The mount lives in this script's
    private mount namespace, and the loop device is detached on unmount."""
    image, point = os.path.join(workdir, "fs.img"), os.path.join(workdir, "fs")
    os.mkdir(point)
    with open(image, "wb") as f:
        f.truncate(STORE_FS_SIZE)
    # Inode tables and journal written now, so no lazy-init thread writes during the timing.
    for argv in (["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image],
                 ["mount", "-o", "loop", image, point]):
        rc, out = run(argv, timeout=300)
        if rc:
            raise RuntimeError(f"{argv[0]}: {error_line(out)}")
    return point


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time capsa pull against podman, ctr and skopeo+umoci.")
    p.add_argument("--runs", type=int, default=5, help="timed runs per row and tool (default 5)")
    p.add_argument("--only", default=",".join(TOOLS), help=f"comma-separated tools (default {','.join(TOOLS)})")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (stores emptied)")
    p.add_argument("--markdown", action="store_true", help="print the results as Markdown")
    p.add_argument("--rebuild", action="store_true", help=f"build the image in {CACHE} again")
    p.add_argument("--on-host", action="store_true",
                   help="put the stores on the host's filesystem (/var/tmp) instead of a fresh ext4 on a loop device")
    args = p.parse_args()
    args.only = harness.tool_list(p, args.only, TOOLS)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    harness.start_as_root(("hyperfine", "unshare", "debootstrap", "docker-registry", "skopeo"), NS_MARK, __file__)
    started = time.monotonic()
    header = harness.machine(("podman", "containerd", "skopeo", "umoci", "docker-registry", "hyperfine"))
    summary = cached_image(args.rebuild)
    layout = os.path.join(CACHE, "oci")
    log(f"bench: image {summary['manifest']}: Debian {summary['debian_version']} minbase, {summary['layers']} "
        f"layers, {mib(summary['compressed'])} compressed, {mib(summary['uncompressed'])} uncompressed")
    with open(os.path.join(layout, "blobs", "sha256", summary["manifest"].split(":")[1])) as f:
        layers = [d["digest"] for d in json.load(f)["layers"]]
    header.append(("image", (f"Debian {summary['debian_version']} debootstrap --variant=minbase, "
                             f"{summary['layers']} gzip layers, {mib(summary['compressed'])} compressed, "
                             f"{mib(summary['uncompressed'])} uncompressed (tar bytes)")))
    hidden = harness.hide_blob_info_cache()
    workdir = tempfile.mkdtemp(prefix="capsa-pull-", dir="/var/tmp")
    bench = Bench(workdir, workdir, args.runs)
    bench.layer_count = len(layers)
    interrupted = False
    try:
        if not args.on_host:
            bench.stores = make_store_fs(workdir)
            header.append(("stores", (f"a fresh ext4 ({STORE_FS_SIZE >> 30} GiB sparse file on a loop device, "
                                      "mkfs.ext4 defaults: journaled)")))
        else:
            header.append(("stores", f"{workdir} on the host's filesystem ({fs_type('/var/tmp')})"))
        bench.write_configs()
        bench.start_registry(layout)
        for tool in args.only:
            log(f"bench: smoke run of {tool}")
            why = bench.smoke(tool)
            if why:
                bench.failures[tool] = why
                log(f"bench:   {tool} left out: {why}")
        bench.cold(args.only)
        if "capsa" in args.only:
            bench.unpack_only(layers)
        bench.noop(args.only)
    except KeyboardInterrupt:
        interrupted = True
        log("bench: interrupted; cleaning up")
    except RuntimeError as e:
        log(f"bench: {e}")
        interrupted = True
    finally:
        bench.stop()
        if args.keep:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        subprocess.run(["umount", hidden], check=False)
    if interrupted:
        return 1
    log(f"bench: done in {time.monotonic() - started:.0f} s")
    rows = harness.timing_rows(bench, ["cold pull", "unpack", "no-op pull"], args.only, LABELS)
    extra = [(f"medians of {args.runs} runs (hyperfine --runs {args.runs}); peer/capsa = peer median / capsa "
             "median of the same row: above 1 means capsa is faster")]
    extra += bench.notes
    unpack = bench.results.get(("unpack", "capsa"))
    cold = bench.results.get(("cold pull", "capsa"))
    if isinstance(unpack, dict):
        extra.append(f"capsa unpack throughput: {summary['uncompressed'] / 1e6 / unpack['median']:.1f} MB/s of "
                     f"uncompressed layer data ({mib(summary['uncompressed'])} in {unpack['median']:.2f} s, "
                     "blobs already stored: read, gunzip, diff ID check, extract, commit)")
    if isinstance(cold, dict):
        extra.append(f"capsa cold pull throughput: {summary['uncompressed'] / 1e6 / cold['median']:.1f} MB/s "
                     f"uncompressed, {summary['compressed'] / 1e6 / cold['median']:.1f} MB/s compressed")
    extra.append(verdict(bench, args.only))
    extra.append(f"load average at end: {loadavg()}")
    (harness.print_markdown if args.markdown else harness.print_plain)([rows], header, extra)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
