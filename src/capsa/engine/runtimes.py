"""Which OCI runtime runs a container: `--runtime capsa|runc|crun|/path`,
or a name from /etc/capsa/capsa.toml (`[runtimes] name = "/path"`,
CAPSA_TOML overrides the file). The engine runs it as a program, so any
runc-compatible runtime works."""

import os
import shutil

from capsa.errors import InvalidArgument, NotFound

DEFAULT = "capsa"
CONFIG = "/etc/capsa/capsa.toml"
BUILTIN = {"capsa": "capsa-runtime", "runc": "runc", "crun": "crun"}


def configured() -> dict[str, str]:
    path = os.environ.get("CAPSA_TOML") or CONFIG
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    import tomllib  # 10 ms to import: only when there is a file to read

    try:
        table = tomllib.loads(data.decode()).get("runtimes", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"failed to read {path}: {err}") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise InvalidArgument(f"failed to read {path}: [runtimes] must map names to paths")
    return table


def resolve(name: str | None) -> str:
    """The absolute path of runtime NAME (default capsa-runtime)."""
    name = name or DEFAULT
    if os.path.isabs(name):
        program = name
    else:
        program = configured().get(name) or BUILTIN.get(name)
        if program is None:
            raise InvalidArgument(f"unknown runtime {name!r}: use capsa, runc, crun, a path, "
                                  f"or name it in {CONFIG}")  # fmt: skip
    found = shutil.which(program)
    if found is None:
        raise NotFound(f"runtime {name!r} not found: {program} is not an executable")
    return os.path.abspath(found)
