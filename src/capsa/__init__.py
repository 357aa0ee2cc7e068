"""capsa: a Linux container stack in Python, from chroot to the CRI."""

__version__ = "0.1.0"
