"""The residual file: one subject's Cones 2 residual, stored and validated.

A residual is ``[n_tokens, width]`` float32 added to the text conditioning at the rows of the
subject's class phrase; ``width`` is its model family's conditioning width (768 SD1.x, 1024
SD2.x, 2048 SDXL: ``training/model_families.py``). On disk it is a safetensors file holding
one tensor named ``residual`` plus string metadata (``format``, ``format_version``,
``subject``, ``token_ids``, ``base_model`` = the family's key, ``text_encoders`` = the
fingerprint of the encoders it was trained with, ``training``: see ``residual_metadata``). A
file without ``base_model`` is SD2.x, the family of the paper. The authors' ``*.pt`` files (a
bare SD2 tensor, ``[1024]`` or ``[n, 1024]``) load too, through
``torch.load(weights_only=True)``, which never unpickles code. ``SUFFIXES`` are the file
types a residual may have: the model folder lists them and ``load_residual`` reads them.
``load_residual_bytes`` is the one reader of the safetensors format, for files and for a
residual's bytes given in a workflow (``inline_residual``): the checks live there once.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_tensors
from safetensors.torch import save as safetensors_bytes

from .atomic_files import write_atomic
from .model_families import FAMILIES, REFERENCE, ModelFamily, ModelFamilyError, family_named, family_of_width

FORMAT_NAME = "cones2-residual"
FORMAT_VERSION = 1
EMBED_DIM = REFERENCE.width  # SD2.x's width, of the authors' files
BASE_MODEL = REFERENCE.key  # the family of a file that records none
_WIDTHS = ", ".join(f"{f.width} on {f.label}" for f in FAMILIES.values())
MAX_TOKENS = 75  # one CLIP chunk holds at most 75 content tokens
SUFFIXES = (".safetensors", ".pt")  # this pack's format, the authors' torch files
# A residual row is the mean shift of a final-LayerNorm output row (norm ≈ √1024·|γ| ≈ 32 for SD2).
# AdamW moves each weight by at most ≈ 3·lr a step whatever the gradient (the clip at 1.0 bounds the
# gradient; Adam divides its scale away), so even the node's extremes (lr 1e-2, 100,000 steps) leave
# rows under ~2·32·(1 + 3·lr·steps) ≈ 2e5: a larger row was not made by training. README: Residual files.
MAX_ROW_NORM = 1e6
# A residual is ~5 KB (a few rows of 1024 float32 + metadata); the largest possible one (75 rows of a 2048-wide
# encoder) is ~0.6 MB. More bytes than this are not a residual, and are refused before they are parsed, so a
# workflow value (or a checkpoint dropped into the residual folder) never makes the server decode a large payload.
MAX_RESIDUAL_BYTES = 1 << 20


class ResidualFileError(ValueError):
    """A residual file or tensor that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Residual:
    """A validated residual and what is known about how it was made."""

    tensor: torch.Tensor  # [n_tokens, family width] float32 on the CPU
    subject: str | None = None  # the class phrase it was trained on ("dog", "robot toy")
    token_ids: tuple[int, ...] | None = None  # the phrase's CLIP token ids
    base_model: str = BASE_MODEL  # its model family's key (model_families)
    text_encoders: str | None = None  # fingerprint of the encoders it was trained with, when known
    training: dict = field(default_factory=dict)  # settings of the run that made it, when known
    source: str = "<memory>"  # where it came from, for messages

    @property
    def n_tokens(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def family(self) -> ModelFamily:
        return family_named(self.base_model)


def _family(base_model: str, source: str) -> ModelFamily:
    try:
        return family_named(base_model)
    except ModelFamilyError as e:
        raise ResidualFileError(
            f"{source}: made for base model {base_model!r}, which this pack cannot apply: {e}. "
            "Update the pack, or train the subject again on a supported checkpoint."
        ) from None


def check_residual_tensor(tensor, source: str, base_model: str = BASE_MODEL) -> torch.Tensor:
    """Return ``tensor`` as a contiguous ``[n, width]`` float32 CPU tensor, or raise ResidualFileError.

    ``width`` is the conditioning width of the family ``base_model`` (model_families)."""
    family = _family(base_model, source)
    if not isinstance(tensor, torch.Tensor):
        raise ResidualFileError(
            f"{source}: holds a {type(tensor).__name__}, not a tensor. "
            f"A residual file holds one [n_tokens, {family.width}] tensor; pick a file made by Cones 2 training."
        )
    if not (tensor.is_floating_point()):
        raise ResidualFileError(f"{source}: the residual has dtype {tensor.dtype}; it must be floating point.")
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise ResidualFileError(
            f"{source}: the residual has shape {list(tensor.shape)}; expected [n_tokens, {family.width}] "
            f"or [{family.width}] for {family.label}."
        )
    n, width = tensor.shape
    if width != family.width:
        other = family_of_width(width)
        hint = f" ({width} is {other.label}'s conditioning width)" if other else ""
        default = " (a file that records no family is SD2.x, as the authors' .pt files are)" if family == REFERENCE else ""
        raise ResidualFileError(
            f"{source}: the residual is {width} wide{hint}, but its family is {family.label}{default}, whose "
            f"conditioning rows are {family.width} wide. The file is inconsistent: train this subject again "
            "on the checkpoint you use (the pack records its family)."
        )
    if n == 0 or n > MAX_TOKENS:
        raise ResidualFileError(
            f"{source}: the residual has {n} rows; a subject phrase has 1 to {MAX_TOKENS} tokens."
        )
    tensor = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ResidualFileError(
            f"{source}: the residual holds {bad} NaN or infinite values, so it would ruin every image. "
            "Its training diverged: train again (a lower learning rate) or use an earlier checkpoint."
        )
    largest = float(tensor.norm(dim=1).max())
    if not largest <= MAX_ROW_NORM:  # also catches a norm that overflows to inf
        raise ResidualFileError(
            f"{source}: a residual row has norm {largest:.3g}; training cannot make rows above {MAX_ROW_NORM:.0e} "
            "(the text rows themselves have norms of tens), so it would ruin every image. "
            "The file is damaged or not a Cones 2 residual: train the subject again or get the file again."
        )
    return tensor


def make_residual(tensor, *, subject=None, token_ids=None, base_model=BASE_MODEL, text_encoders=None, training=None,
                  source="<memory>") -> Residual:
    """Validate ``tensor`` (its width: ``base_model``'s family) and wrap it with its metadata.

    ``text_encoders``: the fingerprint of the encoders it was trained with
    (``comfy_adapters.model_families.text_encoder_fingerprint``), or None."""
    tensor = check_residual_tensor(tensor, source, base_model)
    if token_ids is not None:
        token_ids = tuple(int(t) for t in token_ids)
        if len(token_ids) != tensor.shape[0]:
            raise ResidualFileError(
                f"{source}: the residual has {tensor.shape[0]} rows but its phrase has {len(token_ids)} tokens "
                f"{list(token_ids)}; the file is inconsistent, train or convert it again."
            )
    return Residual(tensor=tensor, subject=subject or None, token_ids=token_ids, base_model=base_model,
                    text_encoders=text_encoders or None, training=dict(training or {}), source=source)


def residual_metadata(residual: Residual) -> dict[str, str]:
    """The safetensors metadata of ``residual`` (all values strings, as the format requires)."""
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "base_model": residual.base_model}
    if residual.subject:
        meta["subject"] = residual.subject
    if residual.token_ids is not None:
        meta["token_ids"] = json.dumps(list(residual.token_ids))
    if residual.text_encoders:
        meta["text_encoders"] = residual.text_encoders
    if residual.training:
        meta["training"] = json.dumps(residual.training, sort_keys=True, separators=(",", ":"))
    return meta


def residual_to_bytes(residual: Residual) -> bytes:
    """Serialize ``residual`` as a complete safetensors file."""
    return safetensors_bytes({"residual": residual.tensor.contiguous()}, metadata=residual_metadata(residual))


def save_residual(residual: Residual, path, *, overwrite: bool = False) -> Path:
    """Write ``residual`` to ``path`` atomically; never leaves a partial file behind.

    With ``overwrite=False`` an existing file is an error (FileExistsError), checked
    atomically; use ``unique_residual_path`` to pick a free name first.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ResidualFileError(f"{path.name}: residuals are saved as .safetensors, not {path.suffix or 'no suffix'}.")
    data = residual_to_bytes(residual)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return write_atomic(path, write, overwrite=overwrite)


def unique_residual_path(directory, stem: str) -> Path:
    """``directory/stem.safetensors``, or ``stem_2``, ``stem_3``... if that name is taken."""
    directory = Path(directory)
    candidate = directory / f"{stem}.safetensors"
    k = 2
    while candidate.exists():
        candidate = directory / f"{stem}_{k}.safetensors"
        k += 1
    return candidate


def save_residual_unique(residual: Residual, directory, stem: str) -> Path:
    """Save under a free name in ``directory`` (a collision gets ``_2``, ``_3``...), atomically."""
    while True:
        candidate = unique_residual_path(directory, stem)
        try:
            return save_residual(residual, candidate, overwrite=False)
        except FileExistsError:
            if not candidate.exists():
                raise  # not a taken name (e.g. `directory` is a file): trying again would never end
            # another writer took the name between the check and the link: take the next one


def load_residual(path) -> Residual:
    """Load a residual from ``.safetensors`` (this pack's format) or ``.pt`` (the authors')."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ResidualFileError(f"{name}: no such file ({path}).")
    if path.suffix in SUFFIXES and path.stat().st_size == 0:
        raise ResidualFileError(f"{name}: the file is empty (0 bytes), e.g. a failed download or copy. Get it again.")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    if path.suffix == ".pt":
        return _load_torch(path)
    raise ResidualFileError(
        f"{name}: not a residual file type ({', '.join(SUFFIXES)}); use .safetensors, or the authors' .pt "
        "(a torch tensor file with another suffix loads once renamed to .pt)."
    )


def _load_safetensors(path: Path) -> Residual:
    size = path.stat().st_size
    if size <= MAX_RESIDUAL_BYTES:
        return load_residual_bytes(path.read_bytes(), path.name)
    with path.open("rb") as f:  # only the header: enough to say what the large file is instead
        head = f.read(8)
        if len(head) == 8 and int.from_bytes(head, "little") <= min(size - 8, MAX_HEADER_BYTES):
            head += f.read(int.from_bytes(head, "little"))
    meta, shapes = _safetensors_header(head, path.name, size)
    _check_is_residual(meta, shapes, path.name)
    raise ResidualFileError(_too_large(path.name, size))


def load_residual_bytes(data: bytes, source: str) -> Residual:
    """The residual in ``data``, the bytes of a ``.safetensors`` residual file; ``source`` names it in messages.

    Only safetensors is parsed: a torch ``.pt`` payload (a pickle) is refused unread, and so is anything
    over ``MAX_RESIDUAL_BYTES``. Every check of a residual file applies (format, version, base model,
    metadata, width, NaN/inf, the norm bound). Nothing is written anywhere.
    """
    data = bytes(data)
    if len(data) > MAX_RESIDUAL_BYTES:
        raise ResidualFileError(_too_large(source, len(data)))
    meta, shapes = _safetensors_header(data, source, len(data))
    _check_is_residual(meta, shapes, source)
    try:
        tensor = safetensors_tensors(data)["residual"]
    except Exception as e:  # safetensors raises several types for a corrupt or truncated payload
        raise ResidualFileError(_unreadable(source, _first_line(e))) from None
    name = source
    version = meta.get("format_version", str(FORMAT_VERSION))
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise ResidualFileError(
            f"{name}: written in residual format version {version}; this pack reads up to {FORMAT_VERSION}. "
            "Update the pack."
        )
    base = meta.get("base_model", BASE_MODEL)
    try:
        token_ids = json.loads(meta["token_ids"]) if "token_ids" in meta else None
        training = json.loads(meta["training"]) if "training" in meta else {}
        if not isinstance(training, dict) or not (token_ids is None or (
                isinstance(token_ids, list) and all(type(t) is int for t in token_ids))):
            raise ValueError("token_ids must be a list of whole numbers, training a table")
    except ValueError as e:  # json.JSONDecodeError is one
        raise ResidualFileError(f"{name}: damaged metadata ({e}); convert or train it again.") from None
    return make_residual(tensor, subject=meta.get("subject"), token_ids=token_ids, base_model=base,
                         text_encoders=meta.get("text_encoders"), training=training, source=name)


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header
TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # a zip .pt; a legacy pickle


def _safetensors_header(data: bytes, source: str, size: int) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(metadata, {tensor name: shape}, sorted by name) from the header at the start of ``data``, a
    safetensors file of ``size`` bytes; ResidualFileError (naming ``source``) if it is not one."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else None
    if n is None or n > size - 8 or n > MAX_HEADER_BYTES:
        if data.startswith(TORCH_MAGIC):
            raise ResidualFileError(
                f"{source}: a torch (.pt) file, not safetensors; it was not read (a .pt is a pickle, which can "
                "run code; only safetensors is read here). Convert it (python scripts/convert_residual.py "
                "FILE.pt --subject PHRASE) and use the .safetensors it writes, or put it in "
                "models/cones2_residuals with the .pt suffix (read there as plain tensors only)."
            )
        what = (f"{len(data)} bytes, shorter than a safetensors header" if n is None
                else f"its header claims {n} bytes but {max(size - 8, 0)} follow")
        raise ResidualFileError(_unreadable(source, what))
    try:
        header = json.loads(data[8:8 + n])
        meta = header.pop("__metadata__", None) or {}
        shapes = {k: [int(d) for d in header[k]["shape"]] for k in sorted(header)}
        if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            raise ValueError("its metadata is not a table of strings")
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ResidualFileError(_unreadable(source, f"damaged header: {_first_line(e)}")) from None
    return meta, shapes


def _check_is_residual(meta: dict[str, str], shapes: dict[str, list[int]], source: str) -> None:
    fmt = meta.get("format")
    if "residual" not in shapes or fmt not in (None, FORMAT_NAME):
        raise ResidualFileError(
            f"{source}: not a Cones 2 residual: {_describe_tensors(shapes, fmt)}. A residual holds one tensor named "
            f"'residual' [n_tokens, width] (width {_WIDTHS}; format '{FORMAT_NAME}'). {_kind_hint(shapes)}"
            "Put only residual files in models/cones2_residuals."
        )


def _unreadable(source: str, why: str) -> str:
    return (f"{source}: not a readable safetensors file ({why}); it may be truncated or damaged: "
            "get it again, or train the subject again.")


def _too_large(source: str, size: int) -> str:
    return (f"{source}: {size / 2**20:.1f} MiB is too large for a residual; the cap is {MAX_RESIDUAL_BYTES // 2**20} "
            f"MiB (a residual is ~5 KB, and the largest possible one ~0.6 MB), so this is not a residual: pick "
            "the subject's .safetensors residual file.")


def _load_torch(path: Path) -> Residual:
    name = path.name
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e).upper():
            # weights_only met a class or function to import: loading it would run code
            raise ResidualFileError(
                f"{name}: refused to load. Only plain tensor files are read (weights_only=True never runs code "
                f"from a file); this one is not ({_unpickler_error(e)})."
            ) from None
        if isinstance(e, pickle.UnpicklingError) and "Unsupported operand" in str(e):
            header = path.read_bytes()[:2]
            if header[:1] == b"\x80" and header[1:] >= b"\x04":
                # a pickle of protocol 4+ (not torch's zip format): the safe loader stops at its first frame,
                # before reading anything, so what the file holds (tensors or code) is unknown and never ran
                raise ResidualFileError(
                    f"{name}: refused to load. It is a legacy pickle (pickle protocol {header[1]}, not torch's zip "
                    "format), which the safe loader cannot read; only plain tensor files are read, and nothing in "
                    "this file ran. If it is a residual you trust, save its tensor again with a current "
                    "torch.save (or convert it to .safetensors)."
                ) from None
        # empty, truncated, or not a torch file at all (garbage reads as an unknown pickle opcode)
        detail = _unpickler_error(e) if isinstance(e, pickle.UnpicklingError) else _first_line(e)
        raise ResidualFileError(
            f"{name}: not a readable torch file ({detail}); it may be truncated or damaged, or not a .pt "
            "file: get it again (a safetensors file must end in .safetensors)."
        ) from None
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if "residual" in tensors:
            obj = tensors["residual"]
        elif len(tensors) == 1 and len(obj) == 1:
            obj = next(iter(tensors.values()))
        else:
            raise ResidualFileError(
                f"{name}: holds {len(obj)} entries {list(obj)[:4]}; a residual .pt holds a single tensor."
            )
    return make_residual(obj, source=name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _unpickler_error(e: BaseException) -> str:
    """The reason in torch's long 'Weights only load failed' text: the GLOBAL it refused, else the unpickler's error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln:  # the class or function the file wanted to import
            return ln[:200]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[-1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest[:200]
    return _first_line(e)


def _describe_tensors(shapes: dict[str, list[int]], fmt: str | None, shown: int = 4) -> str:
    """What a safetensors file holds, for a message: its format and first few tensors with shapes."""
    parts = [f"format '{fmt}'"] if fmt else []
    if not shapes:
        parts.append("no tensors")
    else:
        listed = ", ".join(f"'{k}' {v}" for k, v in list(shapes.items())[:shown])
        more = f" and {len(shapes) - shown} more" if len(shapes) > shown else ""
        parts.append(f"{len(shapes)} tensor(s): {listed}{more}")
    return "it holds " + "; ".join(parts)


def _kind_hint(shapes: dict[str, list[int]]) -> str:
    """A guess at what the file is instead (a LoRA, an embedding, a whole model), or ''."""
    keys = [k.lower() for k in shapes]
    if any("lora" in k or k.endswith((".alpha", "lora_down.weight", "lora_up.weight")) for k in keys):
        return "It looks like a LoRA: load it with a LoRA loader from models/loras. "
    if any(k in ("emb_params", "string_to_param", "clip_h", "clip_l", "clip_g") or k.startswith("string_to_param")
           for k in keys):
        return "It looks like a textual-inversion embedding: put it in models/embeddings and write embedding:NAME. "
    if len(keys) > 100:
        return "It looks like a whole model (a checkpoint): put it in models/checkpoints. "
    return ""


def convert_to_safetensors(src, dst=None, *, subject: str | None = None, token_ids=None,
                           overwrite: bool = False) -> Path:
    """Convert an authors' ``.pt`` residual to this pack's ``.safetensors`` file (atomic).

    ``subject`` is recorded only when given (or already in ``src``): the file name is no
    guide (the authors' training always writes ``residual.pt``; their downloads have names
    like ``robot_toy.pt``), and with no subject Load Residual asks for the phrase.
    """
    src = Path(src)
    residual = load_residual(src)
    dst = Path(dst) if dst else src.with_suffix(".safetensors")
    residual = make_residual(residual.tensor, subject=subject or residual.subject,
                             token_ids=token_ids if token_ids is not None else residual.token_ids,
                             base_model=residual.base_model, text_encoders=residual.text_encoders,
                             training={**residual.training, "converted_from": src.name}, source=src.name)
    return save_residual(residual, dst, overwrite=overwrite)

