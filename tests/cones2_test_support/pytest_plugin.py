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


# --- the ComfyUI checkout named by COMFYUI_PATH must come out of a test run untouched -------

_WATCHED = ("models", "input", "output", "user", "custom_nodes", "temp")
_snapshot: dict | None = None


def _checkout_files() -> dict | None:
    import os

    root = os.environ.get("COMFYUI_PATH", "").strip()
    if not root or not Path(root, "comfy").is_dir():
        return None
    files = {}
    for sub in _WATCHED:
        base = Path(root, sub)
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                p = Path(dirpath, name)
                try:
                    files[str(p.relative_to(root))] = p.stat().st_mtime_ns
                except OSError:
                    pass
    return files


def pytest_sessionstart(session):
    global _snapshot
    _snapshot = _checkout_files()


def pytest_sessionfinish(session, exitstatus):
    after = _checkout_files()
    if _snapshot is None or after is None:
        return
    changed = sorted(k for k in after.keys() | _snapshot.keys() if after.get(k) != _snapshot.get(k))
    if changed:
        session.config.get_terminal_writer().line(
            f"ERROR: the test run wrote into the ComfyUI checkout (COMFYUI_PATH): {changed[:10]}", red=True)
        session.exitstatus = 1
