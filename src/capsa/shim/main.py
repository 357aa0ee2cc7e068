"""capsa-shim's entry point: check the flags, fork the shim away, report one line.

`capsa-shim --standby --id ID --state-dir DIR` first loads the shim's
code, then reads all its flags (the same --id and --state-dir among them)
as one JSON array on stdin; end of input without them: exit 0, nothing
done. The engine starts the shim that way before the container's bundle is
ready, so the interpreter's start-up runs on another core meanwhile instead
of after it; the command line still says whose shim it is.

The process the engine starts only relays: it forks, the child calls
setsid() and forks the shim, and the engine's process waits on a pipe for
the shim's answer, prints it as one JSON line and exits:

    {"pid": <container init pid>, "shim_pid": <pid>}      exit 0
    {"error": "<one line>"}                                exit 1

The shim is then in a session of its own, not the engine's child, with
/dev/null as stdio (its diagnostics go to <state-dir>/shim.log), so neither
the engine's exit nor a signal to its process group reaches it or the
container. It is the child subreaper of the container's processes.
"""

import posix
import sys

from capsa import fastjson
from capsa.errors import CapsaError, InvalidArgument
from capsa.shim import records
from capsa.shim.options import parse_args


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # Run as the program: the engine waits for this exit, so skip the
        # interpreter's teardown once the answer is out.
        code = main(sys.argv[1:])
        sys.stdout.flush()
        posix._exit(code)
    try:
        standby = argv[:1] == ["--standby"]
        if standby:
            named, argv = argv[1:], standby_flags()
            if argv is None:
                return 0
        opts = parse_args(argv)
        if standby and opts is not None and named != ["--id", opts.id, "--state-dir", opts.state_dir]:
            raise InvalidArgument("--standby: the flags on stdin are not for the container named by its "
                                  "--id and --state-dir")  # fmt: skip
        if opts is None:
            from capsa.shim import options

            print(options.__doc__.split("\n\n")[1].strip("\n"))
            return 0
        prepare_directories(opts)
    except CapsaError as err:
        return _print_answer({"error": str(err)})
    except OSError as err:
        return _print_answer({"error": f"failed to prepare {err.filename}: {err.strerror}"})
    return launch(opts)


def standby_flags() -> list[str] | None:
    """The flags from stdin, once the modules serve() needs are loaded."""
    from capsa.shim import service  # noqa: F401 - loaded while the engine still works

    data = b""
    while chunk := posix.read(0, 65536):
        data += chunk
    if not data.strip():
        return None  # the engine gave up on the container
    try:
        argv = fastjson.loads(data)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        raise InvalidArgument("--standby wants the flags as one JSON array of strings on stdin")
    return argv


def prepare_directories(opts) -> None:
    make_dirs(opts.state_dir, 0o700)
    make_dirs(opts.log_path.rpartition("/")[0], 0o700)


def make_dirs(path: str, mode: int) -> None:
    """mkdir -p: path and the parents it lacks."""
    parent = path.rpartition("/")[0]
    if parent and not posix.access(parent, posix.F_OK):
        make_dirs(parent, mode)
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        pass


def launch(opts) -> int:
    """Fork the shim into its own session; print its answer."""
    answer_r, answer_w = posix.pipe2(posix.O_CLOEXEC)
    child = posix.fork()
    if child == 0:
        try:
            posix.close(answer_r)
            posix.setsid()
            if posix.fork() == 0:
                serve(opts, answer_w)  # never returns
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
        answer = {"error": f"the shim exited during start-up (see {opts.path(records.LOG)})"}
    return _print_answer(answer)


def _print_answer(answer: dict) -> int:
    sys.stdout.write(fastjson.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0 if "pid" in answer else 1


def serve(opts, answer_fd: int) -> None:
    """The shim itself: start the container, answer, supervise until shutdown."""
    from capsa.linux import proc
    from capsa.runtime.log import Log
    from capsa.shim.service import Shim

    code = 1
    diag = Log(opts.path(records.LOG), "text")
    try:
        _detach_stdio()
        posix.chdir("/")
        proc.set_child_subreaper()
        shim = None
        try:
            shim = Shim(opts, diag)
            pid = shim.start()
        except (CapsaError, OSError) as err:
            message = _one_line(err)
            diag.error(message)
            _answer(answer_fd, {"error": message})
            if shim is not None:
                shim.close()
                shim.reap()
            return
        diag.write("info", f"started container {opts.id}: init pid {pid}")
        _answer(answer_fd, {"pid": pid, "shim_pid": posix.getpid()})
        shim.run()
        shim.close()
        diag.write("info", "shut down")
        code = 0
    except BaseException:
        import traceback

        diag.error("internal error: " + traceback.format_exc())
        _answer(answer_fd, {"error": "internal error in the shim (see shim.log)"})
    finally:
        posix._exit(code)


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
