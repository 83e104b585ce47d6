"""The in-process ComfyUI host lives in devtools/comfy_host.py (shared with the benchmarks); this name stays for tests."""

from cones2.devtools.comfy_host import (
    PACK_DIR_NAME,
    Host,
    comfyui_path,
    load_core_extras,
    load_host,
    skip_reason,
)

__all__ = ["PACK_DIR_NAME", "Host", "comfyui_path", "load_core_extras", "load_host", "skip_reason"]
