"""Container commands with Docker's names, flags and exit codes: create,
run, start, stop, restart, kill, rm, ps, logs, exec, wait, inspect, pause,
unpause, rename, volume …, version."""

import json
import os
import sys
import time

from capsa.cli import humanize
from capsa.errors import CapsaError, FailedPrecondition, InvalidArgument, NotFound


def open_engine(args):
    from capsa.engine.containers import Engine

    return Engine(args.root)


def register(commands) -> None:
    for name, adder in (("start", _start), ("stop", _stop), ("restart", _restart), ("kill", _kill),
                        ("rm", _rm), ("ps", _ps), ("logs", _logs), ("wait", _wait),
                        ("inspect", _inspect), ("pause", _pause), ("unpause", _unpause),
                        ("rename", _rename), ("version", _version)):  # fmt: skip
        adder(commands.add_parser(name))
    from capsa.cli.main import Parser

    volume = commands.add_parser("volume", help="manage volumes").add_subparsers(
        dest="volume_command", metavar="COMMAND", parser_class=Parser)  # fmt: skip
    for name, adder, aliases in (("create", _volume_create, []), ("ls", _volume_ls, ["list"]),
                                 ("inspect", _volume_inspect, []), ("rm", _volume_rm, ["remove"]),
                                 ("prune", _volume_prune, [])):  # fmt: skip
        adder(volume.add_parser(name, aliases=aliases))


def each(args, names: list[str], action, show_result: bool = False) -> int:
    """Run ACTION on each named container as Docker does: print the name
    (or, SHOW_RESULT, what ACTION returned) on success, an error line per
    failure, exit 1 if any failed."""
    engine = open_engine(args)
    status = 0
    for name in names:
        try:
            result = action(engine, engine.containers.lookup(name))
            print(result if show_result else name, flush=True)
        except CapsaError as err:
            sys.stderr.write(f"capsa: {err}\n")
            status = 1
    return status


# -- lifecycle


def _start(p) -> None:
    p.description = "Start stopped containers."
    p.add_argument("-a", "--attach", action="store_true", help="attach to the output and wait")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_start)


def cmd_start(args) -> int:
    if args.attach or args.interactive:
        if len(args.containers) != 1:
            raise InvalidArgument("you cannot start and attach multiple containers at once")
        from capsa.cli.run import attach_and_wait

        engine = open_engine(args)
        container = engine.start(engine.containers.lookup(args.containers[0]), attach_first=True)
        return attach_and_wait(engine, container, stdin=args.interactive)
    return each(args, args.containers, lambda engine, c: engine.start(c))


def _stop(p) -> None:
    p.description = "Stop running containers (the stop signal, then SIGKILL after --time)."
    p.add_argument("-t", "--time", type=int, default=None, help="seconds to wait before killing")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_stop)


def cmd_stop(args) -> int:
    return each(args, args.containers, lambda engine, c: engine.stop(c, args.time))


def _restart(p) -> None:
    p.description = "Restart containers."
    p.add_argument("-t", "--time", type=int, default=None, help="seconds to wait before killing")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_restart)


def cmd_restart(args) -> int:
    return each(args, args.containers, lambda engine, c: engine.start(engine.stop(c, args.time)))


def _kill(p) -> None:
    p.description = "Send a signal (default SIGKILL) to running containers."
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_kill)


def cmd_kill(args) -> int:
    from capsa.engine.options import parse_signal

    signum = parse_signal(args.signal)
    return each(args, args.containers, lambda engine, c: engine.kill(c, signum))


def _rm(p) -> None:
    p.description = "Remove containers."
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("-v", "--volumes", action="store_true", help="also remove its anonymous volumes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_rm)


def cmd_rm(args) -> int:
    return each(args, args.containers, lambda engine, c: engine.remove(c, args.force, args.volumes))


def _pause(p) -> None:
    p.description = "Freeze every process of containers."
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=lambda args: each(args, args.containers, lambda e, c: e.pause(c)))


def _unpause(p) -> None:
    p.description = "Thaw paused containers."
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=lambda args: each(args, args.containers, lambda e, c: e.unpause(c)))


def _rename(p) -> None:
    p.description = "Rename a container."
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(handler=cmd_rename)


def cmd_rename(args) -> int:
    engine = open_engine(args)
    engine.rename(engine.containers.lookup(args.container), args.new_name)
    return 0


def _wait(p) -> None:
    p.description = "Block until containers stop; print their exit codes."
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_wait)


def cmd_wait(args) -> int:
    return each(args, args.containers, lambda engine, c: engine.wait(c), show_result=True)


# -- looking at containers


def _ps(p) -> None:
    p.description = "List containers (running ones; -a all)."
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[], help="name=, id=, status=, ancestor=, label=")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=cmd_ps)


def status_text(container, now: float | None = None) -> str:
    """Docker's STATUS column: "Up 3 minutes", "Exited (0) 2 seconds ago"."""
    if container.state in ("running", "paused"):
        started = humanize.parse_time(container.started_at) or time.time()
        up = f"Up {humanize.duration((now or time.time()) - started)}"
        return up + " (Paused)" if container.state == "paused" else up
    if container.state == "created":
        return "Created"
    finished = humanize.parse_time(container.finished_at)
    return f"Exited ({container.exit_code}) {humanize.ago(finished)}"


def _filters(raw: list[str]) -> list[tuple[str, str]]:
    known = ("name", "id", "status", "ancestor", "label")
    out = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise InvalidArgument(f"invalid filter '{item}'")
        out.append((key, value))
    return out


def _matches(container, filters) -> bool:
    for key, value in filters:
        if key == "name" and value not in container.name:
            return False
        if key == "id" and not container.id.startswith(value):
            return False
        if key == "status" and container.state != value:
            return False
        if key == "ancestor" and value not in (container.image_name, container.image):
            return False
        if key == "label":
            labels = container.config.get("labels") or {}
            name, _, want = value.partition("=")
            if name not in labels or (want and labels[name] != want):
                return False
    return True


def cmd_ps(args) -> int:
    engine = open_engine(args)
    filters = _filters(args.filter)
    shown = []
    for container in engine.containers.all():
        container = engine.refresh(container)
        if (args.all or container.state in ("running", "paused")) and _matches(container, filters):
            shown.append(container)
    ident = (lambda c: c.id) if args.no_trunc else (lambda c: c.short_id)
    if args.quiet:
        for container in shown:
            print(ident(container))
        return 0
    rows = [{"ID": ident(c), "Image": c.image_name, "Command": _command_text(c, args.no_trunc),
             "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(c.created)),
             "RunningFor": humanize.ago(c.created).removesuffix(" ago"), "State": c.state,
             "Status": status_text(c), "Ports": ports_text(c), "Names": c.name} for c in shown]  # fmt: skip
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
        return 0
    from capsa.cli.images import print_table

    header = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    print_table(header, [[r["ID"], r["Image"], r["Command"], humanize.ago(c.created), r["Status"], r["Ports"],
                          r["Names"]] for r, c in zip(rows, shown)])  # fmt: skip
    return 0


def ports_text(container) -> str:
    """ps's PORTS: "0.0.0.0:8080->80/tcp, …" while the container runs."""
    records = container.config.get("ports")
    if not records or container.state not in ("running", "paused"):
        return ""
    from capsa.network import ports

    return ", ".join(f"{m.host_address()}:{m.host_port}->{m.container_port}/{m.protocol}"
                     for m in ports.from_records(records))  # fmt: skip


def _command_text(container, full: bool) -> str:
    process = container.config.get("process_args") or []
    text = " ".join(process)
    if not full and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


def _logs(p) -> None:
    p.description = "Show a container's output."
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all", help='lines from the end ("all")')
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("--since", help="a time, or a duration ago (10m)")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_logs)


def cmd_logs(args) -> int:
    from capsa.engine import logs

    engine = open_engine(args)
    container = engine.containers.lookup(args.container)
    path = engine.paths(container).log
    if args.tail != "all" and not args.tail.lstrip("-").isdigit():
        raise InvalidArgument(f"invalid value for --tail: {args.tail!r}")
    tail = None if args.tail == "all" or int(args.tail) < 0 else int(args.tail)
    since = logs.parse_since(args.since) if args.since else None
    write_entries(logs.select(logs.entries(path), tail, since), args.timestamps)
    if args.follow:
        running = lambda: engine.refresh(engine.containers.get(container.id)).state in ("running", "paused")  # noqa: E731
        write_entries(logs.follow(path, running), args.timestamps)
    return 0


def write_entries(entries, timestamps: bool = False) -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for entry in entries:
        stream = err if entry.get("stream") == "stderr" else out
        data = entry["log"].encode("utf-8", "surrogateescape")
        if timestamps:
            data = entry["time"].encode() + b" " + data
        stream.write(data)
        stream.flush()


def _inspect(p) -> None:
    p.description = "Show containers' (or images') details as JSON."
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args) -> int:
    from capsa.cli.images import describe_image
    from capsa.cli.main import print_inspected
    from capsa.engine.inspect import describe

    engine = open_engine(args)

    def container_or_image(name: str) -> dict:
        try:
            return describe(engine, engine.refresh(engine.containers.lookup(name)))
        except NotFound:
            return describe_image(engine.images, engine.images.lookup(name))

    return print_inspected(args.names, container_or_image, "object")


def _version(p) -> None:
    p.description = "Show capsa's version."
    p.set_defaults(handler=cmd_version)


def cmd_version(args) -> int:
    from capsa.cli.main import VERSION

    print(f"Client: capsa\n Version:    {VERSION}\n Python:     {sys.version.split()[0]}\n"
          f" OS/Arch:    linux/{os.uname().machine}\n\nEngine: capsa (daemonless)\n Version:    {VERSION}")  # fmt: skip
    return 0


# -- volumes


def _volume_create(p) -> None:
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("name", nargs="?")
    p.set_defaults(handler=cmd_volume_create)


def cmd_volume_create(args) -> int:
    engine = open_engine(args)
    labels = dict(label.partition("=")[::2] for label in args.label)
    print(engine.volumes.create(args.name, labels))
    return 0


def _volume_ls(p) -> None:
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(handler=cmd_volume_ls)


def cmd_volume_ls(args) -> int:
    volumes = open_engine(args).volumes.all()
    if args.quiet:
        for volume in volumes:
            print(volume["Name"])
        return 0
    from capsa.cli.images import print_table

    print_table(["DRIVER", "VOLUME NAME"], [[v["Driver"], v["Name"]] for v in volumes])
    return 0


def _volume_inspect(p) -> None:
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(handler=cmd_volume_inspect)


def cmd_volume_inspect(args) -> int:
    from capsa.cli.main import print_inspected

    volumes = open_engine(args).volumes
    return print_inspected(args.names, volumes.get, "volume")


def _volume_rm(p) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(handler=cmd_volume_rm)


def cmd_volume_rm(args) -> int:
    engine = open_engine(args)
    status = 0
    for name in args.names:
        try:
            engine.volumes.remove(name)
            print(name)
        except NotFound:
            if not args.force:
                sys.stderr.write(f"capsa: no such volume: {name}\n")
                status = 1
        except FailedPrecondition as err:
            sys.stderr.write(f"capsa: {err}\n")
            status = 1
    return status


def _volume_prune(p) -> None:
    p.add_argument("-a", "--all", action="store_true", help="also named volumes")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(handler=cmd_volume_prune)


def cmd_volume_prune(args) -> int:
    from capsa.cli.main import confirm

    if not args.force and not confirm("This will remove anonymous local volumes not used by at least one container."):
        return 0
    removed = open_engine(args).volumes.prune(args.all)
    if removed:
        print("Deleted Volumes:\n" + "\n".join(removed) + "\n")
    print("Total reclaimed space: 0B")
    return 0
