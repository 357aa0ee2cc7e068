"""capsa-shim's entry point: check the flags, fork the shim away, report one line.

The process the engine starts only relays: it forks, the child calls
setsid() and forks the shim, and the engine's process waits on a pipe for
the shim's answer, prints it as one JSON line and exits:

    {"pid": <container init pid>, "shim_pid": <pid>}      exit 0
    {"error": "<one line>"}                                exit 1

The shim is then in a session of its own, not the engine's child, with
/dev/null as stdio (its diagnostics go to <state-dir>/shim.log), so neither
the engine's exit nor a signal to its process group reaches it or the
container. It is the child subreaper of the container's processes.

`capsa-shim --standby --id ID --state-dir DIR` forks the shim at once, and
the shim loads its code and forks the runtime's zygote (forked_runtime)
before it reads all its flags (the same --id and --state-dir among them) as
one JSON array on stdin; end of input without them: exit 0, nothing done.
The engine starts the shim that way before the container's bundle is
ready, so that all of this runs on another core meanwhile instead of after
it; the command line still says whose shim it is.
"""

import posix
import sys

from capsa import fastjson
from capsa.errors import CapsaError, InvalidArgument
from capsa.shim import records
from capsa.shim.options import check_id, parse_args

# The shim's answer to a standby that got no flags: nothing was done.
NOTHING = {}


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # Run as the program: the engine waits for this exit, so skip the
        # interpreter's teardown once the answer is out.
        code = main(sys.argv[1:])
        sys.stdout.flush()
        posix._exit(code)
    try:
        if argv[:1] == ["--standby"]:
            return launch(None, standby_names(argv[1:]))
        opts = parse_args(argv)
        if opts is None:
            from capsa.shim import options

            print(options.__doc__.split("\n\n")[1].strip("\n"))
            return 0
        prepare_directories(opts)
    except CapsaError as err:
        return _print_answer({"error": str(err)})
    return launch(opts, ["--id", opts.id, "--state-dir", opts.state_dir])


def standby_names(argv: list[str]) -> list[str]:
    """--standby's own flags: exactly --id ID --state-dir DIR."""
    if len(argv) != 4 or argv[0::2] != ["--id", "--state-dir"]:
        raise InvalidArgument("--standby takes --id ID --state-dir DIR; the other flags come on stdin")
    check_id(argv[1])
    if not argv[3].startswith("/"):
        raise InvalidArgument(f"--state-dir must be an absolute path: {argv[3]!r}")
    return argv


def standby_options(flags_fd: int, names: list[str]):
    """The options from the flags on flags_fd (closed here), for the
    container NAMES names; None if none came (the engine gave up)."""
    data = b""
    while chunk := posix.read(flags_fd, 65536):
        data += chunk
    posix.close(flags_fd)
    if not data.strip():
        return None
    try:
        argv = fastjson.loads(data)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        raise InvalidArgument("--standby wants the flags as one JSON array of strings on stdin")
    opts = parse_args(argv)
    if opts is None or names != ["--id", opts.id, "--state-dir", opts.state_dir]:
        raise InvalidArgument("--standby: the flags on stdin are not for the container named by its "
                              "--id and --state-dir")  # fmt: skip
    return opts


def prepare_directories(opts) -> None:
    try:
        make_dirs(opts.state_dir, 0o700)
        make_dirs(opts.log_path.rpartition("/")[0], 0o700)
    except OSError as err:
        raise CapsaError(f"failed to prepare {err.filename}: {err.strerror}") from None


def make_dirs(path: str, mode: int) -> None:
    """mkdir -p: path and the parents it lacks."""
    parent = path.rpartition("/")[0]
    if parent and not posix.access(parent, posix.F_OK):
        make_dirs(parent, mode)
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        pass


def launch(opts, names: list[str]) -> int:
    """Fork the shim into its own session; print its answer. OPTS None: a
    standby shim, for the container NAMES names."""
    answer_r, answer_w = posix.pipe2(posix.O_CLOEXEC)
    child = posix.fork()
    if child == 0:
        try:
            posix.close(answer_r)
            posix.setsid()
            if posix.fork() == 0:
                serve(opts, names, answer_w)  # never returns
        finally:
            posix._exit(0)
    posix.close(answer_w)
    posix.waitpid(child, 0)
    data = b""
    while chunk := posix.read(answer_r, 4096):
        data += chunk
    posix.close(answer_r)
    try:
        answer = fastjson.loads(data)
    except ValueError:
        answer = {"error": f"the shim exited during start-up (see {names[3]}/{records.LOG})"}
    return 0 if answer == NOTHING else _print_answer(answer)


def _print_answer(answer: dict) -> int:
    sys.stdout.write(fastjson.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0 if "pid" in answer else 1


def serve(opts, names: list[str], answer_fd: int) -> None:
    """The shim itself: (a standby's flags first,) start the container,
    answer, supervise until shutdown."""
    from capsa.linux import proc
    from capsa.runtime.log import Log
    from capsa.shim import forked_runtime

    code = 1
    diag = Log(f"{names[3]}/{records.LOG}", "text")
    try:
        flags_fd = posix.dup(0) if opts is None else -1
        _detach_stdio()
        posix.chdir("/")
        proc.set_child_subreaper()
        zygote = forked_runtime.Zygote() if forked_runtime.runs_as_launcher() else None
        from capsa.shim.service import Shim

        shim = None
        try:
            if opts is None:
                opts = standby_options(flags_fd, names)
                if opts is None:
                    _answer(answer_fd, NOTHING)
                    code = 0
                    return
                prepare_directories(opts)
            shim = Shim(opts, diag, zygote)
            pid = shim.start()
        except (CapsaError, OSError) as err:
            message = _one_line(err)
            if shim is not None:  # first: nothing of it is left once the engine hears
                shim.close()
                shim.reap()
            _note(diag, message)
            _answer(answer_fd, {"error": message})
            return
        diag.write("info", f"started container {opts.id}: init pid {pid}")
        _answer(answer_fd, {"pid": pid, "shim_pid": posix.getpid()})
        shim.run()
        shim.close()
        diag.write("info", "shut down")
        code = 0
    except BaseException:
        import traceback

        _note(diag, "internal error: " + traceback.format_exc())
        _answer(answer_fd, {"error": "internal error in the shim (see shim.log)"})
    finally:
        posix._exit(code)


def _note(diag, message: str) -> None:
    """An error to shim.log, if its directory is there (a standby's bad
    flags are refused before it is made)."""
    try:
        diag.write("error", message)
    except OSError:
        pass


def _detach_stdio() -> None:
    null = posix.open("/dev/null", posix.O_RDWR)
    for fd in (0, 1, 2):
        posix.dup2(null, fd)
    if null > 2:
        posix.close(null)


def _answer(fd: int, answer: dict) -> None:
    """The one line for the engine; later calls (after the first) do nothing."""
    try:
        posix.write(fd, fastjson.dumps(answer).encode() + b"\n")
        posix.close(fd)
    except OSError:
        pass


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
