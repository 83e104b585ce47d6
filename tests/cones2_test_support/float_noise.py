"""How far apart two fp32 computations of the same value may land when only their shapes differ.

A batch of another shape can take another BLAS kernel, which sums in another order: each
element then differs by a few units in the last place (ulp) of its magnitude, never by a
real change. Tests that compare such results use these bounds instead of ``==``.
"""

from __future__ import annotations

import torch

FP32_EPS = torch.finfo(torch.float32).eps  # 1.19e-7: one ulp of a value of magnitude 1
REORDER_ULPS = 64  # a 24- or 32-layer encoder compounds a few ulps per layer; a real change is ~1e3x larger


def squared_error_bound(n_elements: int, rms: float = 1.0, ulps: int = REORDER_ULPS) -> float:
    """Largest ``sum((a - b)**2)`` over ``n_elements`` values of size ``rms`` that differ only by reordering."""
    return n_elements * (ulps * FP32_EPS * rms) ** 2


def norm_bound(n_elements: int, rms: float = 1.0, ulps: int = REORDER_ULPS) -> float:
    """Largest ``||a - b||_2`` over ``n_elements`` values of size ``rms`` that differ only by reordering."""
    return squared_error_bound(n_elements, rms, ulps) ** 0.5
