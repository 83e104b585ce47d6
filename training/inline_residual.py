"""A residual carried inside a workflow: the base64 text of its ``.safetensors`` file.

A residual is ~5 KB, so a workflow can hold its subjects and run on any server that has the
checkpoint (issue 21). The text is decoded in memory and read by ``load_residual_bytes``, the
same checks as a file; nothing is read from or written to disk.
"""

from __future__ import annotations

import base64
import binascii
import re

from .residual_file import (
    MAX_RESIDUAL_BYTES,
    Residual,
    ResidualFileError,
    load_residual_bytes,
    residual_to_bytes,
)

# base64 is 4 characters per 3 bytes; line breaks and spaces (a wrapped paste) may double that at most
MAX_TEXT_CHARS = 2 * (4 * MAX_RESIDUAL_BYTES // 3 + 4)
DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
FILE_NAME = re.compile(r".*\.(safetensors|pt|pth|bin|ckpt)$", re.IGNORECASE | re.DOTALL)


def residual_to_base64(residual: Residual) -> str:
    """The base64 text of ``residual``'s safetensors file (what ``residual_from_base64`` reads)."""
    return base64.b64encode(residual_to_bytes(residual)).decode("ascii")


def residual_from_base64(text, source: str = "the inline residual") -> Residual:
    """The residual whose ``.safetensors`` bytes ``text`` holds as base64 (standard alphabet; whitespace
    and a ``data:...;base64,`` prefix are ignored). ResidualFileError, naming ``source``, for anything else."""
    if not isinstance(text, str):
        raise ResidualFileError(f"{source}: got a {type(text).__name__}; give the base64 text of a residual file.")
    if len(text) > MAX_TEXT_CHARS:
        raise ResidualFileError(
            f"{source}: {len(text):,} characters is too long for a residual; the cap is {MAX_RESIDUAL_BYTES // 2**20} "
            "MiB of file (a residual is ~5 KB, the largest possible ~0.6 MB), so this is not one.")
    compact = "".join(DATA_URL.sub("", text.strip(), count=1).split())
    if not compact:
        raise ResidualFileError(
            f"{source}: is empty. Paste the base64 of a residual .safetensors file (e.g. the output of "
            "'base64 -w0 dog.safetensors', or run_workflow.py --residual dog=@dog.safetensors), or load a file in "
            "models/cones2_residuals with Cones2 Load Residual.")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        hint = (" It looks like a file name: a file on the server is loaded by Cones2 Load Residual; this input "
                "takes the file's contents." if FILE_NAME.fullmatch(text.strip()) else "")
        raise ResidualFileError(
            f"{source}: not valid base64 ({e}); give the base64 text of a residual .safetensors file, whole "
            f"(e.g. 'base64 -w0 dog.safetensors').{hint}") from None
    if not data:
        raise ResidualFileError(f"{source}: the base64 decodes to no bytes; give a residual .safetensors file's.")
    return load_residual_bytes(data, source)
