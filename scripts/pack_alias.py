"""Import this checkout as the package ``cones2`` without running its ``__init__`` (which needs ComfyUI).

The one implementation of the alias. A user tool run as a file imports it as its sibling
(``scripts/`` is first on sys.path then); developer entry points run from the checkout's root
import ``scripts.pack_alias``; the tests load it by file location. The checkout's root must
never stay on sys.path (its ``nodes/`` and ``tests/`` would shadow ComfyUI's): ``python -m``
puts the current folder there, so ``import_pack_core`` takes it off. DEVELOPERS.md says why.
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
