"""Which Linux security modules the host has enabled (AppArmor, SELinux),
as the kernel reports them under /sys."""

import os


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().startswith("Y")
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")
