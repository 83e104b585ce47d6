"""The pack's node mappings, built from each class's NAME (its node id, written once) and DISPLAY_NAME."""

from __future__ import annotations

from .float_inputs import check_float_inputs


def register_nodes(*classes) -> tuple[dict, dict]:
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS of ``classes``; each gets the float-input checks."""
    for cls in classes:
        check_float_inputs(cls)
    return {cls.NAME: cls for cls in classes}, {cls.NAME: cls.DISPLAY_NAME for cls in classes}
