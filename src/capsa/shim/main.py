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
"""

import os
import sys

from capsa import fastjson
from capsa.errors import CapsaError
from capsa.shim import records
from capsa.shim.options import parse_args


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # Run as the program: the engine waits for this exit, so skip the
        # interpreter's teardown once the answer is out.
        code = main(sys.argv[1:])
        sys.stdout.flush()
        os._exit(code)
    try:
        opts = parse_args(argv)
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


def prepare_directories(opts) -> None:
    os.makedirs(opts.state_dir, 0o700, exist_ok=True)
    os.makedirs(os.path.dirname(opts.log_path), 0o700, exist_ok=True)


def launch(opts) -> int:
    """Fork the shim into its own session; print its answer."""
    answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        try:
            os.close(answer_r)
            os.setsid()
            if os.fork() == 0:
                serve(opts, answer_w)  # never returns
        finally:
            os._exit(0)
    os.close(answer_w)
    os.waitpid(child, 0)
    data = b""
    while chunk := os.read(answer_r, 4096):
        data += chunk
    os.close(answer_r)
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
        os.chdir("/")
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
        _answer(answer_fd, {"pid": pid, "shim_pid": os.getpid()})
        shim.run()
        shim.close()
        diag.write("info", "shut down")
        code = 0
    except BaseException:
        import traceback

        diag.error("internal error: " + traceback.format_exc())
        _answer(answer_fd, {"error": "internal error in the shim (see shim.log)"})
    finally:
        os._exit(code)


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _answer(fd: int, answer: dict) -> None:
    """The one line for the engine; later calls (after the first) do nothing."""
    try:
        os.write(fd, fastjson.dumps(answer).encode() + b"\n")
        os.close(fd)
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
