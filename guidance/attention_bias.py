"""The layout bias M of Cones 2 layout guidance, per cross-attention layer (method.md §3).

For a layer with an ``h x w`` grid and a prompt of ``L`` tokens, ``M`` is ``[h*w, L]``: the
columns of subject ``s``'s tokens hold ``s``'s map, every other column is 0. A subject's
map is γ+ inside its own region and γ− where it is suppressed; where that is depends on
the suppression scope:

- ``OUTSIDE_OWN_REGION`` (the official code, the default): γ− everywhere outside the
  subject's own region, background included. (``layout_guidance.py`` builds
  ``where(own, γ+, γ−)`` and then a ``where(... & init == 0, γ−, init)`` that never fires,
  because ``init`` is never 0.)
- ``OTHER_SUBJECTS`` (the paper's text): γ− only inside other subjects' regions (and not
  in its own), 0 on the background.

Regions are rasterised by ``Layout.region_masks`` as binary masks at the layer's grid and
composed here, so γ− never bleeds across region borders. When the conditioning is tiled
to ``T = r * L`` tokens (ComfyUI repeats a shorter prompt to the batch's LCM length), the
bias of token ``p`` repeats at ``p + r' * L``; softmax over the repeated keys then equals
softmax over the untiled ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch


class SuppressionScope(str, Enum):
    """Where a subject's tokens get γ−."""

    OUTSIDE_OWN_REGION = "outside own region (official)"
    OTHER_SUBJECTS = "other subjects' regions (paper)"


def subject_maps(regions: torch.Tensor, gammas: Sequence[float], suppression: float,
                 scope: SuppressionScope) -> torch.Tensor:
    """Each subject's map over the grid, ``[S, h*w]`` float32.

    ``regions``: binary ``[S, h, w]`` masks (``Layout.region_masks``); ``gammas``: γ+ per
    subject; ``suppression``: γ−. A cell in a subject's own region always gets its γ+, even
    where another region overlaps it.
    """
    own = regions.flatten(1).bool()
    gamma = torch.as_tensor(list(gammas), dtype=torch.float32, device=own.device)[:, None]
    negative = torch.tensor(float(suppression), dtype=torch.float32, device=own.device)
    if scope is SuppressionScope.OUTSIDE_OWN_REGION:
        return torch.where(own, gamma, negative)
    others = (own.sum(0, keepdim=True) - own.int()) > 0  # covered by some other subject
    zero = torch.zeros((), dtype=torch.float32, device=own.device)
    return torch.where(own, gamma, torch.where(others, negative, zero))


def token_columns(token_rows: Sequence[Sequence[int]], length: int, device=None) -> torch.Tensor:
    """One-hot assignment ``[S, length]`` float32: 1 where token ``t`` belongs to subject ``s``."""
    assign = torch.zeros(len(token_rows), length, dtype=torch.float32, device=device)
    for s, rows in enumerate(token_rows):  # one entry per subject, not per token
        if rows:
            assign[s, torch.as_tensor(list(rows), dtype=torch.long, device=device)] = 1.0
    return assign


def bias_matrix(maps: torch.Tensor, token_rows: Sequence[Sequence[int]], length: int,
                total_length: int | None = None) -> torch.Tensor:
    """``M``, ``[h*w, total_length]`` float32: subject maps placed at their tokens' columns.

    ``length`` is the prompt's own token count ``L``; ``total_length`` (default ``L``) the
    tiled length of the batched conditioning, a multiple of ``L``.
    """
    total_length = length if total_length is None else total_length
    if total_length % length:
        raise ValueError(f"the conditioning has {total_length} tokens, not a multiple of the prompt's {length}")
    for rows in token_rows:
        if any(not 0 <= r < length for r in rows):
            raise ValueError(f"token rows {tuple(rows)} fall outside the prompt's {length} tokens")
    assign = token_columns(token_rows, length, device=maps.device)
    # Token rows of different subjects are disjoint (checked when they are resolved), so each
    # column of the product holds exactly one subject's map (0 * γ− is an exact 0).
    m = maps.t() @ assign if maps.shape[0] else maps.new_zeros(maps.shape[1], length)
    return m.repeat(1, total_length // length)


def finite_floor(dtype: torch.dtype) -> float:
    """The most negative mask value used for ``dtype``: far below any logit, never -inf.

    γ− = −1e8 times η overflows fp16 (max 65504) to -inf; a quarter of the dtype's range keeps
    ``logits + mask`` finite while exp() of it is exactly 0.
    """
    return -torch.finfo(dtype).max / 4 if dtype.is_floating_point else -1e4
