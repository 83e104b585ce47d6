"""Import this checkout as the package ``cones2`` without running its ``__init__``.

The one implementation of the alias, for scripts, tests and benchmarks. The pack's root
``__init__`` registers ComfyUI nodes, so it only runs inside ComfyUI; the pure core
(``cones2.guidance``, ``cones2.training``) imports anywhere through this alias, and the nodes
(``cones2.nodes``) once ComfyUI is importable. The checkout's root itself never goes on
``sys.path``: its ``nodes/`` and ``tests/`` would shadow ComfyUI's own top-level ``nodes``
and ``tests``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cones2"


def import_pack_core(name: str = PACKAGE) -> types.ModuleType:
    """Register ``name`` -> this checkout (idempotent), drop the checkout's root from sys.path, return the package."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    pkg = sys.modules.get(name)
    if pkg is None:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(ROOT)]
        pkg.__file__ = None
        sys.modules[name] = pkg
    return pkg
