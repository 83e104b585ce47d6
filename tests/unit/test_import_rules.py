"""The core's imports are those DEVELOPERS.md's layout table allows (never ComfyUI)."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {  # besides the standard library and the package itself
    "guidance": {"torch", "regex", "PIL"},
    "training": {"torch", "safetensors"},
}


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_the_core_imports_only_what_the_table_allows(folder):
    found = {f.name: third_party_imports(f) - ALLOWED[folder] for f in sorted((ROOT / folder).glob("*.py"))}
    assert {name: extra for name, extra in found.items() if extra} == {}
