"""Which Cones 2 model family a ComfyUI MODEL or CLIP belongs to, read from the objects themselves.

The MODEL's family comes from the host's detected model config (``comfy.supported_models``:
SD15, SD20 and SDXL, with their subclasses such as SD2.1 768-v, SSD-1B, Segmind Vega and
KOALA); the CLIP's from the tokenizers it runs (``l``; ``h``; ``g`` + ``l``). Never from a file
name. Anything else (SD3, Flux, other DiTs, the SDXL refiner) gets a message naming what it is.
"""

from __future__ import annotations

import comfy.supported_models as supported

from ..training.model_families import (
    FAMILIES,
    SD1,
    SD2,
    SDXL,
    ModelFamily,
    ModelFamilyError,
    weights_fingerprint,
)

_CONFIGS = ((supported.SDXL, SDXL), (supported.SD20, SD2), (supported.SD15, SD1))  # subclasses first


def _supported_names() -> str:
    return ", ".join(f"{f.label} ({f.encoder_names})" for f in FAMILIES.values())


def model_family(model) -> ModelFamily:
    """The family of a MODEL (ModelPatcher); ModelFamilyError naming the model's kind otherwise."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    for cls, family in _CONFIGS:
        if isinstance(config, cls):
            return family
    kind = type(config).__name__ if config is not None else type(getattr(model, "model", model)).__name__
    raise ModelFamilyError(
        f"the MODEL is {kind}, which Cones 2 cannot use: it needs an SD-style UNet with text "
        f"cross-attention of one of these families: {_supported_names()}. Load such a checkpoint with "
        "CheckpointLoaderSimple."
    )


def clip_family(clip) -> ModelFamily:
    """The family of a CLIP from the tokenizers and encoders it runs; ModelFamilyError naming them otherwise.

    Both count: the SDXL refiner's CLIP tokenizes for ``g`` and ``l`` but encodes with bigG alone."""
    tokenized = sorted(clip.tokenize("").keys())
    model = getattr(clip, "cond_stage_model", None)
    keys = tuple(k for k in tokenized if getattr(model, f"clip_{k}", None) is not None)
    for family in FAMILIES.values():
        if keys == tuple(tokenized) == tuple(sorted(family.encoders)):
            return family
    raise ModelFamilyError(
        f"this CLIP runs the text encoders {list(keys)}, which Cones 2 cannot use; it needs the CLIP of an "
        f"{' / '.join(f.label for f in FAMILIES.values())} checkpoint ({_supported_names()})."
    )


def matching_family(model, clip) -> ModelFamily:
    """The family of a MODEL and its CLIP, which must agree."""
    m, c = model_family(model), clip_family(clip)
    if m != c:
        raise ModelFamilyError(
            f"the MODEL is {m.label} but the CLIP is {c.label}'s ({c.encoder_names}); connect the CLIP "
            "of the same checkpoint."
        )
    return m


# Not part of what the conditioning rows are made of: the pooled projection (a checkpoint's file may
# lack CLIP-L's, which then keeps its initial value) and the contrastive temperature.
_NOT_ROWS = ("text_projection", "logit_scale")


def text_encoder_fingerprint(clip) -> str:
    """The fingerprint (``weights_fingerprint``) of a CLIP's text encoders, as a residual file records it.

    The one place it is computed, at training and when a residual is applied: the encoders'
    own weights (patches such as a LoRA's are not applied to them: the backup the host keeps
    while they are patched in place is read instead), without ``_NOT_ROWS``.
    """
    patcher = getattr(clip, "patcher", None)
    backup = getattr(patcher, "backup", None) or {}
    weights = []
    for name, t in clip.cond_stage_model.state_dict().items():
        if any(part in name for part in _NOT_ROWS):
            continue
        saved = backup.get(name)
        weights.append((name, saved.weight if saved is not None else t))
    return weights_fingerprint(weights)
