"""`ps --format table`: the host's ps(1) output cut down to a container's processes.

As runc does: run `ps` (default `-ef`, or the caller's arguments), keep the
header line, find the PID column in it, and keep the lines whose PID is one
of the container's host pids. The lines are passed through byte for byte.
"""

from capsa.errors import CapsaError, InvalidArgument, NotFound


def run_ps(args: list[str]) -> bytes:
    """ps's combined output; CapsaError naming what failed when ps does."""
    import subprocess

    argv = ["ps", *(args or ["-ef"])]
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, check=False)  # fmt: skip
    except FileNotFoundError:
        raise NotFound("failed to run ps: no ps program in PATH") from None
    if result.returncode != 0:
        detail = result.stdout.decode(errors="replace").strip().splitlines()
        raise CapsaError(f"failed to run {' '.join(argv)}: exit status {result.returncode}"
                         + (f": {detail[0]}" if detail else ""))
    return result.stdout


def filter_table(output: bytes, pids: list[int]) -> bytes:
    """The header and the lines of output whose PID column is in pids."""
    lines = output.split(b"\n")
    titles = lines[0].split()
    if b"PID" not in titles:
        raise InvalidArgument("failed to filter ps output: couldn't find PID field in ps output")
    column = titles.index(b"PID")
    wanted = set(pids)
    kept = [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        try:
            pid = int(fields[column])
        except (IndexError, ValueError):
            raise CapsaError(f"failed to filter ps output: unable to parse pid in "
                             f"{line.decode(errors='replace').strip()!r}") from None
        if pid in wanted:
            kept.append(line)
    return b"\n".join(kept) + b"\n"
