"""The ``cones2`` alias for tests and benchmarks: scripts/pack_alias.py, the one implementation.

Its folder (``scripts/``, not the checkout's root) goes on ``sys.path``, as the scripts'
own imports need.
"""

import sys
from pathlib import Path

_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

from pack_alias import PACKAGE, ROOT, import_pack_core  # noqa: E402

__all__ = ["PACKAGE", "ROOT", "import_pack_core"]
