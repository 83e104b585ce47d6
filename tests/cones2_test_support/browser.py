"""What the browser tests (tests/browser/*.mjs, playwright-core in headless Chromium) share: whether they
can run, and the frontends they run on (the ComfyUI venv's pinned one, plus each unpacked
comfyui-frontend-package named in CONES2_FRONTEND_ROOTS, served with ``main.py --front-end-root``)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

from .pack import ROOT

BROWSER = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")


def skip_reason() -> str | None:
    if NODE is None:
        return "browser test: node (Node.js) is not installed"
    if not Path(CHROMIUM).is_file():
        return f"browser test: no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set CHROMIUM)"
    if not (BROWSER / "node_modules" / "playwright-core").is_dir():
        return "browser test: playwright-core is not installed (run `npm ci` in tests/browser)"
    return None


def frontend_version(root: str | None) -> str:
    if root is None:
        try:
            return importlib.metadata.version("comfyui-frontend-package")
        except importlib.metadata.PackageNotFoundError:
            return "pinned"
    for info in Path(root).resolve().parents[1].glob("comfyui_frontend_package-*.dist-info"):
        return info.name.removeprefix("comfyui_frontend_package-").removesuffix(".dist-info")
    return Path(root).name


# (frontend version, --front-end-root or None for the venv's own)
FRONTENDS = [(frontend_version(None), None)] + [
    (frontend_version(r), r) for r in os.environ.get("CONES2_FRONTEND_ROOTS", "").split(os.pathsep) if r]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
