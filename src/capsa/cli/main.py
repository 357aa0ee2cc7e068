"""`capsa`: parse Docker-style command lines and run the command.

Each command module registers its subcommands on the parser; a handler gets
the parsed arguments and returns an exit status. Expected failures print
one line, `capsa: <what failed>: <why>`, and exit 1 (a traceback only with
--debug); bad flags are one line too.
"""

import argparse
import os
import sys

from capsa.errors import CapsaError, InvalidArgument, NotFound

VERSION = "0.1.0"


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised as one-line InvalidArgument."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]  # "capsa run" -> "run"
        raise InvalidArgument(f"{command}: {message}" if command else message)


class _Skipped:
    """Stands in for the parser of a command not being run: building all of
    argparse's subparsers costs more than a container's start."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self

    def __setattr__(self, name, value):
        pass


class _OnlyCommand:
    """The subparsers action, registering just COMMAND."""

    def __init__(self, commands, command: str):
        self.commands, self.command = commands, command

    def add_parser(self, name: str, **kwargs):
        if name == self.command:
            return self.commands.add_parser(name, **kwargs)
        return _Skipped()


def known_command(command: str | None) -> bool:
    from capsa.cli import COMMANDS

    return command in COMMANDS


def build_parser(command: str | None = None) -> Parser:
    """The whole command line, or (COMMAND given) just what that command
    needs to parse its arguments."""
    import importlib

    from capsa.cli import MODULES

    parser = Parser(prog="capsa", description="A daemonless container engine.")
    parser.add_argument("--root", default=None,
                        help="where images and containers are stored (CAPSA_ROOT, default /var/lib/capsa)")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"capsa version {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    modules = list(MODULES)
    if command is not None:
        commands = _OnlyCommand(commands, command)
        modules = [name for name, names in MODULES.items() if command in names]
    for name in modules:
        importlib.import_module(f"capsa.cli.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ARGV; without ARGV, run sys.argv as the program
    and end the process here (see end_process)."""
    if argv is None:
        try:
            code = main(sys.argv[1:])
        except SystemExit as stop:  # argparse's --help and errors, Docker's exit codes
            code = stop.code
        end_process(code)
    debug = "--debug" in argv
    try:
        command = command_of(argv)
        only = known_command(command) and "--help" not in argv and "-h" not in argv
        parser = build_parser(command if only else None)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0 if not argv else 1
        return args.handler(args) or 0
    except CapsaError as err:
        if debug:
            raise
        return fail(str(err), 125 if command_of(argv) in ("run", "create") else 1)
    except BrokenPipeError:
        # stdout went away (`capsa images | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if debug:
            raise
        return fail(f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""))
    except KeyboardInterrupt:
        return 130


def end_process(code) -> None:
    """Exit now, without the interpreter's teardown: freeing every module and
    object costs 30-40 ms here (as much as a container's create), and closing
    the last SQLite connection checkpoints the WAL, which SQLite also does by
    itself when it is due. Everything capsa writes is committed or closed by
    now, but for stdout and stderr, flushed here. CODE as sys.exit takes it."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader gone: nothing more to say
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def print_inspected(names: list[str], describe, what: str) -> int:
    """Docker's inspect: a JSON array of DESCRIBE(name) for the names found;
    then the first one not found (NotFound from DESCRIBE) fails, naming WHAT."""
    import json

    found, missing = [], []
    for name in names:
        try:
            found.append(describe(name))
        except NotFound:
            missing.append(name)
    print(json.dumps(found, indent=4))
    if missing:
        raise NotFound(f"no such {what}: {missing[0]}")
    return 0


def confirm(warning: str) -> bool:
    """Docker's prune prompt: WARNING, then whether the user said yes."""
    sys.stdout.write(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"capsa: {message}\n")
    return code


def command_of(argv: list[str]) -> str | None:
    """The command word, after the global flags (--root takes a value)."""
    args = iter(argv)
    for arg in args:
        if arg == "--root":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


if __name__ == "__main__":
    sys.exit(main())
