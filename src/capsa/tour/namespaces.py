"""Step 2, namespaces (2002-2013): a shell that is pid 1 with its own /proc,
hostname and network; then pivot_root, which closes step 1's escape."""

import os
import socket

from capsa.linux import mount as mounts
from capsa.linux import ns
from capsa.linux.proc import sethostname
from capsa.tour import rootfs
from capsa.tour.child import in_child, run_program
from capsa.tour.chroot import escape_from_chroot
from capsa.tour.scratch import Scratch

TITLE, YEAR = "namespaces", "2002-2013"
SUMMARY = "pid 1 with its own /proc, hostname and network; pivot_root closes the escape"
HOSTNAME = "tour-ns"
# What the shell in the new namespaces prints, one fact a line.
SCRIPT = ('echo "pid=$$"; echo "hostname=$(hostname)"; '
          'echo "links=$(ip -o link | cut -d: -f2 | tr -d " " | tr "\\n" " ")"; echo "ps:"; ps -o pid,user,comm; exit 0')  # fmt: skip
FLAGS = ns.CLONE_NEWPID | ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWNET | ns.CLONE_NEWIPC


def run(voice) -> dict:
    voice.explain("""
        A namespace gives a process its own copy of one global resource. Linux
        grew them one at a time: mount (2002, the first, after Plan 9), uts and
        ipc (2006), pid (2008), network (2009), user (2013), later cgroup and
        time. The `unshare --fork --pid --mount-proc` moment, with a new
        hostname and network too:""")
    with Scratch(2) as scratch:
        return _run(voice, scratch)


def _run(voice, scratch) -> dict:
    root = rootfs.build(scratch.path("rootfs"))
    shell = os.path.join(root, "bin", "sh")  # busybox, named sh (so ps calls it sh)
    scratch.announce(voice)
    host_pids = sum(name.isdigit() for name in os.listdir("/proc"))
    host_links = sorted(name for _, name in socket.if_nameindex())
    voice.run("unshare(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWNET|CLONE_NEWIPC); fork()")
    voice.run(f'mount("proc", "/proc"); sethostname("{HOSTNAME}"); exec sh -c \'echo $$; hostname; ip link; ps\'')
    facts = in_child(_shell_in_new_namespaces, shell)
    voice.show(facts["ps"])
    voice.result(f"the shell is pid {facts['pid']} and sees {facts['processes']} processes "
                 f"(the host has {host_pids}): its own /proc")
    voice.result(f"its hostname is {facts['hostname']!r} (the host's is still {socket.gethostname()!r})")
    voice.result(f"its network has only {', '.join(facts['links'])} "
                 f"(the host has {len(host_links)} interfaces)")
    voice.explain("""
        A container's root is not a chroot: in its own mount namespace the
        runtime bind-mounts the root filesystem, pivot_root(2)s into it and
        unmounts the old root. There is no host tree left to climb back to,
        so step 1's escape, tried the same way, goes nowhere:""")
    host_root = _identity("/")
    voice.run('unshare(CLONE_NEWNS); mount("<scratch>/rootfs", "<scratch>/rootfs", MS_BIND); chdir(it)')
    voice.run('pivot_root(".", ".oldroot"); umount2("/.oldroot", MNT_DETACH)')
    voice.run('mkdir("/x"); chroot("/x"); chdir("..") x 64; chroot(".")')
    escape = in_child(_pivot_and_escape, root)
    refused = tuple(escape["root"]) != host_root
    voice.show_words(escape["listing"])
    if refused:
        voice.result("refused: after the escape / is still the container's root, not the host's")
    else:
        voice.result("the escape reached the host's root (pivot_root did not hold)")
    return {"step": 2, "pid": facts["pid"], "processes": facts["processes"], "hostname": facts["hostname"],
            "host_hostname": socket.gethostname(), "links": facts["links"],
            "escape_refused": refused, "listing_after_escape": escape["listing"]}  # fmt: skip


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _shell_in_new_namespaces(shell: str) -> dict:
    # CLONE_NEWPID applies to children: the shell forked next is pid 1.
    ns.unshare(FLAGS)
    # Private first, so the /proc mounted below never propagates to the host.
    mounts.mount(None, "/", None, mounts.MS_REC | mounts.MS_PRIVATE)
    status, text = run_program([shell, "-c", SCRIPT], setup=_mount_proc_and_name)
    if status != 0:
        raise OSError(f"the shell exited {status}: {text.strip()}")
    facts, lines = {}, text.splitlines()
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key in ("pid", "hostname", "links"):
            facts[key] = value.strip()
    ps = lines[lines.index("ps:") + 1:]
    return {"pid": int(facts["pid"]), "hostname": facts["hostname"], "links": facts["links"].split(),
            "ps": ps, "processes": len(ps) - 1}  # fmt: skip


def _mount_proc_and_name() -> None:
    mounts.mount("proc", "/proc", "proc", mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC)
    sethostname(HOSTNAME)


def _pivot_and_escape(root: str) -> dict:
    ns.unshare(ns.CLONE_NEWNS)
    mounts.mount(None, "/", None, mounts.MS_REC | mounts.MS_PRIVATE)
    # pivot_root wants the new root to be a mount point: bind it onto itself.
    mounts.mount(root, root, None, mounts.MS_BIND | mounts.MS_REC)
    os.chdir(root)
    os.makedirs(".oldroot", exist_ok=True)
    mounts.pivot_root(".", ".oldroot")
    os.chdir("/")
    mounts.umount("/.oldroot", mounts.MNT_DETACH)
    os.rmdir("/.oldroot")
    escape_from_chroot()
    return {"root": list(_identity("/")), "listing": sorted(os.listdir("/"))}
