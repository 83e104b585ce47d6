"""File names from user text (a subject phrase, a typed name) and from workflow values (a file in a folder)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

MAX_STEM = 60


def slug(text: str, fallback: str = "subject") -> str:
    """A safe file-name stem: runs of anything but ``A-Za-z0-9._-`` become ``_``, no leading or
    trailing ``.``/``_``, at most 60 characters; ``fallback`` when nothing is left."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return s[:MAX_STEM] or fallback


def is_relative_name(name) -> bool:
    """True for a relative file name with no ``..`` part and no NUL, on POSIX and Windows alike."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    win = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or win.is_absolute() or win.drive or win.root:
        return False
    return ".." not in re.split(r"[\\/]", name)


def resolve_in_folders(name, folders: Iterable, suffixes: Iterable[str] = ()) -> Path | None:
    """The real path of the file ``name`` (relative, e.g. ``dog.safetensors`` or ``sub/dog.pt``) in the
    first of ``folders`` that holds it, or None.

    None alike for a missing file and for one that may not be read: an absolute name, a ``..``
    part, a NUL, a name without one of ``suffixes`` (when given), or a link whose target lies
    outside every folder. Callers answer None with one message, so that no answer tells whether
    a file exists outside the folders. A folder that is itself a link is followed (real paths on
    both sides).
    """
    suffixes = tuple(suffixes)
    if not is_relative_name(name) or (suffixes and not name.endswith(suffixes)):
        return None
    roots = [os.path.realpath(f) for f in folders]
    for root in roots:
        target = os.path.realpath(os.path.join(root, name))
        if any(_inside(r, target) for r in roots) and os.path.isfile(target):
            return Path(target)
    return None


def _inside(root: str, path: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:  # Windows: another drive
        return False
