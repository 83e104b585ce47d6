"""The UNet families Cones 2 runs on, and what each one's text conditioning looks like.

A residual is added to the rows that the UNet's cross-attention reads, so its width is the
family's conditioning width. The facts here are the one home of those widths, the family
names residual files record, and the text encoders each family concatenates; the host
adapter (``comfy_adapters/model_families.py``) decides which family a MODEL or CLIP is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


class ModelFamilyError(ValueError):
    """A model of a kind Cones 2 cannot use, or a residual of another family; the message names both."""


@dataclass(frozen=True)
class ModelFamily:
    key: str  # recorded as a residual file's base_model
    label: str  # for messages and docs
    width: int  # conditioning row width: what the UNet's cross-attention reads, and a residual's width
    encoders: tuple[str, ...]  # ComfyUI's tokenizer keys, in the order their rows are concatenated
    encoder_names: str
    resolution: int  # the family's native training resolution (the training default)
    checkpoint: str  # the usual checkpoint file name, for workflows and docs

    @property
    def pooled_encoder(self) -> str:
        """The encoder whose pooled vector ComfyUI returns with the rows (SDXL's ADM input, CLIP-T's text
        embedding): the last one (SDXL: bigG)."""
        return self.encoders[-1]


SD1 = ModelFamily("sd1", "SD1.x", 768, ("l",), "CLIP-L", 512, "v1-5-pruned-emaonly.safetensors")
SD2 = ModelFamily("sd2", "SD2.x", 1024, ("h",), "OpenCLIP-H", 768, "v2-1_768-ema-pruned.safetensors")
SDXL = ModelFamily("sdxl", "SDXL", 2048, ("l", "g"), "CLIP-L + OpenCLIP bigG", 1024, "sd_xl_base_1.0.safetensors")
FAMILIES = {f.key: f for f in (SD1, SD2, SDXL)}
REFERENCE = SD2  # the family of the paper and of the authors' .pt files


def family_named(key: str) -> ModelFamily:
    """The family recorded as ``key`` in a residual file; ModelFamilyError for an unknown one."""
    family = FAMILIES.get(key)
    if family is None:
        known = ", ".join(f"{f.key} ({f.label})" for f in FAMILIES.values())
        raise ModelFamilyError(f"unknown model family {key!r}; this pack knows {known}")
    return family


def family_of_width(width: int) -> ModelFamily | None:
    """The family whose conditioning rows are ``width`` wide, or None."""
    return next((f for f in FAMILIES.values() if f.width == width), None)


def check_same_family(residual: ModelFamily, model: ModelFamily, what: str) -> None:
    """Raise ModelFamilyError unless a residual of ``residual``'s family can be used with ``model``'s."""
    if residual != model:
        raise ModelFamilyError(
            f"{what} is an {residual.label} residual ({residual.width} wide, trained with {residual.encoder_names}) "
            f"but the model is {model.label} ({model.width} wide, {model.encoder_names}). Residuals do not carry "
            f"over between families: train this subject again on an {model.label} checkpoint, or use an "
            f"{residual.label} checkpoint."
        )


FINGERPRINT_SAMPLES = 64  # values read per tensor: enough to tell two trainings' encoders apart, cheap on any size


def weights_fingerprint(named_tensors) -> str:
    """A short, cheap fingerprint of a set of weights: ``(name, tensor)`` pairs in any order.

    Per floating-point tensor it hashes the name, the shape and ``FINGERPRINT_SAMPLES`` evenly
    strided values rounded to fp16 (the same weights loaded as fp32 or fp16 agree), never all
    of it: a fine-tuned encoder changes every weight, and reading a few values of each tensor
    costs milliseconds where hashing a 1.4 GB encoder costs seconds. Equal fingerprints mean
    "very likely the same encoders", unequal ones "different weights" (or weights named otherwise).
    """
    import torch  # here: the family facts themselves need only the standard library (the workflow generator)

    digest = hashlib.sha256()
    for name, t in sorted(named_tensors, key=lambda nt: nt[0]):
        if not t.is_floating_point():
            continue
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
        sample = flat[::step][:FINGERPRINT_SAMPLES].to(device="cpu", dtype=torch.float32).to(torch.float16)
        digest.update(f"{name}:{list(t.shape)}:".encode())
        digest.update(repr(sample.view(torch.int16).tolist()).encode())
    return "w1:" + digest.hexdigest()[:16]
