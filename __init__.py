"""Cones 2 for ComfyUI: node registration only (nodes in nodes/, host adapters in comfy_adapters/, the method in
guidance/, training/ and scoring/)."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The frontend extension (the box editor of Cones2LayoutBoxes); ComfyUI serves it at /extensions/<folder>/.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
