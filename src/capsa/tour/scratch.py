"""Where a tour step works: a scratch directory under /var/tmp that is
removed, with anything mounted below it, when the step ends (also when it
fails).

    with Scratch(3) as scratch:
        jail = scratch.path("jail")
"""

import os
import shutil
import subprocess
import tempfile

from capsa.linux import mount as mounts

BASE = "/var/tmp"


class Scratch:
    def __init__(self, step: int):
        self.step = step
        self.directory = ""

    def __enter__(self) -> "Scratch":
        self.directory = tempfile.mkdtemp(prefix=f"capsa-tour-{self.step}-", dir=BASE)
        return self

    def __exit__(self, *exc) -> None:
        remove_tree(self.directory)

    def announce(self, voice) -> None:
        voice.note(f"<scratch> is {self.directory} (removed when the step ends)")

    def path(self, *names: str) -> str:
        return os.path.join(self.directory, *names)


def mounts_under(directory: str) -> list[str]:
    """Mount points at or below DIRECTORY, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    prefix = directory.rstrip("/") + "/"
    return sorted((p for p in points if p == directory or p.startswith(prefix)), key=len, reverse=True)


def remove_tree(directory: str) -> None:
    """Unmount what is mounted below DIRECTORY, then delete it."""
    if not directory or not os.path.isdir(directory):
        return
    for point in mounts_under(directory):
        try:
            mounts.umount(point, mounts.MNT_DETACH)
        except OSError:
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)
