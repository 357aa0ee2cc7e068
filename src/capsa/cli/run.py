"""`capsa create`, `run`, `exec` and `attach`: Docker's flags into
RunOptions, the container's streams to this terminal, and Docker's exit
codes (125: capsa failed, 126: the command cannot run, 127: not found,
else the container's own)."""

import argparse
import os
import sys
from contextlib import contextmanager

from capsa.errors import CapsaError, InvalidArgument

DETACH_KEYS = b"\x10\x11"  # Ctrl-P Ctrl-Q


def add_run_flags(p, run: bool) -> None:
    p.add_argument("--help", action="help", help="show this help")
    if run:
        p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
        p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    else:
        p.set_defaults(detach=True, rm=False)
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--group-add", action="append", default=[])
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--mount", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--entrypoint")
    p.add_argument("-h", "--hostname")
    p.add_argument("-m", "--memory")
    p.add_argument("--memory-swap")
    p.add_argument("--cpus")
    p.add_argument("-c", "--cpu-shares", type=int)
    p.add_argument("--cpuset-cpus")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--ulimit", action="append", default=[])
    p.add_argument("--restart", default="no")
    p.add_argument("--stop-signal")
    p.add_argument("--stop-timeout", type=int)
    p.add_argument("--init", action="store_true")
    p.add_argument("--runtime")
    p.add_argument("--health-cmd")
    p.add_argument("--health-interval")
    p.add_argument("--health-timeout")
    p.add_argument("--health-retries", type=int)
    p.add_argument("--health-start-period")
    p.add_argument("--no-healthcheck", action="store_true")
    p.add_argument("--log-opt", action="append", default=[])
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--network", "--net", default="bridge", help="bridge (default), none, host, container:ID or NAME")
    p.add_argument("--network-alias", action="append", default=[])
    p.add_argument("-p", "--publish", action="append", default=[], help="[ip:][hostPort:]containerPort[/proto]")
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--dns-search", action="append", default=[])
    p.add_argument("--dns-option", action="append", default=[])
    p.add_argument("--add-host", action="append", default=[])
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(handler=cmd_run if run else cmd_create)


def run_options(args):
    from capsa.engine import options

    return options.from_flags(args)


def pull_missing(args):
    def pull(name: str) -> None:
        from capsa.cli.images import cmd_pull

        sys.stderr.write(f"Unable to find image '{name}' locally\n")
        cmd_pull(argparse.Namespace(root=args.root, name=name, quiet=False, platform=None))

    return pull


def cmd_create(args) -> int:
    from capsa.cli.containers import open_engine

    with exit_codes():
        container = open_engine(args).create(run_options(args), pull_missing(args))
    print(container.id)
    return 0


def cmd_run(args) -> int:
    from capsa.cli.containers import open_engine

    engine = open_engine(args)
    with exit_codes():
        if args.rm and args.restart != "no":
            raise InvalidArgument("conflicting options: cannot both remove and restart containers")
        container = engine.create(run_options(args), pull_missing(args))
        try:
            container = engine.start(container, attach_first=not args.detach)
        except CapsaError:
            if args.rm:
                engine.remove(container, force=True)
            raise
    if args.detach:
        print(container.id)
        return 0
    try:
        return attach_and_wait(engine, container, stdin=args.interactive)
    finally:
        if args.rm:
            engine.remove(engine.containers.get(container.id), force=True, volumes=True)


@contextmanager
def exit_codes():
    """Map a failure to start to Docker's exit codes: 127 when the command
    is not found, 126 when it cannot be run, else 125."""
    try:
        yield
    except CapsaError as err:
        text = str(err)
        lower = text.lower()
        code = 127 if ("executable" in lower and "not found" in lower) or "no such file or directory" in lower \
            else 126 if "permission denied" in lower else 125
        sys.stderr.write(f"capsa: {text}\n")
        raise SystemExit(code) from None


# -- streams


def attach_and_wait(engine, container, stdin: bool) -> int:
    """Show the container's output until it exits (and feed it stdin);
    its exit code, or 0 when the user detaches."""
    if _attached(engine, container, tty=bool(container.config.get("tty")), stdin=stdin) == "detached":
        return 0
    return engine.wait(engine.containers.get(container.id))


def _attached(engine, container, tty: bool, stdin: bool) -> str:
    import signal

    from capsa.engine import shim

    path = engine.paths(container).socket
    conn, _ = shim.connect(path, {"op": "attach", "stdin": stdin}, wait=None)
    terminal = tty and os.isatty(0)
    saved = _raw_terminal() if terminal else None
    if terminal:
        _resize(path)
        signal.signal(signal.SIGWINCH, lambda *_: _resize(path))
    try:
        return _pump(conn, tty, stdin)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        conn.close()


def _pump(conn, tty: bool, stdin: bool) -> str:
    import select
    import socket
    readers = [conn] + ([sys.stdin.fileno()] if stdin else [])
    frames = b""
    previous = b""
    while True:
        ready, _, _ = select.select(readers, [], [])
        if conn in ready:
            data = conn.recv(65536)
            if not data:
                return "exited"
            if tty:
                os.write(1, data)
            else:
                frames = _write_frames(frames + data)
        if stdin and sys.stdin.fileno() in ready:
            data = os.read(0, 65536)
            if not data:
                conn.shutdown(socket.SHUT_WR)
                readers.remove(sys.stdin.fileno())
                continue
            if tty and DETACH_KEYS in previous[-1:] + data:
                return "detached"
            previous = data
            conn.sendall(data)


def _write_frames(buffer: bytes) -> bytes:
    """Write every complete Docker stream frame; return the rest."""
    import struct

    while len(buffer) >= 8:
        kind, length = buffer[0], struct.unpack(">I", buffer[4:8])[0]
        if len(buffer) < 8 + length:
            break
        os.write(2 if kind == 2 else 1, buffer[8:8 + length])
        buffer = buffer[8 + length:]
    return buffer


def _raw_terminal():
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    return saved


def _resize(path: str) -> None:
    from capsa.engine import shim

    size = os.get_terminal_size(0)
    try:
        shim.call(path, "resize", rows=size.lines, cols=size.columns)
    except CapsaError:
        pass


# -- exec


def add_exec_flags(p) -> None:
    p.description = "Run a command in a running container."
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(handler=cmd_exec)


def cmd_exec(args) -> int:
    import subprocess

    from capsa.cli.containers import open_engine

    if not args.command:
        raise InvalidArgument("exec needs a command to run")
    engine = open_engine(args)
    container = engine.containers.lookup(args.container)
    result = engine.exec(container, args.command, env=args.env, workdir=args.workdir, user=args.user,
                         tty=args.tty, detach=args.detach,
                         stdin=None if args.interactive or args.tty else subprocess.DEVNULL)  # fmt: skip
    sys.stderr.write(result.stderr)
    return result.returncode


def _attach_flags(p) -> None:
    p.description = "Attach to a running container's streams (Ctrl-P Ctrl-Q detaches from a terminal)."
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_attach)


def cmd_attach(args) -> int:
    from capsa.cli.containers import open_engine

    engine = open_engine(args)
    container = engine.refresh(engine.containers.lookup(args.container))
    if container.state != "running":
        raise CapsaError("You cannot attach to a stopped container, start it first")
    stdin = not args.no_stdin and bool(container.config.get("stdin"))
    if _attached(engine, container, bool(container.config.get("tty")), stdin) == "detached":
        return 0
    return engine.wait(engine.containers.get(container.id))


def register(commands) -> None:
    add_run_flags(commands.add_parser("run", add_help=False, help="run a command in a new container"), run=True)
    add_run_flags(commands.add_parser("create", add_help=False, help="create a container"), run=False)
    add_exec_flags(commands.add_parser("exec", help="run a command in a running container"))
    _attach_flags(commands.add_parser("attach", help="attach to a running container"))
