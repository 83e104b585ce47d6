"""How strongly the layout bias acts: η(σ, std(S)) and the logits' std it scales with.

Official (``layout_guidance.py``): ``bias = w · M · log(1 + σ²) · std(S)`` with ``S = Q·Kᵀ``
per head, unscaled, and ``std`` over the whole logits tensor of the conditional pass
(``torch.std``: unbiased). Alternatives, for experiments: drop the std factor (η then has
absolute units, so ``w`` needs retuning per model), or drop the σ factor (constant strength).
"""

from __future__ import annotations

from enum import Enum

import torch


class SigmaSchedule(str, Enum):
    """η as a function of the noise level σ and the logits' std."""

    OFFICIAL = "log(1+sigma^2)*std (official)"
    LOG_SIGMA = "log(1+sigma^2)"
    CONSTANT = "std (constant over steps)"

    @property
    def uses_std(self) -> bool:
        return self is not SigmaSchedule.LOG_SIGMA


def eta(schedule: SigmaSchedule, weight: float, sigma: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    """η per image, ``[B]`` float32: the factor that multiplies ``M`` (the one definition of η).

    ``sigma``: ``[B]`` noise levels (k-diffusion σ; one value broadcasts over the batch);
    ``std``: ``[B]`` logits std, or None when the schedule does not use it.
    """
    sigma = sigma.float()
    if schedule is SigmaSchedule.CONSTANT:
        out = torch.full_like(sigma, float(weight))
    else:
        out = weight * torch.log1p(sigma * sigma)
    if schedule.uses_std:
        out = out * std.float().to(out.device)
    return out


def logit_std(q: torch.Tensor, k: torch.Tensor, heads: int, method: str = "auto") -> torch.Tensor:
    """Unbiased std of ``S = Q·Kᵀ`` over heads, queries and keys, per batch element, ``[B]``.

    ``q``: ``[B, N, heads*d]``, ``k``: ``[B, L, heads*d]`` (projected, heads not split).
    ``method``: "gram" never materialises ``S`` (see ``logit_std_gram``), "direct" computes
    ``S`` (``B·heads·N·L`` floats, a few MB per layer) and ``torch.std``; "auto" takes gram
    on the CPU, where it is cheaper, and direct elsewhere, where it is 3 kernels instead of
    about 20 small ones.
    """
    if method == "auto":
        method = "gram" if q.device.type == "cpu" else "direct"
    if method == "gram":
        return logit_std_gram(q, k, heads)
    if method == "direct":
        return logit_std_direct(q, k, heads)
    raise ValueError(f"unknown std method {method!r}")


def logit_std_direct(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """``logit_std`` by materialising ``S`` in float32."""
    b, n, c = q.shape
    d = c // heads
    qh = q.float().view(b, n, heads, d).transpose(1, 2)
    kh = k.float().view(b, k.shape[1], heads, d).transpose(1, 2)
    return (qh @ kh.transpose(-1, -2)).reshape(b, -1).std(dim=1)


def logit_std_gram(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """``logit_std`` without materialising ``S``.

    With ``Q̃ = Q − q̄`` (queries centred per head),
    ``Σ(S_h − μ_h)² = ⟨Q̃ᵀQ̃, KᵀK⟩_F + N·Σ_j (q̄·(k_j − k̄))²`` (the cross term vanishes since
    ``Σ_i q̃_i = 0``), then the heads' sums combine with their means' spread. Every term is
    a sum of squares, so there is no cancellation; cost ``O(N·d²)`` per head, like ``Q·Kᵀ``
    itself but with a ``d x d`` result instead of ``N x L``.
    """
    b, n, c = q.shape
    length = k.shape[1]
    d = c // heads
    qf = q.float().view(b, n, heads, d).transpose(1, 2)  # [B, H, N, d]
    kf = k.float().view(b, length, heads, d).transpose(1, 2)  # [B, H, L, d]
    q_mean = qf.mean(2, keepdim=True)  # [B, H, 1, d]
    k_mean = kf.mean(2, keepdim=True)
    head_mean = (q_mean * k_mean).sum(-1).squeeze(-1)  # [B, H]: mean of S_h
    qc = qf - q_mean
    gram_q = qc.transpose(-1, -2) @ qc  # [B, H, d, d]
    gram_k = kf.transpose(-1, -2) @ kf
    spread_q = (gram_q * gram_k).sum((-1, -2))  # Σ_ij (q̃_i · k_j)²
    proj = (q_mean @ (kf - k_mean).transpose(-1, -2)).squeeze(-2)  # [B, H, L]: q̄ · (k_j − k̄)
    spread_k = n * (proj * proj).sum(-1)
    mean = head_mean.mean(1, keepdim=True)
    total = (spread_q + spread_k).sum(1) + n * length * ((head_mean - mean) ** 2).sum(1)
    count = heads * n * length
    return torch.sqrt(total.clamp(min=0) / max(count - 1, 1))
