"""A real ComfyUI, in this process: found through COMFYUI_PATH, the pack loaded as ComfyUI loads it.

Shared by the tests and the benchmarks (``cones2.devtools.comfy_host``).

Nothing here imitates ComfyUI: ``comfy``, ``nodes`` and ``folder_paths`` are the checkout's
own modules. The pack is linked into a temporary ``custom_nodes/`` under a temporary base
directory (models, input, output), so tests never write into the checkout.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

PACK_DIR_NAME = "comfyui-cones2"


def comfyui_path() -> Path | None:
    """The ComfyUI checkout named by COMFYUI_PATH, or None."""
    value = os.environ.get("COMFYUI_PATH", "").strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    return path if (path / "comfy").is_dir() and (path / "nodes.py").is_file() else None


def skip_reason() -> str | None:
    """Why integration tests cannot run here, or None if they can."""
    value = os.environ.get("COMFYUI_PATH", "").strip()
    if not value:
        return "COMFYUI_PATH is not set: no ComfyUI checkout to test against (see DEVELOPERS.md)"
    if comfyui_path() is None:
        return f"COMFYUI_PATH={value} is not a ComfyUI checkout (no comfy/ and nodes.py there)"
    try:
        import torchvision  # noqa: F401  (ComfyUI imports it; the pack does not)
    except Exception as e:  # an ImportError, or a torch/torchvision mismatch
        return f"this Python cannot run ComfyUI (torchvision: {type(e).__name__}: {e}); use ComfyUI's own venv"
    return None


def comfyui_on_path(path: Path) -> None:
    """Make the ComfyUI checkout importable, as its main.py has it (its folder first on sys.path).

    ComfyUI is no installable distribution: importing it in-process needs its folder on
    sys.path. The one place the developer tools add a path; the pack's own folders never go there.
    """
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@dataclass
class Host:
    """Handles on the real ComfyUI modules, with the pack loaded."""

    path: Path
    base_dir: Path
    nodes: object  # ComfyUI's top-level `nodes` module
    folder_paths: object
    pack: object  # the pack's module, as ComfyUI imported it

    def node(self, node_id: str):
        return self.nodes.NODE_CLASS_MAPPINGS[node_id]

    def run(self, node_id: str, **inputs):
        """Call a node's FUNCTION the way the executor does: inside torch.inference_mode()."""
        cls = self.node(node_id)
        with torch.inference_mode():
            return getattr(cls(), cls.FUNCTION)(**inputs)

    def models_dir(self, folder_name: str) -> Path:
        return Path(self.folder_paths.get_folder_paths(folder_name)[0])


_HOST: Host | None = None


def load_host() -> Host:
    """Import the real ComfyUI (CPU mode) and load the pack into it, once per process."""
    global _HOST
    if _HOST is not None:
        return _HOST
    path = comfyui_path()
    assert path is not None, skip_reason()
    base = Path(tempfile.mkdtemp(prefix="cones2-comfy-base-"))
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(ROOT, target_is_directory=True)

    comfyui_on_path(path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.base_directory = str(base)
    import folder_paths  # noqa: E402  (after the args above: it reads base_directory at import)

    if Path(folder_paths.base_path) != base:
        raise RuntimeError("folder_paths was imported before the test host set its base directory")
    import utils.extra_config  # noqa: F401  (main.py imports it before nodes, which puts comfy/ on sys.path)

    import nodes

    pack_path = str(base / "custom_nodes" / PACK_DIR_NAME)
    if not asyncio.run(nodes.load_custom_node(pack_path)):
        raise RuntimeError(f"ComfyUI failed to load the pack from {pack_path}; see the log above")
    module = sys.modules[pack_path.replace(".", "_x_")]
    _HOST = Host(path=path, base_dir=base, nodes=nodes, folder_paths=folder_paths, pack=module)
    return _HOST


def load_core_extras(host: Host) -> None:
    """Load ComfyUI's built-in extra nodes (SamplerCustom, ModelSamplingDiscrete, ...)."""
    if "SamplerCustom" not in host.nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(host.nodes.init_builtin_extra_nodes())
