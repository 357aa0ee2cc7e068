"""Fixtures and markers shared by every test directory."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    needs_root = pytest.mark.skip(reason="needs root")
    for item in items:
        if "/integration/" in str(item.fspath) or "/interop/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(needs_root)
