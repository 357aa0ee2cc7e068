"""Fixtures shared by every test directory."""

import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runtime_command() -> list[str]:
    """capsa-runtime as users run it: the installed launcher, else the module."""
    path = shutil.which("capsa-runtime")
    return [path] if path else [sys.executable, "-m", "capsa.runtime.cli"]


def pytest_collection_modifyitems(config, items):
    needs_root = pytest.mark.skip(reason="needs root")
    for item in items:
        if "/integration/" in str(item.fspath) or "/interop/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(needs_root)
