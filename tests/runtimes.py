"""How tests find the programs under test."""

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runtime_command() -> list[str]:
    """capsa-runtime as users run it: the installed launcher, else the module."""
    path = shutil.which("capsa-runtime")
    return [path] if path else [sys.executable, "-m", "capsa.runtime.cli"]


def capsa_command() -> list[str]:
    """The capsa CLI as users run it: the installed launcher, else the module."""
    path = shutil.which("capsa")
    return [path] if path else [sys.executable, "-m", "capsa.cli.main"]
