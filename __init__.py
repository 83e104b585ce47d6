"""Cones 2 for ComfyUI: node registration only (the nodes live in nodes/, the method in guidance/ and training/)."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The frontend extension (the box editor of Cones2LayoutBoxes); ComfyUI serves it at /extensions/<folder>/.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
