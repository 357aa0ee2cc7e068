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
    from capsa.engine import paths, shim

    if args.rm and args.restart != "no":
        raise InvalidArgument("conflicting options: cannot both remove and restart containers")
    # The shim's start-up overlaps the engine's imports and the bundle.
    container_id = paths.new_id()
    standby = shim.Standby(container_id, paths.state_dir(paths.default_state(), container_id))
    try:
        engine, container = _create_and_start(args, standby)
    finally:
        standby.cancel()
    if args.detach:
        print(container.id)
        return 0
    try:
        return attach_and_wait(engine, container, stdin=args.interactive)
    finally:
        if args.rm:
            engine.remove(engine.containers.get(container.id), force=True, volumes=True)


def _create_and_start(args, standby):
    from capsa.cli.containers import open_engine

    engine = open_engine(args)
    with exit_codes():
        container = engine.create(run_options(args), pull_missing(args), standby.id)
        try:
            container = engine.start(container, attach_first=not args.detach, standby=standby)
        except CapsaError:
            if args.rm:
                engine.remove(container, force=True)
            raise
    return engine, container


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
    # The shim hung up: the container exited for good (or the shim is gone).
    exited = engine.record_exit(container)
    return exited.exit_code if exited is not None else engine.wait(engine.containers.get(container.id))


def _attached(engine, container, tty: bool, stdin: bool) -> str | None:
    from capsa.engine import shim

    path = engine.paths(container).socket
    conn, _ = shim.connect(path, {"op": "attach", "stdin": stdin}, wait=None)
    return _streamed(conn, lambda rows, cols: shim.call(path, "resize", rows=rows, cols=cols),
                     tty, stdin, framed=not tty)  # fmt: skip


def _streamed(conn, resize, tty: bool, stdin: bool, framed: bool) -> str | int | None:
    """_pump with this terminal: with a tty, raw, and its size passed on
    through RESIZE(rows, cols) now and on every SIGWINCH."""
    import signal

    terminal = tty and os.isatty(0)
    saved = _raw_terminal() if terminal else None
    if terminal:
        _resize(resize)
        signal.signal(signal.SIGWINCH, lambda *_: _resize(resize))
    try:
        return _pump(conn, tty, stdin, framed)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        conn.close()


def _pump(conn, tty: bool, stdin: bool, framed: bool) -> str | int | None:
    """Copy CONN's stream to stdout (Docker's frames, to stdout and stderr,
    when FRAMED) and stdin to CONN until it ends: "detached" when the user
    typed the detach keys (a tty), else the exit code an exec's last frame
    carried (None without one)."""
    import select
    import socket

    from capsa.engine.shim import receive

    readers = [conn] + ([sys.stdin.fileno()] if stdin else [])
    frames = b""
    previous = b""
    exit_code = None
    while True:
        ready, _, _ = select.select(readers, [], [])
        if conn in ready:
            data = receive(conn)
            if not data:
                return exit_code
            if not framed:
                os.write(1, data)
            else:
                frames, code = _write_frames(frames + data)
                exit_code = code if code is not None else exit_code
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


def _write_frames(buffer: bytes) -> tuple[bytes, int | None]:
    """Write every complete Docker stream frame: (the rest, the exit code
    if an exec's last frame came)."""
    from capsa.engine import execs
    from capsa.shim import protocol

    frames, rest = protocol.read_frames(buffer)
    exit_code = None
    for stream, payload in frames:
        if stream == protocol.EXIT:
            exit_code = execs.exit_code_of(payload)
        else:
            os.write(2 if stream == protocol.STDERR else 1, payload)
    return rest, exit_code


def _raw_terminal():
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    return saved


def _resize(resize) -> None:
    size = os.get_terminal_size(0)
    try:
        resize(size.lines, size.columns)
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
    from capsa.cli.containers import open_engine
    from capsa.engine.execs import ExecFailed, ended_with

    if not args.command:
        raise InvalidArgument("exec needs a command to run")
    engine = open_engine(args)
    container = engine.containers.lookup(args.container)
    try:
        process = engine.exec(container, args.command, env=args.env, workdir=args.workdir, user=args.user,
                              tty=args.tty, stdin=args.interactive, detach=args.detach,
                              privileged=args.privileged)  # fmt: skip
    except ExecFailed as err:
        sys.stderr.write(f"capsa: {err}\n")
        return err.exit_code
    if args.detach:
        return 0
    ended = _streamed(process.conn, process.resize, args.tty, args.interactive, framed=True)
    return 0 if ended == "detached" else ended_with(ended)


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
