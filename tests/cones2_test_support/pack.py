"""Import this checkout as the package ``cones2`` without running its ``__init__``.

The pack's root ``__init__`` registers ComfyUI nodes, so it only runs inside ComfyUI; the
pure core (``cones2.guidance``, ``cones2.training``) imports anywhere through this alias.
The checkout's root itself never goes on ``sys.path``: its ``nodes/`` and ``tests/``
would shadow ComfyUI's own top-level ``nodes`` and ``tests``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "cones2"


def import_pack_core() -> types.ModuleType:
    """Register ``cones2`` -> this checkout (idempotent) and return the package module."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(ROOT)]
        pkg.__file__ = None
        sys.modules[PACKAGE] = pkg
    return pkg
