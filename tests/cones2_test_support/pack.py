"""The ``cones2`` alias for tests: scripts/pack_alias.py, the one implementation, loaded from its file.

Loading it by file location needs no folder on ``sys.path``; once it has run, the whole
checkout imports as ``cones2`` (``cones2.devtools``, ``cones2.scripts.run_workflow``, ...).
"""

import importlib.util
from pathlib import Path

_FILE = Path(__file__).resolve().parents[2] / "scripts" / "pack_alias.py"
_spec = importlib.util.spec_from_file_location("cones2_pack_alias", _FILE)
_alias = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_alias)

PACKAGE, ROOT, import_pack_core = _alias.PACKAGE, _alias.ROOT, _alias.import_pack_core

__all__ = ["PACKAGE", "ROOT", "import_pack_core"]
