"""Adding subject residuals to an encoded prompt (the paper's Eq. 6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .prompt_tokens import PromptTokens


class ResidualPlacementError(ValueError):
    """A binding that cannot be placed on the prompt."""


@dataclass(frozen=True)
class ResidualBinding:
    """One residual bound to one occurrence of a phrase in the prompt."""

    name: str  # the residual's file name, for messages and the token map
    residual: torch.Tensor  # [n_tokens, width of its model family]
    phrase: str
    occurrence: int = 1
    strength: float = 1.0
    base_model: str = "sd2"  # the residual's model family (training/model_families.py keys)
    text_encoders: str | None = None  # fingerprint of the encoders it was trained with, when recorded


@dataclass(frozen=True)
class Placement:
    """Where a binding landed: recorded in the CONDITIONING for layout guidance and inspection."""

    name: str
    phrase: str
    occurrence: int
    rows: tuple[int, ...]
    strength: float


def locate_bindings(tokens: PromptTokens, bindings: Sequence[ResidualBinding]) -> list[Placement]:
    """Resolve each binding to its rows; raise PhraseNotFoundError / ResidualPlacementError."""
    placements = []
    for b in bindings:
        rows = tokens.occurrence(b.phrase, b.occurrence)
        n = int(b.residual.shape[0])
        if n != len(rows):
            raise ResidualPlacementError(
                f"residual {b.name!r} has {n} token row(s) but the phrase {b.phrase!r} is {len(rows)} token(s) "
                "long in this prompt. Bind it to the phrase it was trained on (its subject)."
            )
        placements.append(Placement(b.name, b.phrase, b.occurrence, rows, float(b.strength)))
    return placements


def add_residuals(cond: torch.Tensor, placements: Sequence[Placement],
                  residuals: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return ``cond`` (``[B, T, width]``) with ``strength * residual`` added at each placement's rows.

    Row ``i`` of a residual goes to the phrase's ``i``-th token. ``cond`` is never modified.
    Two bindings on the same rows add up.
    """
    out = cond.clone()
    for p, delta in zip(placements, residuals, strict=True):
        rows = torch.tensor(p.rows, device=cond.device)
        if int(rows.max()) >= cond.shape[1]:
            raise ResidualPlacementError(
                f"residual {p.name!r} maps to row {int(rows.max())}, past the conditioning's {cond.shape[1]} rows"
            )
        update = (delta.to(device=cond.device, dtype=torch.float32) * p.strength).to(cond.dtype)
        out.index_add_(1, rows, update.unsqueeze(0).expand(cond.shape[0], -1, -1))
    return out
