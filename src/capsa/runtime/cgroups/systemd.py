"""`--systemd-cgroup`: a "slice:prefix:name" cgroupsPath as the cgroupfs path systemd uses.

runc's systemd driver asks systemd (over D-Bus) for a transient scope unit
and lets systemd create its cgroup. capsa does not talk to systemd: on a
host whose init is systemd it accepts the same cgroupsPath, expands it to
the directory systemd would give that unit (runc's ExpandSlice and unit
naming), and manages that directory with the cgroupfs drivers. On a host
whose init is not systemd the flag is refused, as there is nobody to
delegate to and nobody who would keep that hierarchy tidy.

    "system.slice:docker:abc"  -> /system.slice/docker-abc.scope
    "a-b.slice:pfx:web"        -> /a.slice/a-b.slice/pfx-web.scope
    "-.slice:x:y.slice"        -> /y.slice          (a name ending in .slice is a slice unit)
    "" (no cgroupsPath)        -> /system.slice/capsa-<id>.scope
"""

import os

from capsa.errors import FailedPrecondition, InvalidArgument

SUFFIX = ".slice"
DEFAULT_SLICE = "system.slice"
DEFAULT_PREFIX = "capsa"
NOT_SYSTEMD = "systemd cgroup driver requested but systemd is not the init on this host"


def booted(run_dir: str = "/run/systemd/system") -> bool:
    """Whether systemd is this host's init (sd_booted(3): the directory it creates)."""
    return os.path.isdir(run_dir)


def expand_slice(slice_name: str) -> str:
    """The cgroup path of a slice unit: "a-b.slice" -> "/a.slice/a-b.slice"."""
    if not slice_name.endswith(SUFFIX) or "/" in slice_name:
        raise InvalidArgument(f"failed to expand slice {slice_name!r}: not a slice unit name")
    stem = slice_name[: -len(SUFFIX)]
    if stem == "-":
        return "/"  # the root slice
    path, prefix = "", ""
    for component in stem.split("-"):
        if not component:  # "-a.slice", "a--b.slice", "a-.slice" are invalid
            raise InvalidArgument(f"failed to expand slice {slice_name!r}: empty component")
        path += "/" + prefix + component + SUFFIX
        prefix += component + "-"
    return path


def unit_name(prefix: str, name: str) -> str:
    """The unit systemd would make: a scope "<prefix>-<name>.scope", or the slice itself."""
    if name.endswith(SUFFIX):
        return name
    return f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def cgroup_path(cgroups_path: str | None, container_id: str) -> str:
    """The absolute cgroupfs path for a systemd cgroupsPath (or the default unit)."""
    if not cgroups_path:
        parent, prefix, name = "", DEFAULT_PREFIX, container_id
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise InvalidArgument(f"failed to use cgroups path {cgroups_path!r}: expected "
                                  "\"slice:prefix:name\" with --systemd-cgroup")
        parent, prefix, name = parts
    if not name or "/" in name or name in (".", ".."):
        raise InvalidArgument(f"failed to use cgroups path {cgroups_path!r}: bad unit name "
                              f"{name!r}")
    if "/" in prefix:
        raise InvalidArgument(f"failed to use cgroups path {cgroups_path!r}: bad prefix "
                              f"{prefix!r}")
    base = expand_slice(parent or DEFAULT_SLICE)
    return base.rstrip("/") + "/" + unit_name(prefix, name)


def resolve(cgroups_path: str | None, container_id: str) -> str:
    """cgroup_path on a systemd host; FailedPrecondition anywhere else."""
    if not booted():
        raise FailedPrecondition(NOT_SYSTEMD)
    return cgroup_path(cgroups_path, container_id)
