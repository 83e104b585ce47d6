"""Pytest plugin (loaded with -p): collect the checkout as a plain folder, not a package.

The pack's root ``__init__.py`` registers ComfyUI nodes and only imports inside ComfyUI,
but pytest would import it to set up the checkout as a package.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collect_directory(path, parent):
    if Path(path) == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
