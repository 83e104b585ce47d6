"""The official "self-recurrence": on guided steps, step, re-noise back to σ_i, step again.

``layout_guidance.py`` does, for each guided step ``i``: ``x ← step(x, σ_i → σ_{i+1})``,
``x ← x + sqrt(σ_i² − σ_{i+1}²)·ε``, ``x ← step(x, σ_i → σ_{i+1})`` (two UNet passes). The
paper does not mention it. Here a sampling run is cut into segments: each guided step is a
segment run twice with the re-noise between, consecutive unguided steps form one segment
run once. A sampler is then called once per segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """Steps ``start .. end-1`` (sigmas ``start .. end``), run ``passes`` times."""

    start: int
    end: int
    passes: int = 1


def plan_segments(sigmas: Sequence[float], guided: Callable[[float], bool], passes: int = 2) -> list[Segment]:
    """Cut a run with ``len(sigmas) - 1`` steps into segments; step ``i`` is guided if ``guided(σ_i)``."""
    steps = len(sigmas) - 1
    out: list[Segment] = []
    i = 0
    while i < steps:
        if guided(sigmas[i]):
            out.append(Segment(i, i + 1, passes))
            i += 1
            continue
        j = i + 1
        while j < steps and not guided(sigmas[j]):
            j += 1
        out.append(Segment(i, j, 1))
        i = j
    return out


def renoise_scale(sigma_from: float, sigma_to: float) -> float:
    """``sqrt(σ_from² − σ_to²)``: the noise that brings a sample at σ_to back to σ_from."""
    return math.sqrt(max(float(sigma_from) ** 2 - float(sigma_to) ** 2, 0.0))
