"""File names made from user text (a subject phrase, a typed name)."""

from __future__ import annotations

import re

MAX_STEM = 60


def slug(text: str, fallback: str = "subject") -> str:
    """A safe file-name stem: runs of anything but ``A-Za-z0-9._-`` become ``_``, no leading or
    trailing ``.``/``_``, at most 60 characters; ``fallback`` when nothing is left."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return s[:MAX_STEM] or fallback
