"""Files replaced whole: a crash leaves the old file or the new one.

On posix, not os: the shim writes its records with it, and an idle shim
loads no os (see capsa.shim).
"""

import posix


def write_atomic(path: str, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Write data to path so that a crash leaves the old file or the new one.
    sync=False guards against a crash of this process only, not of the machine."""
    tmp = f"{path}.tmp{posix.getpid()}"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, mode)
    try:
        posix.write(fd, data)
        if sync:
            posix.fsync(fd)
    finally:
        posix.close(fd)
    posix.replace(tmp, path)
