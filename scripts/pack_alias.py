"""Let a script import this checkout as the package ``cones2`` (its root never goes on sys.path)."""

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_pack_core(name: str = "cones2") -> types.ModuleType:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "scripts")]
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(ROOT)]
        sys.modules[name] = pkg
    return sys.modules[name]
