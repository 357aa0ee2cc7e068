"""A busybox root filesystem for the tour's jails and containers (and for
scripts/busybox-bundle, the tests' and benchmarks' image): Debian's static
busybox copied in, a symlink per applet, a minimal /etc.

And the tour's prerequisites, each named by the Debian package that
provides it.
"""

import os
import shutil
import struct
import subprocess

from capsa.errors import FailedPrecondition

BUSYBOX = "/bin/busybox"
_PT_INTERP = 3


class MissingPackage(FailedPrecondition):
    """A program the tour needs is not installed; the message names the package."""

    def __init__(self, what: str, package: str):
        super().__init__(f"{what} is missing: apt-get install {package}")
        self.package = package


def require_busybox() -> str:
    """The path of a statically linked busybox (one that runs in an empty root)."""
    if not os.path.exists(BUSYBOX) or not is_static(BUSYBOX):
        raise MissingPackage("a static busybox (/bin/busybox)", "busybox-static")
    return BUSYBOX


def require_program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingPackage(name, package)
    return path


def is_static(path: str) -> bool:
    """Whether the ELF file at PATH has no program interpreter (ld.so)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        order = "<" if header[5] == 1 else ">"
        phoff, = struct.unpack_from(order + "Q", header, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != _PT_INTERP
               for i in range(phnum))  # fmt: skip


def build(rootfs: str) -> str:
    """Make ROOTFS a busybox root filesystem; return it."""
    busybox = require_busybox()
    bindir = os.path.join(rootfs, "bin")
    for name in ("bin", "proc", "sys", "dev", "etc", "tmp", "root", "var", "usr/bin", "usr/sbin"):
        os.makedirs(os.path.join(rootfs, name), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(bindir, "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = os.path.join(bindir, applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc/group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    return rootfs
