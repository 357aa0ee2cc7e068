"""root, mounts (every kind and option), propagation, devices, masked/readonly paths."""

import os
import subprocess

import pytest


def mountinfo_line(out: str, mount_point: str) -> list[str]:
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == mount_point:
            return fields
    raise AssertionError(f"{mount_point} not mounted in:\n{out}")


def test_readonly_root(run_container, bundle):
    code, _, err = run_container("touch /x", check=False)
    assert code != 0 and "Read-only file system" in err


def test_writable_root_when_not_readonly(run_container, bundle, tmp_path):
    rootfs = tmp_path / "rw-rootfs"
    subprocess.run(["cp", "-a", str(bundle.rootfs), str(rootfs)], check=True)
    bundle.config["root"] = {"path": str(rootfs), "readonly": False}
    bundle.write()
    run_container("echo written > /tmp/file")
    assert (rootfs / "tmp/file").read_text() == "written\n"


def test_relative_root_path(run_container, bundle):
    os.symlink(bundle.rootfs, bundle.path / "rootfs")
    bundle.config["root"]["path"] = "rootfs"
    bundle.write()
    _, out, _ = run_container("echo ok")
    assert out == "ok\n"


def test_default_mounts_and_options(run_container):
    _, out, _ = run_container("cat /proc/self/mountinfo")
    proc = mountinfo_line(out, "/proc")
    assert proc[-3] == "proc"
    sys_line = mountinfo_line(out, "/sys")
    assert "ro" in sys_line[5].split(",") and "nosuid" in sys_line[5].split(",")
    dev = mountinfo_line(out, "/dev")
    assert dev[-3] == "tmpfs" and "nosuid" in dev[5]
    assert mountinfo_line(out, "/dev/pts")[-3] == "devpts"
    assert mountinfo_line(out, "/dev/mqueue")[-3] == "mqueue"
    shm = mountinfo_line(out, "/dev/shm")
    assert {"nosuid", "nodev", "noexec"} <= set(shm[5].split(","))


def test_root_is_pivoted_not_chrooted(run_container):
    # After pivot_root the old root is gone: / is the only mount at "/".
    _, out, _ = run_container("cat /proc/self/mountinfo")
    roots = [line for line in out.splitlines() if line.split()[4] == "/"]
    assert len(roots) == 1


def test_no_pivot_uses_move_and_chroot(runtime, bundle):
    bundle.args("sh", "-c", "echo $$")
    result = runtime("run", "--no-pivot", "--bundle", str(bundle), "nopivot")
    assert result.stdout == b"1\n"


def test_bind_mount_readonly_and_rbind(run_container, bundle, tmp_path):
    src = tmp_path / "share"
    src.mkdir()
    (src / "hello").write_text("from host\n")
    bundle.config["mounts"].append({"destination": "/mnt/share", "type": "bind",
                                    "source": str(src), "options": ["rbind", "ro"]})  # fmt: skip
    bundle.write()
    code, out, err = run_container("cat /mnt/share/hello; touch /mnt/share/x", check=False)
    assert out == "from host\n"
    assert "Read-only file system" in err
    assert not (src / "x").exists()


def test_bind_mount_of_a_file_and_writes_reach_host(run_container, bundle, tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("")
    bundle.config["mounts"].append({"destination": "/out.txt", "type": "none",
                                    "source": str(target), "options": ["bind", "rw"]})  # fmt: skip
    bundle.write()
    run_container("echo result > /out.txt")
    assert target.read_text() == "result\n"


def test_tmpfs_with_options(run_container, bundle):
    bundle.config["mounts"].append({"destination": "/scratch", "type": "tmpfs",
                                    "source": "tmpfs",
                                    "options": ["nosuid", "nodev", "noexec", "size=1m",
                                                "mode=700"]})  # fmt: skip
    bundle.write()
    _, out, _ = run_container("stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo")
    mode, line = out.split("\n", 1)
    assert mode == "700"
    assert {"nosuid", "nodev", "noexec"} <= set(line.split()[5].split(","))
    assert "size=1024k" in line


def test_mount_destination_symlink_stays_inside_rootfs(run_container, bundle, tmp_path):
    rootfs = tmp_path / "evil-rootfs"
    subprocess.run(["cp", "-a", str(bundle.rootfs), str(rootfs)], check=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), rootfs / "escape")  # absolute: must resolve in the rootfs
    bundle.config["root"] = {"path": str(rootfs), "readonly": False}
    bundle.config["mounts"].append({"destination": "/escape/sub", "type": "tmpfs",
                                    "source": "tmpfs", "options": []})  # fmt: skip
    bundle.write()
    run_container("true")
    assert not (outside / "sub").exists()
    assert (rootfs / str(outside).lstrip("/") / "sub").is_dir()


def test_rootfs_propagation_private(run_container, bundle):
    bundle.linux["rootfsPropagation"] = "private"
    bundle.write()
    _, out, _ = run_container("cat /proc/self/mountinfo")
    root = mountinfo_line(out, "/")
    assert not any(f.startswith(("shared:", "master:")) for f in root[6:root.index("-")])


def test_mount_propagation_option_shared(run_container, bundle, tmp_path):
    src = tmp_path / "prop"
    src.mkdir()
    bundle.linux["rootfsPropagation"] = "rshared"
    bundle.config["mounts"].append({"destination": "/prop", "type": "bind",
                                    "source": str(src), "options": ["rbind", "rshared"]})  # fmt: skip
    bundle.write()
    _, out, _ = run_container("grep ' /prop ' /proc/self/mountinfo")
    assert "shared:" in out


def test_recursive_readonly_option(run_container, bundle, tmp_path):
    src = tmp_path / "rro"
    src.mkdir()
    bundle.config["mounts"].append({"destination": "/rro", "type": "bind",
                                    "source": str(src), "options": ["rbind", "rro"]})  # fmt: skip
    bundle.write()
    code, _, err = run_container("touch /rro/x", check=False)
    assert code != 0 and "Read-only" in err


def test_cgroup_mount_shows_the_containers_cgroups(run_container, bundle):
    _, out, _ = run_container("ls /sys/fs/cgroup; ls /sys/fs/cgroup/memory | grep -c limit_in_bytes")
    names = out.split()
    assert "memory" in names and "pids" in names
    code, _, err = run_container("mkdir /sys/fs/cgroup/memory/x", check=False)
    assert code != 0


def test_default_devices_and_symlinks(run_container):
    _, out, _ = run_container(
        "for d in null zero full random urandom tty; do stat -c '%n %t:%T %a' /dev/$d; done;"
        " for l in fd stdin ptmx; do readlink /dev/$l; done; echo x > /dev/null && echo null-ok")
    lines = out.splitlines()
    assert lines[0] == "/dev/null 1:3 666"
    assert lines[1] == "/dev/zero 1:5 666"
    assert lines[5] == "/dev/tty 5:0 666"
    assert lines[6:9] == ["/proc/self/fd", "/proc/self/fd/0", "pts/ptmx"]
    assert lines[9] == "null-ok"


def test_linux_devices_are_created_and_allowed(run_container, bundle):
    bundle.linux["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                "fileMode": 0o620, "uid": 0, "gid": 5}]  # fmt: skip
    bundle.write()
    _, out, _ = run_container("stat -c '%t:%T %a %g' /dev/mynull; echo x > /dev/mynull && echo ok")
    assert out.split("\n")[:2] == ["1:3 620 5", "ok"]


def test_device_cgroup_denies_unlisted_devices(run_container, bundle):
    # /dev/loop-control (10:237) exists nowhere in the container's rules.
    bundle.linux["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
    bundle.linux["resources"]["devices"].append(
        {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rwm"})
    bundle.write()
    code, _, err = run_container("head -c1 /dev/kmsg", check=False)
    assert code != 0 and "Operation not permitted" in err


def test_masked_and_readonly_paths(run_container, bundle):
    bundle.linux["maskedPaths"] = ["/proc/keys", "/proc/sys/fs", "/proc/does-not-exist"]
    bundle.linux["readonlyPaths"] = ["/proc/sys"]
    bundle.write()
    code, out, err = run_container(
        "wc -c < /proc/keys; ls /proc/sys/fs | wc -l; echo 1 > /proc/sys/kernel/ns_last_pid",
        check=False)  # fmt: skip
    assert out.split() == ["0", "0"]
    assert "Read-only file system" in err


@pytest.mark.parametrize("option", ["idmap"])
def test_unsupported_mount_option_is_refused(runtime, bundle, option):
    bundle.config["mounts"].append({"destination": "/x", "type": "bind", "source": "/tmp",
                                    "options": ["rbind", option]})  # fmt: skip
    bundle.write()
    result = runtime("run", "--bundle", str(bundle), "badopt", check=False)
    assert result.returncode != 0 and option.encode() in result.stderr


def test_tmpcopyup_copies_the_image_directory(run_container, bundle, tmp_path):
    rootfs = tmp_path / "copyup-rootfs"
    subprocess.run(["cp", "-a", str(bundle.rootfs), str(rootfs)], check=True)
    (rootfs / "data").mkdir(mode=0o710)
    os.chmod(rootfs / "data", 0o710)
    (rootfs / "data" / "kept").write_text("from the image\n")
    bundle.config["root"] = {"path": str(rootfs), "readonly": True}
    for destination in ("/data", "/fresh"):
        bundle.config["mounts"].append({"destination": destination, "type": "tmpfs",
                                        "source": "tmpfs", "options": ["tmpcopyup"]})  # fmt: skip
    bundle.write()
    _, out, _ = run_container("cat /data/kept; stat -c %a /data /fresh; echo new > /data/x")
    assert out.split("\n")[:3] == ["from the image", "710", "1777"]
    assert not (rootfs / "data" / "x").exists()  # writes go to the tmpfs


def test_missing_program_messages_are_runcs(runtime, bundle):
    # podman and dockerd map these words to exit codes 127 and 126.
    bundle.args("/does-not-exist")
    result = runtime("run", "--bundle", str(bundle), "m1", check=False)
    assert b'exec: "/does-not-exist": stat /does-not-exist: no such file or directory' \
        in result.stderr  # fmt: skip
    bundle.args("/etc/passwd")
    result = runtime("run", "--bundle", str(bundle), "m2", check=False)
    assert b'exec: "/etc/passwd": permission denied' in result.stderr
    bundle.args("not-a-program")
    result = runtime("run", "--bundle", str(bundle), "m3", check=False)
    assert b'exec: "not-a-program": executable file not found in $PATH' in result.stderr
