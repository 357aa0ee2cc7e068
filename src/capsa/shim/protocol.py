"""The shim's socket protocol: one JSON request line per connection, JSON replies.

`<state-dir>/shim.sock` (unix stream, mode 0600). A client connects, writes
one request line and reads reply lines; errors are `{"error": "<one line>"}`.

 request                                   reply
 {"op":"status"}                           {"status":"running"|"restarting"|"exited",
                                            "pid","exit_code","oom_killed","started_at",
                                            "finished_at","restart_count","error",
                                            "health":{"status","failing_streak","log"}|null}
 {"op":"wait"}                             {"exit_code":N} once the container has exited
                                           for good (no restart follows)
 {"op":"kill","signal":N|"NAME"            {"ok":true}; signal defaults to SIGKILL.
  [,"disable_restart":bool]}               Docker's rule unless disable_restart is given:
                                           SIGKILL or the stop signal (any signal when no
                                           --stop-signal was set) ends the restart policy
 {"op":"stop","timeout":T                  the stop signal, T seconds (default 10), then
  [,"signal":N|"NAME"]}                    SIGKILL; no restart follows; replies
                                           {"ok":true,"exit_code":N} once exited
 {"op":"attach","stdin":bool}              {"ok":true,"status":...}, then the connection is
                                           a byte stream: output to the client (tty: raw;
                                           otherwise frames, see `frame`), the client's
                                           bytes to the container's stdin. Closed by the
                                           shim when the container exits for good
 {"op":"resize","rows":R,"cols":C          {"ok":true} (a tty only); with exec, the
  [,"exec":PID]}                           terminal of that exec's process
 {"op":"exec","process":{...},             runs the OCI process object (config.json's
  "stdin":bool,"detach":bool}              "process"; "terminal": a tty) in the running
                                           container, the shim its parent and reaper;
                                           {"ok":true,"pid":PID} once it runs (its host
                                           pid: resize's "exec"), an error reply if the
                                           runtime cannot run it. Detached, the shim
                                           hangs up then; the stdio is /dev/null (a tty's
                                           output is thrown away). Else the connection is
                                           its stream: output as frames (a tty's on
                                           stream 1), the client's bytes to its stdin
                                           (when "stdin"; end of file closes a pipe),
                                           then at its exit a last frame on stream EXIT,
                                           payload {"exit_code":N}, and the shim hangs
                                           up. A client that leaves does not end it
 {"op":"shutdown"}                         {"ok":true}, after exit only: the shim runs
                                           `<runtime> delete`, removes its socket, exits
"""

import _struct

from capsa import fastjson
from capsa.errors import InvalidArgument
from capsa.shim.options import parse_signal

MAX_REQUEST = 64 * 1024
OPS = ("status", "wait", "kill", "stop", "attach", "resize", "exec", "shutdown")
STDOUT, STDERR = 1, 2
EXIT = 4  # an exec's last frame; Docker's own streams are 0-3 (3: its errors)
_HEADER = _struct.Struct(">BxxxI")


class Request:
    """One parsed request: its op and the fields that op takes, checked."""

    def __init__(self, op: str, **fields):
        self.op = op
        self.signal: int | None = fields.get("signal")
        self.disable_restart: bool | None = fields.get("disable_restart")
        self.timeout: float = fields.get("timeout", 10.0)
        self.stdin: bool = fields.get("stdin", False)
        self.rows: int = fields.get("rows", 0)
        self.cols: int = fields.get("cols", 0)
        self.exec_pid: int | None = fields.get("exec_pid")
        self.process: dict = fields.get("process", {})
        self.detach: bool = fields.get("detach", False)

    def __repr__(self) -> str:
        return f"Request({self.op!r})"


def parse_request(line: bytes) -> Request:
    """A request line as a Request; InvalidArgument says what is wrong with it."""
    try:
        data = fastjson.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"invalid request: not JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid request: not a JSON object")
    op = data.get("op")
    if op not in OPS:
        raise InvalidArgument(f"invalid request: unknown op {op!r}")
    fields = {}
    if op in ("kill", "stop") and data.get("signal") is not None:
        fields["signal"] = _signal_field(data["signal"])
    if op == "kill":
        if "disable_restart" in data:
            fields["disable_restart"] = _bool_field(data, "disable_restart")
    elif op == "stop" and data.get("timeout") is not None:
        timeout = data["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidArgument(f"invalid request: bad timeout {timeout!r}")
        fields["timeout"] = float(timeout)
    elif op == "attach":
        fields["stdin"] = _bool_field(data, "stdin")
    elif op == "resize":
        fields["rows"] = _size_field(data, "rows")
        fields["cols"] = _size_field(data, "cols")
        if data.get("exec") is not None:
            fields["exec_pid"] = _pid_field(data["exec"])
    elif op == "exec":
        fields["process"] = _process_field(data.get("process"))
        fields["stdin"] = _bool_field(data, "stdin")
        fields["detach"] = _bool_field(data, "detach")
    return Request(op, **fields)


def _signal_field(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgument(f"invalid request: bad signal {value!r}")
    return parse_signal(str(value))


def _bool_field(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid request: {name} must be true or false")
    return value


def _size_field(data: dict, name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 0xFFFF:
        raise InvalidArgument(f"invalid request: bad {name} {value!r}")
    return value


def _pid_field(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(f"invalid request: bad exec {value!r}")
    return value


def _process_field(process) -> dict:
    """An OCI process object, checked as far as the shim relies on it; the
    runtime checks the rest."""
    if not isinstance(process, dict):
        raise InvalidArgument("invalid request: process must be a JSON object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(arg, str) for arg in args):
        raise InvalidArgument("invalid request: process.args must be a non-empty list of strings")
    if not isinstance(process.get("terminal", False), bool):
        raise InvalidArgument("invalid request: process.terminal must be true or false")
    return process


def reply(**fields) -> bytes:
    """A reply line."""
    return fastjson.dumps(fields).encode() + b"\n"


def error_reply(message: str) -> bytes:
    return reply(error=message.splitlines()[0] if message else "error")


def frame(stream: int, payload: bytes) -> bytes:
    """Docker's multiplexed-stream frame: [stream, 0, 0, 0, uint32 BE length] + payload
    (stream 1 is stdout, 2 stderr), as /containers/{id}/attach sends without a tty."""
    return _HEADER.pack(stream, len(payload)) + payload


def read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(complete frames as (stream, payload), the rest): the client's side of `frame`."""
    frames = []
    while len(data) >= _HEADER.size:
        stream, length = _HEADER.unpack_from(data)
        if len(data) < _HEADER.size + length:
            break
        frames.append((stream, data[_HEADER.size : _HEADER.size + length]))
        data = data[_HEADER.size + length :]
    return frames, data
