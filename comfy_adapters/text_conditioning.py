"""A prompt encoded exactly as CLIPTextEncode encodes it, on every model family, with subject residuals added.

Where each word sits (``PromptTokens``) is read from the host's own tokenization. SD1.x's
``l`` tokenizer pads with the end token and SD2.x's ``h`` with id 0; both are read up to each
chunk's first end token (``content_tokens``). SDXL runs two tokenizers, ``l`` (padded with
the end token) and ``g`` (padded with 0), over the same text: their chunks share positions,
and ComfyUI concatenates their outputs row by row (CLIP-L's 768 columns, then bigG's 1280),
so one token map serves both; it is built from each and the two must agree. A residual covers
the whole conditioning row (``ModelFamily.width``). SDXL's pooled vector (the ADM input) is
left as the host makes it: training sees the frozen encoder's pooled vector too (docs/families.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..guidance import conditioning_keys
from ..guidance.prompt_tokens import PromptTokens
from ..guidance.residual_placement import ResidualBinding, add_residuals, locate_bindings
from ..training.model_families import ModelFamily, check_same_family, family_named
from .model_families import clip_family, text_encoder_fingerprint

log = logging.getLogger(__name__)


class TextConditioningError(RuntimeError):
    """The CLIP did not tokenize or encode as its family does (a host change, or a CLIP of another kind)."""


def token_map(clip, tokens: dict, family: ModelFamily) -> PromptTokens:
    """Where every content token of ``tokens`` (``clip.tokenize``'s output) sits in the conditioning rows.

    Built from each of the family's tokenizers; for SDXL ``l`` and ``g`` must agree."""
    maps = []
    for key in family.encoders:
        tokenizer = getattr(clip.tokenizer, f"clip_{key}", None)
        if tokenizer is None or key not in tokens:
            raise TextConditioningError(
                f"this CLIP has no '{key}' tokenizer, which {family.label} uses ({family.encoder_names}); "
                "load the CLIP of the same checkpoint with CheckpointLoaderSimple.")
        maps.append((key, PromptTokens.from_chunks(tokens[key], lambda i, t=tokenizer: t.inv_vocab.get(i, ""),
                                                   tokenizer.start_token, tokenizer.end_token)))
    (first_key, first), *others = maps
    for key, other in others:
        if other != first:
            raise TextConditioningError(
                f"{family.label}'s tokenizers '{first_key}' and '{key}' split this prompt differently "
                f"({first.preview()} vs {other.preview()}), so their rows do not line up; this happens with "
                "an embedding:NAME that has vectors for one encoder only: use one made for both.")
    return first


def check_families(bindings: Sequence[ResidualBinding], family: ModelFamily) -> None:
    """ModelFamilyError (naming both families and widths) for a binding of another family than ``family``."""
    for b in bindings:
        check_same_family(family_named(b.base_model), family, f"residual {b.name!r}")


def warn_other_encoders(clip, bindings: Sequence[ResidualBinding], node: str) -> list[str]:
    """Log (never refuse) each residual trained with other text encoders than ``clip``'s; the messages."""
    recorded = [b for b in bindings if b.text_encoders]
    if not recorded:
        return []
    current = text_encoder_fingerprint(clip)
    messages = [
        f"{node}: residual {b.name!r} was trained with other text encoders (fingerprint {b.text_encoders}) than "
        f"this CLIP's ({current}), e.g. a fine-tuned checkpoint's; it is applied anyway, but the subject may "
        "look less like itself. Train it on this checkpoint for the best match."
        for b in recorded if b.text_encoders != current
    ]
    for m in messages:
        log.warning(m)
    return messages


def encode_with_residuals(clip, text: str, bindings: Sequence[ResidualBinding], node: str) -> list:
    """``CLIPTextEncode``'s CONDITIONING of ``text`` with each binding's residual added at its phrase's rows.

    Raises ModelFamilyError (a CLIP or residual of another family), PhraseNotFoundError /
    ResidualPlacementError (a binding's phrase), TextConditioningError (an unexpected encoding).
    """
    family = clip_family(clip)
    check_families(bindings, family)
    tokens = clip.tokenize(text)
    prompt_tokens = token_map(clip, tokens, family)
    placements = locate_bindings(prompt_tokens, bindings)
    warn_other_encoders(clip, bindings, node)

    conditioning = clip.encode_from_tokens_scheduled(tokens)
    residuals = [b.residual for b in bindings]
    extra = {conditioning_keys.PROMPT_TOKENS: prompt_tokens.to_json()}
    out = []
    for cond, meta in conditioning:
        if cond.shape[-1] != family.width or cond.shape[1] != prompt_tokens.length:
            raise TextConditioningError(
                f"the encoder returned rows of shape {list(cond.shape[1:])} for {prompt_tokens.length} tokens; "
                f"{family.label}'s CLIP gives {family.width}-wide rows, one per token. This CLIP does not "
                f"encode like {family.label}'s: use the CLIP of the same checkpoint.")
        new_cond = add_residuals(cond, placements, residuals) if placements else cond
        out.append([new_cond, {**meta, **extra}])  # pooled_output (SDXL's ADM input) as the host made it
    return out
