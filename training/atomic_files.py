"""Atomic file writes: a file appears whole under its name, or not at all."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path

_NEW_FILE = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)


def _new_temp_file(path: Path) -> str:
    """Create an empty, uniquely named temporary file beside ``path`` and return its name.

    Opened with mode 0666, so the kernel applies the process umask (the usual permissions,
    not mkstemp's 0600) without this code ever changing the umask, which is process-wide.
    """
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, _NEW_FILE, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def _publish_no_overwrite(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless ``path`` exists (FileExistsError), never replacing it.

    A hard link does it atomically. Filesystems without hard links (exFAT, FAT, some network
    shares) refuse the link; then an exclusive create reserves the name and a rename fills it.
    Between the two, ``path`` exists as an empty file for a moment: another writer that
    creates exclusively still sees it as taken, so nothing is ever overwritten.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "a file of that name exists", str(path)) from None
    except OSError:
        try:
            os.close(os.open(path, _NEW_FILE, 0o666))
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "a file of that name exists", str(path)) from None
        try:
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(path) and os.path.getsize(path) == 0:
                os.unlink(path)  # our empty reservation
            raise
        return
    os.unlink(tmp)


def write_atomic(path, write: Callable[[str], None], *, overwrite: bool) -> Path:
    """Create ``path`` by ``write(tmp_path)`` into a temporary file beside it, then rename.

    The file gets the usual permissions (0666 less the umask). With ``overwrite=False`` an
    existing ``path`` is a FileExistsError and is never replaced. On any error the temporary
    file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_no_overwrite(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
