"""Looking into running containers and the store: top, stats, cp, and
system df / prune / info."""

import json
import os
import shutil
import sys
import time

from capsa.cli import humanize
from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, NotFound


def register(commands) -> None:
    from capsa.cli.main import Parser

    for name, adder in (("top", _top), ("stats", _stats), ("cp", _cp)):
        adder(commands.add_parser(name))
    system = commands.add_parser("system", help="manage capsa").add_subparsers(
        dest="system_command", metavar="COMMAND", parser_class=Parser)  # fmt: skip
    for name, adder in (("df", _df), ("prune", _prune), ("info", _info)):
        adder(system.add_parser(name))


def _engine(args):
    from capsa.cli.containers import open_engine

    return open_engine(args)


def _running(engine, name: str):
    container = engine.refresh(engine.containers.lookup(name))
    if container.state not in ("running", "paused"):
        raise FailedPrecondition(f"container {container.id[:12]} is not running")
    return container


def _runtime(engine, container, *args: str) -> str:
    import subprocess

    paths = engine.paths(container)
    result = subprocess.run([container.runtime, "--root", paths.runtime_root, *args], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    if result.returncode != 0:
        raise CapsaError((result.stderr.strip().splitlines() or ["runtime failed"])[-1])
    return result.stdout


# -- top


def _top(p) -> None:
    p.description = "Show a container's processes (ps options may follow, default -ef)."
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs="*", metavar="PS_OPTIONS")
    p.set_defaults(handler=cmd_top)


def cmd_top(args) -> int:
    engine = _engine(args)
    container = _running(engine, args.container)
    sys.stdout.write(_runtime(engine, container, "ps", container.id, *(args.ps_args or ["-ef"])))
    return 0


# -- stats


def _stats(p) -> None:
    p.description = "Show containers' resource use (one sample with --no-stream)."
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(handler=cmd_stats)


def sample(engine, container) -> dict:
    """Docker's stats row from the runtime's `events --stats` document."""
    data = json.loads(_runtime(engine, container, "events", "--stats", container.id))["data"]
    memory = data.get("memory", {}).get("usage", {})
    used, limit = memory.get("usage", 0), memory.get("limit", 0)
    cpu = data.get("cpu", {}).get("usage", {}).get("total", 0)
    return {"ID": container.id[:12], "Name": container.name, "CPUTotal": cpu,
            "MemUsage": f"{humanize.binary(used)} / {humanize.binary(limit)}",
            "MemPerc": f"{100 * used / limit:.2f}%" if limit else "0.00%",
            "PIDs": str(data.get("pids", {}).get("current", 0))}  # fmt: skip


def cmd_stats(args) -> int:
    engine = _engine(args)
    chosen = [engine.containers.lookup(n) for n in args.containers] or engine.containers.all()
    previous: dict[str, tuple[float, int]] = {}
    while True:
        rows = []
        for container in chosen:
            container = engine.refresh(container)
            if container.state != "running":
                continue
            row = sample(engine, container)
            now = time.monotonic()
            then, used = previous.get(container.id, (now, row["CPUTotal"]))
            row["CPUPerc"] = f"{100 * (row['CPUTotal'] - used) / 1e9 / (now - then):.2f}%" if now > then else "--"
            previous[container.id] = (now, row.pop("CPUTotal"))
            rows.append(row)
        _print_stats(rows, args.format, clear=not args.no_stream and sys.stdout.isatty())
        if args.no_stream:
            return 0
        time.sleep(1)


def _print_stats(rows: list[dict], fmt: str, clear: bool) -> None:
    if fmt == "json":
        for row in rows:
            print(json.dumps(row))
    else:
        from capsa.cli.images import print_table

        if clear:
            sys.stdout.write("\x1b[2J\x1b[H")
        print_table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"],
                    [[r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"], r["PIDs"]] for r in rows])  # fmt: skip
    sys.stdout.flush()


# -- cp


def _cp(p) -> None:
    p.description = "Copy files between a container and the host: CONTAINER:PATH HOSTPATH, or back."
    p.add_argument("source", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(handler=cmd_cp)


def _split(spec: str):
    name, sep, path = spec.partition(":")
    if sep and name and not spec.startswith(("/", ".")):
        return name, path
    return None, spec


def cmd_cp(args) -> int:
    from capsa.rootpath import resolve as resolve_in_rootfs

    (src_name, src), (dst_name, dst) = _split(args.source), _split(args.dest)
    if bool(src_name) == bool(dst_name):
        raise InvalidArgument("copying between containers, or within the host, is not supported: "
                              "name exactly one side as CONTAINER:PATH")  # fmt: skip
    engine = _engine(args)
    container = engine.containers.lookup(src_name or dst_name)
    rootfs = engine.paths(container).rootfs
    if not os.path.ismount(rootfs) and not os.listdir(rootfs):
        raise FailedPrecondition(f"container {container.id[:12]} has no mounted filesystem")
    if src_name:
        src = resolve_in_rootfs(rootfs, src)
    else:
        dst = resolve_in_rootfs(rootfs, dst)
    _copy(src, dst)
    return 0


def _copy(src: str, dst: str) -> None:
    if not os.path.lexists(src):
        raise NotFound(f"Could not find the file {src} in container")
    if os.path.isdir(dst) and not os.path.islink(dst):
        dst = os.path.join(dst, os.path.basename(src.rstrip("/")))
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


# -- system


def _df(p) -> None:
    p.description = "Show disk usage of images, containers and volumes."
    p.set_defaults(handler=cmd_df)


def _tree_size(path: str) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def cmd_df(args) -> int:
    from capsa.cli.images import print_table

    engine = _engine(args)
    images = engine.images.list()
    containers = [engine.refresh(c) for c in engine.containers.all()]
    volumes = engine.volumes.all()
    used_images = {c.image for c in containers}
    rows = [["Images", len(images), len([i for i in images if i.id in used_images]),
             humanize.size(sum(i.size for i in images))],
            ["Containers", len(containers), len([c for c in containers if c.state == "running"]),
             humanize.size(sum(_tree_size(engine.paths(c).in_bundle("upper")) for c in containers))],
            ["Local Volumes", len(volumes), len([v for v in volumes if engine.volumes.users(v["Name"])]),
             humanize.size(sum(_tree_size(v["Mountpoint"]) for v in volumes))]]  # fmt: skip
    print_table(["TYPE", "TOTAL", "ACTIVE", "SIZE"], [[str(c) for c in row] for row in rows])
    return 0


def _prune(p) -> None:
    p.description = ("Remove stopped containers, unused networks (and what a crash left of any network), "
                     "dangling images (-a: unused ones), unused anonymous volumes.")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--volumes", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(handler=cmd_prune)


def cmd_prune(args) -> int:
    import argparse

    from capsa.cli.images import cmd_prune as prune_images

    from capsa.cli.main import confirm

    if not args.force and not confirm("This will remove all stopped containers, networks not used by at least "
                                      "one container, unused images and volumes."):
        return 0
    engine = _engine(args)
    removed = []
    for container in engine.containers.all():
        if engine.refresh(container).state not in ("running", "paused"):
            engine.remove(container)
            removed.append(container.id)
    if removed:
        print("Deleted Containers:\n" + "\n".join(removed) + "\n")
    networks = engine.wiring.prune()
    if networks:
        print("Deleted Networks:\n" + "\n".join(networks) + "\n")
    if args.volumes:
        gone = engine.volumes.prune()
        if gone:
            print("Deleted Volumes:\n" + "\n".join(gone) + "\n")
    engine.close()
    return prune_images(argparse.Namespace(root=args.root, all=args.all, force=True))


def _info(p) -> None:
    p.description = "Show capsa's settings and counts."
    p.set_defaults(handler=cmd_info)


def cmd_info(args) -> int:
    from capsa.cli.main import VERSION
    from capsa.engine import runtimes

    engine = _engine(args)
    containers = [engine.refresh(c) for c in engine.containers.all()]
    count = lambda state: len([c for c in containers if c.state == state])  # noqa: E731
    cgroup = "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"
    print(f"Client: capsa {VERSION}\nServer: none (daemonless)\n Containers: {len(containers)}\n"
          f"  Running: {count('running')}\n  Paused: {count('paused')}\n  Stopped: {count('exited')}\n"
          f" Images: {len(engine.images.list())}\n Storage Driver: overlay\n Logging Driver: json-file\n"
          f" Cgroup Version: {cgroup}\n Runtimes: {' '.join(sorted({*runtimes.BUILTIN, *runtimes.configured()}))}\n"
          f" Default Runtime: {runtimes.DEFAULT}\n Kernel Version: {os.uname().release}\n"
          f" Root Dir: {engine.root}\n State Dir: {engine.state}")  # fmt: skip
    return 0
