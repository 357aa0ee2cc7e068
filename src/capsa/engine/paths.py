"""Where a container's things live (DESIGN.md, "Disk").

    <root>/containers/<id>/            the bundle: config.json, rootfs/ (the
                                       overlay mount), upper/, work/, hosts,
                                       hostname, resolv.conf, container.log*
    <state>/containers/<id>/           the shim's: shim.sock, exit.json, ...
    <state>/runtime/                   the OCI runtime's --root
"""

import os

DEFAULT_STATE = "/run/capsa"


def default_state() -> str:
    return os.environ.get("CAPSA_STATE") or DEFAULT_STATE


def new_id() -> str:
    """A new id for a container (or a volume, a network): 64 random hex digits."""
    return os.urandom(32).hex()


def state_dir(state: str, container_id: str) -> str:
    """The container's own directory in STATE (the shim's)."""
    return os.path.join(state, "containers", container_id)


class Paths:
    def __init__(self, root: str, state: str, container_id: str):
        self.bundle = os.path.join(root, "containers", container_id)
        self.state = state_dir(state, container_id)
        self.runtime_root = os.path.join(state, "runtime")

    def in_bundle(self, name: str) -> str:
        return os.path.join(self.bundle, name)

    @property
    def rootfs(self) -> str:
        return self.in_bundle("rootfs")

    @property
    def log(self) -> str:
        return self.in_bundle("container.log")

    @property
    def socket(self) -> str:
        return os.path.join(self.state, "shim.sock")

    @property
    def exit_file(self) -> str:
        return os.path.join(self.state, "exit.json")
