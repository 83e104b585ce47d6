"""The residual of Eq. 5: the mean shift of the subject's rows from the original to the tuned encoder."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .prompt_ids import PromptBatch

Encode = Callable[[torch.Tensor], torch.Tensor]  # ids [N, T] -> [N, T, D]


def gather_subject_rows(encoded: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
    """``[N, n_subject, D]``: each prompt's subject rows of ``encoded`` ``[N, T, D]``."""
    rows = prompts.subject_rows().to(encoded.device)
    return torch.gather(encoded, 1, rows[..., None].expand(-1, -1, encoded.shape[-1]))


@torch.no_grad()
def encode_subject_rows(encode: Encode, prompts: PromptBatch, *, device=None, chunk: int = 64,
                        between: Callable[[], None] | None = None,
                        encoded: Callable[[int], None] | None = None) -> torch.Tensor:
    """The subject rows ``[N, n_subject, D]`` (float32, on ``device``) of every prompt, encoded in chunks.

    After each chunk: ``encoded(number of prompts in it)`` (progress), then ``between()`` (a cancel check)."""
    out = []
    for i in range(0, len(prompts), chunk):
        part = prompts.select(range(i, min(i + chunk, len(prompts))))
        enc = encode(part.ids.to(device))
        out.append(gather_subject_rows(enc, part).float())
        if encoded:
            encoded(len(part))
        if between:
            between()
    return torch.cat(out)


def residual_from_rows(tuned_rows: torch.Tensor, frozen_rows: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``mean over sentences of (E_custom(c)_s - E(c)_s)``, ``[n_subject, D]``."""
    return (tuned_rows.float() - frozen_rows.float()).mean(dim=0)
