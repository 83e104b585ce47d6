"""Fail if a file of the Comfy Registry package would be flagged: subprocess, network or exec calls.

Usage: python .ci/check_package.py node.zip   (the zip `comfy node pack` writes, which is what
`comfy node publish` uploads: git-tracked files minus `.comfyignore`). Python files are read
with ``ast``; JavaScript files by pattern. The frontend's ``api.fetchApi`` (a request to the
user's own ComfyUI server, how every frontend extension uploads) is allowed.
"""

from __future__ import annotations

import ast
import re
import sys
import zipfile

FLAGGED_MODULES = {"subprocess", "socket", "urllib", "http", "requests", "httpx", "aiohttp", "websocket",
                   "websockets", "ftplib", "smtplib", "telnetlib", "pty", "multiprocessing"}
FLAGGED_CALLS = {"exec", "eval", "compile", "__import__", "os.system", "os.popen", "os.execv", "os.spawnv",
                 "os.startfile"}
JS_FLAGGED = re.compile(r"(?<![.\w])fetch\s*\(|XMLHttpRequest|new\s+WebSocket|\beval\s*\(|new\s+Function\s*\(")


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return ""


def python_findings(name: str, source: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        else:
            mods = []
        for mod in mods:
            if mod.split(".")[0] in FLAGGED_MODULES:
                out.append(f"{name}:{node.lineno}: imports {mod}")
        if isinstance(node, ast.Call) and _call_name(node) in FLAGGED_CALLS:
            out.append(f"{name}:{node.lineno}: calls {_call_name(node)}()")
    return out


def js_findings(name: str, source: str) -> list[str]:
    return [f"{name}:{source.count(chr(10), 0, m.start()) + 1}: {m.group(0).strip()}"
            for m in JS_FLAGGED.finditer(source)]


def findings(zip_path: str) -> list[str]:
    out = []
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            if name.endswith(".py"):
                out += python_findings(name, z.read(name).decode("utf-8"))
            elif name.endswith((".js", ".mjs")):
                out += js_findings(name, z.read(name).decode("utf-8"))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_package.py node.zip", file=sys.stderr)
        return 2
    found = findings(argv[0])
    for line in found:
        print(f"flagged: {line}")
    with zipfile.ZipFile(argv[0]) as z:
        count = len(z.namelist())
    print(f"PACKAGE: {count} files, {len(found) or 'no'} flagged subprocess/network/exec use")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
