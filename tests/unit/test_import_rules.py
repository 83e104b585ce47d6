"""The rooms' imports are those DEVELOPERS.md's layout table allows: the core never imports ComfyUI, the user
tools never import developer or test code, no import cycle among the tools, and no sys.path edits."""

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


# Top-level names that are rooms of the checkout: the test support, and the folders a developer
# entry point run from the root (python -m benchmarks.X) imports directly.
TOP_LEVEL_ROOMS = {"cones2_test_support": "tests", "scripts": "scripts", "devtools": "devtools", "benchmarks": "benchmarks"}


def pack_imports(path: Path) -> set[str]:
    """The pack's top-level folders a module imports: relative (``from ..nodes``), through the alias
    (``cones2.devtools``), or by a top-level room name (``cones2_test_support`` = tests)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level >= 2 or (node.level == 1 and path.parent == ROOT):
                names.add(node.module.split(".")[0])
            elif node.level == 0:
                modules = [node.module]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "cones2" and len(parts) > 1:
                names.add(parts[1])
            elif parts[0] in TOP_LEVEL_ROOMS:
                names.add(TOP_LEVEL_ROOMS[parts[0]])
    return names


FORBIDDEN_PACK_IMPORTS = {  # folder -> pack folders it must not import
    "guidance": {"nodes", "comfy_adapters", "training", "scripts", "devtools", "tests"},
    "training": {"nodes", "comfy_adapters", "scripts", "devtools", "tests"},
    "scoring": {"nodes", "comfy_adapters", "training", "scripts", "devtools", "tests"},
    "comfy_adapters": {"nodes", "scripts", "devtools", "tests"},
    "nodes": {"scripts", "devtools", "tests", "benchmarks"},
    "scripts": {"nodes", "devtools", "tests", "benchmarks"},  # the user tools ship; these do not
    "devtools": {"nodes", "tests", "benchmarks"},
    "benchmarks": {"nodes", "tests"},
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_PACK_IMPORTS))
def test_each_room_imports_only_the_rooms_below_it(folder):
    found = {f.name: pack_imports(f) & FORBIDDEN_PACK_IMPORTS[folder] for f in sorted((ROOT / folder).glob("*.py"))}
    assert {name: bad for name, bad in found.items() if bad} == {}


def sibling_imports(path: Path) -> set[str]:
    """Modules of its own folder that a tool imports (``from .x``, ``from . import x``, ``cones2.<folder>.x``,
    or, run as a file, ``import x``)."""
    folder, siblings = path.parent.name, {f.stem for f in path.parent.glob("*.py")}
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["cones2", folder]:
                out |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
            elif parts[0] in siblings:
                out.add(parts[0])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
    return out & siblings - {path.stem}


@pytest.mark.parametrize("folder", ["scripts", "devtools"])
def test_the_tools_have_no_import_cycle(folder):
    graph = {f.stem: sibling_imports(f) for f in (ROOT / folder).glob("*.py")}
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle in {folder}/: {' -> '.join([*path, module])}"
        if module in done:
            return
        path.append(module)
        for other in sorted(graph[module]):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


# The one kind of path a tool may add: a ComfyUI checkout's folder, which importing ComfyUI in-process
# needs (ComfyUI is no installable distribution; its main.py has its folder first on sys.path).
COMFYUI_ON_PATH = {("devtools/comfy_host.py", "comfyui_on_path"), ("scripts/train_residual.py", "start_comfyui")}


def sys_path_edits(path: Path) -> list[str]:
    """Functions (or <module>) that call sys.path.insert/append/extend or site.addsitedir."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    owner = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                owner.setdefault(id(node), fn.name)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("sys.path.insert", "sys.path.append", "sys.path.extend", "site.addsitedir"):
                out.append(owner.get(id(node), "<module>"))
    return out


def test_no_tool_test_or_benchmark_edits_sys_path_for_the_packs_own_folders():
    files = [f for d in ("scripts", "devtools", "benchmarks", "tests", "nodes", "comfy_adapters")
             for f in (ROOT / d).rglob("*.py") if "node_modules" not in f.parts]
    found = {(str(f.relative_to(ROOT)), fn) for f in files for fn in sys_path_edits(f)}
    assert found - COMFYUI_ON_PATH == set()


USER_TOOLS_BUDGET = 1150  # lines: "at most about 1,000" (issue 12); the user tools are what ships in scripts/


def test_the_user_tools_stay_small():
    lines = {f.name: len(f.read_text(encoding="utf-8").splitlines()) for f in sorted((ROOT / "scripts").glob("*.py"))}
    assert sum(lines.values()) <= USER_TOOLS_BUDGET, lines
