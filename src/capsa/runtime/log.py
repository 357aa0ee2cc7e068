"""--log and --log-format, as runc writes them (containerd reads the last error).

Text lines look like `time="…" level=error msg="…"`; JSON lines like
`{"level":"error","msg":"…","time":"…"}`. Without --log, errors go to stderr
as one line, `capsa-runtime: <what failed>: <why>`.
"""

import posix  # not os: the shim imports this module too (see capsa.shim)
import sys
import time

from capsa import fastjson

LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class Log:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False):
        self.path = path
        self.format = fmt
        self.min_level = LEVELS["debug" if debug else "info"]

    def write(self, level: str, msg: str) -> None:
        if LEVELS[level] < self.min_level:
            return
        if self.path is None:
            if level != "info":
                sys.stderr.write(f"capsa-runtime: {_label(level)}{msg}\n")
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        if self.format == "json":
            line = fastjson.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f"time={fastjson.dumps(now)} level={level} msg={fastjson.dumps(msg)}"
        fd = posix.open(self.path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
        try:
            posix.write(fd, (line + "\n").encode())
        finally:
            posix.close(fd)

    def error(self, msg: str) -> None:
        self.write("error", msg)
        if self.path is not None:
            sys.stderr.write(f"capsa-runtime: {msg}\n")

    def warn(self, msg: str) -> None:
        self.write("warning", msg)

    def debug(self, msg: str) -> None:
        self.write("debug", msg)


def _label(level: str) -> str:
    return "" if level == "error" else f"{level}: "
