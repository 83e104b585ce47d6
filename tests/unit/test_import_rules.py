"""The core's imports are those DEVELOPERS.md's layout table allows (never ComfyUI)."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {  # besides the standard library and the package itself
    "guidance": {"torch", "regex", "PIL"},
    "training": {"torch", "safetensors"},
    "scoring": {"torch", "PIL"},
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


def pack_imports(path: Path) -> set[str]:
    """The pack's top-level folders a module imports: relative (``from ..nodes``) or through the alias."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level >= 2 or (node.level == 1 and path.parent == ROOT):
                names.add(node.module.split(".")[0])
            elif node.level == 0 and node.module.startswith("cones2."):
                names.add(node.module.split(".")[1])
    return names


FORBIDDEN_PACK_IMPORTS = {  # folder -> pack folders it must not import
    "guidance": {"nodes", "comfy_adapters", "training"},
    "training": {"nodes", "comfy_adapters"},
    "scoring": {"nodes", "comfy_adapters", "training"},
    "comfy_adapters": {"nodes"},
    "scripts": {"nodes"},
    "benchmarks": {"nodes"},
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_PACK_IMPORTS))
def test_each_room_imports_only_the_rooms_below_it(folder):
    found = {f.name: pack_imports(f) & FORBIDDEN_PACK_IMPORTS[folder] for f in sorted((ROOT / folder).glob("*.py"))}
    assert {name: bad for name, bad in found.items() if bad} == {}
