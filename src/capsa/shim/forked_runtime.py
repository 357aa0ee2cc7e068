"""The fast path for capsa's own runtime: fork and call its main, no exec.

Running `capsa-runtime create` as a program costs a new interpreter and the
runtime's imports (about 25 ms, three times per container: create, start,
delete). When the runtime is capsa-runtime's launcher (scripts/install-launchers)
on the very interpreter binary this shim runs on, with this shim's source tree
and flags, a fork of the shim that calls `capsa.runtime.cli.main(args)` runs
the same code on the same binary, with the interpreter already started and the
runtime's modules already imported (here, once, before the first fork).

What exec would have done is done by hand in the child, so the runtime sees
what a new process would: the stdio given, every close-on-exec descriptor
closed (the shim's socket, epoll, log, the start-up answer pipe: the
container's init must not hold them), the signal dispositions of a new
interpreter, and the shim's own objects never finalised (gc.freeze) so that
nothing of the shim closes a descriptor the runtime reuses.

The container's init is then a fork of the shim, so /proc/<init>/exe is the
shim's interpreter binary: the same file the launcher's `#!` line names and
an exec'd runtime would run on. The protection against CVE-2019-5736 (that
binary is a private copy marked immutable) is therefore unchanged; a shim on
any other interpreter (say `python -m capsa.shim.main` from a venv) does not
take this path. Any other runtime (runc, crun, a path) is always exec'd.
"""

import _signal
import gc
import os
import sys

import capsa

# scripts/install-launchers writes capsa-runtime's launcher from this text
# (a unit test keeps the two equal); anything else is run as a program.
LAUNCHER = """#!{python} -IS
import gc, sys
gc.set_threshold(50000, 20, 20)
sys.path.insert(0, {src!r})
from capsa.runtime.cli import main
sys.exit(main())
"""


def recognises(path: str) -> bool:
    """Whether PATH is capsa-runtime's launcher for this shim's own source
    tree on this shim's own interpreter binary, run as the shim runs (-IS)."""
    if not (sys.flags.isolated and sys.flags.no_site):
        return False
    try:
        with open(path, "rb") as f:
            text = f.read(4096).decode()
        interpreter = os.readlink("/proc/self/exe")
    except (OSError, UnicodeDecodeError):
        return False
    return is_launcher(text, interpreter, os.path.dirname(os.path.dirname(capsa.__file__)))


def is_launcher(text: str, interpreter: str, src: str) -> bool:
    """Whether TEXT is the launcher of capsa-runtime from SRC that runs on the
    binary INTERPRETER (its #! line may name it through a symlink)."""
    python = text[2:].partition(" ")[0] if text.startswith("#!") else ""
    return (text == LAUNCHER.format(python=python, src=src)
            and os.path.realpath(python) == os.path.realpath(interpreter))


def spawn(args: list[str], stdio: tuple[int, int, int]) -> int:
    """`capsa-runtime ARGS` with STDIO (descriptors above 2) as its 0, 1, 2,
    in a fork of this process; its pid (a child to wait for as any other)."""
    from capsa.runtime import cli  # imported once, in the shim: every fork has it

    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        gc.freeze()  # the shim's objects (and their descriptors) are never finalised here
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)  # inheritable: the init gets it, as through exec
        _close_on_exec()
        _signals_of_a_new_interpreter()
        code = cli.main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    except BaseException:  # noqa: BLE001 - as an uncaught exception in a program: shown, exit 1
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # the runtime closed it, or its reader is gone
                pass
        os._exit(code & 0xFF)


def _close_on_exec() -> None:
    """Close what execve would: every descriptor marked close-on-exec."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if not os.get_inheritable(fd):
                    os.close(fd)
            except OSError:
                pass  # the directory's own descriptor, closed by now


def _signals_of_a_new_interpreter() -> None:
    """No wakeup fd, and default dispositions where the shim set handlers
    (a new interpreter ignores SIGPIPE and SIGXFSZ, as this one still does)."""
    _signal.set_wakeup_fd(-1)
    for signum in range(1, _signal.NSIG):
        try:
            handler = _signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not _signal.default_int_handler:
            _signal.signal(signum, _signal.SIG_DFL)
