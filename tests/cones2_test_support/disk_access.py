"""What a piece of code does to the disk, seen through Python's audit events (``sys.addaudithook``)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

FILE_EVENTS = frozenset({
    "open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link",
    "os.truncate", "os.chmod", "os.utime", "shutil.copyfile", "shutil.rmtree"})
_WATCHING: list[list] = []
_INSTALLED = False


def _audit(event, args):
    if _WATCHING and event in FILE_EVENTS:
        _WATCHING[-1].append((event, args[0] if args else None))


@contextmanager
def disk_access():
    """Yield the list of (event, path) of every file opened, listed, written or removed inside the block
    (in this process). A hook cannot be removed, so it is installed once and records only inside a block."""
    global _INSTALLED
    if not _INSTALLED:
        sys.addaudithook(_audit)
        _INSTALLED = True
    events: list = []
    _WATCHING.append(events)
    try:
        yield events
    finally:
        _WATCHING.pop()
