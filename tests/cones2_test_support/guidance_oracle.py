"""The one test oracle of layout guidance: the bias M cell by cell, and the authors' formula in float64.

Written out the slow, obvious way from the method (design/method.md, the authors'
layout_guidance.py and attention_control.py), never from the pack's code, so unit and
integration tests compare the pack against the same independent statement.
"""

from __future__ import annotations

import math

import torch
from cones2.guidance.attention_bias import SuppressionScope
from cones2.guidance.strength import SigmaSchedule


def oracle_bias(layout, rows, h, w, length, suppression, scope):
    """M[y*w + x, t] cell by cell and token by token: γ+ inside the subject's region; γ− outside it
    (official scope) or only inside another subject's region (paper scope); 0 elsewhere. ``scope`` may
    also come from the pack as ComfyUI loaded it (another copy of the enum): it is read by value."""
    official = SuppressionScope(getattr(scope, "value", scope)) is SuppressionScope.OUTSIDE_OWN_REGION
    regions = layout.region_masks(h, w)
    m = torch.zeros(h * w, length)
    for s, subject in enumerate(layout.subjects):
        for t in rows[s]:
            for y in range(h):
                for x in range(w):
                    if regions[s, y, x]:
                        value = subject.gamma
                    elif official:
                        value = suppression
                    elif any(regions[o, y, x] for o in range(len(layout.subjects)) if o != s):
                        value = suppression
                    else:
                        value = 0.0
                    m[y * w + x, t] = value
    return m


def official_attention(q, k, v, heads, m, sigma, weight, schedule=SigmaSchedule.OFFICIAL, std_tokens=None):
    """``softmax((S + w·M·log(1+σ²)·std(S))·d^-½)·V`` for one image (``q`` ``[N, C]``, ``k``/``v`` ``[T, C]``).

    ``M`` ``[N, L]`` is repeated along the tokens when ``T`` is a multiple of ``L`` (ComfyUI tiles a shorter
    prompt). ``std(S)`` is over all heads and the first ``std_tokens`` tokens (default: all). The other
    schedules drop a factor: ``LOG_SIGMA`` the std, ``CONSTANT`` the σ term.
    """
    schedule = SigmaSchedule(getattr(schedule, "value", schedule))
    c = q.shape[-1]
    d = c // heads
    qh, kh, vh = (t.double().reshape(-1, heads, d).transpose(0, 1) for t in (q, k, v))
    s = qh @ kh.transpose(-1, -2)
    m = m.double().repeat(1, s.shape[-1] // m.shape[-1])
    sigma_term = 1.0 if schedule is SigmaSchedule.CONSTANT else math.log1p(float(sigma) ** 2)
    std_term = 1.0 if schedule is SigmaSchedule.LOG_SIGMA else s[..., :std_tokens].std()
    p = ((s + weight * m * sigma_term * std_term) * d**-0.5).softmax(-1)
    return (p @ vh).transpose(0, 1).reshape(-1, c)
