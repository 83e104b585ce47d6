"""Tests that need more memory than the machine has free skip, saying so, instead of being killed."""

from __future__ import annotations

import pytest

SDXL_TRAINING_GIB = 16  # a 2-step SDXL (Vega, real CLIP-L + bigG) training run peaked at 15.5 GB on the CPU


def require_free_memory(gib: float, what: str) -> None:
    """Skip, saying why, unless the machine has ``gib`` GiB available now (Linux MemAvailable): a run the
    kernel kills for memory takes every test that shares its process down with it."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    except OSError:
        return
    available = info.get("MemAvailable", 0) / 2**20
    if available < gib:
        pytest.skip(f"{what} needs about {gib} GiB of free memory; {available:.1f} GiB is available now")
