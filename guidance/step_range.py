"""Which sampling steps are guided: the σ range and the start/end percents it comes from."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepRange:
    """The guided part of sampling, as σ bounds (ComfyUI's start/end percent convention).

    A step at noise level σ is guided when ``sigma_end < σ <= sigma_start``. The bounds come
    from the model's ``percent_to_sigma(start_percent)`` / ``(end_percent)``, as for core's
    ControlNet and timestep-range nodes; ``end`` is exclusive so that a range ending where
    the next one starts guides each step once.
    """

    sigma_start: float = math.inf
    sigma_end: float = 0.0

    def guides(self, sigma: float) -> bool:
        return self.sigma_end < float(sigma) <= self.sigma_start


def check_percents(start_percent: float, end_percent: float) -> None:
    """Raise ValueError unless ``0 <= start < end <= 1``."""
    if not 0.0 <= start_percent < end_percent <= 1.0:
        raise ValueError(
            f"start_percent {start_percent} and end_percent {end_percent}: guidance needs "
            "0 <= start_percent < end_percent <= 1 (0 = the first step, 1 = the end)"
        )
