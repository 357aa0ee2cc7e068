"""capsa: a Linux container stack in Python, from chroot to the CRI."""

__version__ = "0.1.0"


def from_env(root: str | None = None):
    """A docker-py shaped client over the in-process engine (capsa.client)."""
    from capsa.client import from_env as client_from_env

    return client_from_env(root)
