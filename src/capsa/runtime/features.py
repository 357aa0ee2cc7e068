"""`features`: the runtime-spec's features document (features.md, features-linux.md).

It tells a caller what this build of capsa-runtime recognises and what this
host lets it do, so every list is derived from the code that acts on the
config rather than written out again: mount options from rootfs.py's tables,
namespaces from capsa.linux.ns (those this kernel has), capabilities from
capsa.linux.caps (those this kernel knows), seccomp from what libseccomp and
the kernel support. Printed as runc prints it: indented by four spaces.
"""


OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.2.0"
HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop"]  # fmt: skip
ANNOTATION_VERSION = "org.capsa.runtime.version"
ANNOTATION_LIBSECCOMP = "io.github.seccomp.libseccomp.version"


def mount_options() -> list[str]:
    """Every option rootfs.Options acts on (anything else is passed as fs data)."""
    from capsa.runtime import rootfs

    return sorted({*rootfs.MOUNT_FLAGS, *rootfs.PROPAGATION, *rootfs.RECURSIVE_ATTRS,
                   "tmpcopyup"})  # fmt: skip


def namespaces() -> list[str]:
    from capsa.linux import ns

    return sorted(kind for kind in ns.NAMESPACES if ns.supported(kind))


def capabilities() -> list[str]:
    from capsa.linux import caps

    return caps.NAMES[: caps.last_cap() + 1]


def document(version: str) -> dict:
    """The features object, in the field order of runc's output."""
    from capsa.linux import lsm
    from capsa.runtime import seccomp

    annotations = {ANNOTATION_VERSION: version}
    # Lists sorted as runc sorts them, so the two documents compare line by line.
    seccomp_features = {key: sorted(value) if isinstance(value, list) else value
                        for key, value in seccomp.features().items()}
    if seccomp_features.get("enabled"):
        from capsa.linux import seccomp as libseccomp

        annotations[ANNOTATION_LIBSECCOMP] = ".".join(str(n) for n in libseccomp.version())
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOKS),
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": namespaces(),
            "capabilities": capabilities(),
            # Both drivers, chosen by what the host mounts; rdma limits are
            # written by both. No systemd driver: --systemd-cgroup only maps
            # a slice path onto cgroupfs.
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": True},
            "seccomp": seccomp_features,
            "apparmor": {"enabled": lsm.apparmor_enabled()},
            "selinux": {"enabled": lsm.selinux_enabled()},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": dict(sorted(annotations.items())),
    }
