"""Import this checkout as the package ``cones2`` without running its ``__init__``.

The one implementation of the alias. The pack's root ``__init__`` registers ComfyUI nodes, so
it only runs inside ComfyUI; through the alias the pure core (``cones2.guidance``,
``cones2.training``) imports anywhere, the adapters (``cones2.comfy_adapters``) once ComfyUI
is importable, and the tools as ``cones2.scripts.*`` / ``cones2.devtools.*``. How each caller
reaches this file without a ``sys.path`` edit:

- a user tool run as a file (``python scripts/run_workflow.py``): Python puts ``scripts/``
  first on ``sys.path`` for it, so ``import pack_alias`` is a plain sibling import;
- a developer entry point run as a module from the checkout's root (``python -m pytest``,
  ``python -m benchmarks.train_speed``): ``import scripts.pack_alias``;
- the test support loads it by file location (tests/cones2_test_support/pack.py).

The checkout's root itself must never be on ``sys.path`` once ComfyUI is imported: its
``nodes/`` and ``tests/`` would shadow ComfyUI's own top-level ``nodes`` and ``tests``.
``python -m`` puts the current folder there, so ``import_pack_core`` takes it off again.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cones2"


def import_pack_core(name: str = PACKAGE) -> types.ModuleType:
    """Register ``name`` -> this checkout (idempotent), take the checkout's root off sys.path, return the package."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    pkg = sys.modules.get(name)
    if pkg is None:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(ROOT)]
        pkg.__file__ = None
        sys.modules[name] = pkg
    return pkg
