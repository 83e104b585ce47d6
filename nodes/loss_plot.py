"""The training loss curve as a ComfyUI IMAGE (drawn with PIL, which ComfyUI ships)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 640, 360, 48
RAW, SMOOTH, PRESERVATION, AXIS, TEXT = (170, 200, 240), (30, 90, 200), (230, 140, 30), (60, 60, 60), (20, 20, 20)


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists)."""
    if not values:
        return []
    c = np.cumsum(np.asarray(values, dtype=np.float64))
    out = []
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out.append((c[i] - (c[lo - 1] if lo else 0.0)) / (i + 1 - lo))
    return out


def loss_plot_image(losses: dict[str, list[float]]) -> torch.Tensor:
    """``[1, H, W, 3]`` float image: the total loss per step (light), its moving average (dark), the
    preservation term (orange) when there is one; min/max and step labels."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    total = [v for v in losses.get("loss", []) if np.isfinite(v)]
    left, top, right, bottom = MARGIN + 16, 24, WIDTH - 16, HEIGHT - MARGIN
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS, width=2)
    draw.text((left, 4), "Cones 2 training loss", fill=TEXT)
    if not total:
        draw.text((left + 20, (top + bottom) // 2), "no steps run", fill=TEXT)
        return _to_tensor(img)
    series = [(total, RAW, 1), (smooth(total, max(1, len(total) // 50)), SMOOTH, 2)]
    pres = [v for v in losses.get("preservation", []) if np.isfinite(v)]
    if pres and max(pres) > 0:
        series.append((pres, PRESERVATION, 1))
    lo = min(min(s) for s, _, _ in series)
    hi = max(max(s) for s, _, _ in series)
    span = (hi - lo) or 1.0
    n = len(total)

    def xy(i, v):
        x = left + (right - left) * (i / max(1, n - 1))
        y = bottom - (bottom - top) * ((v - lo) / span)
        return x, y

    for values, colour, width in series:
        pts = [xy(i, v) for i, v in enumerate(values)]
        if len(pts) == 1:
            x, y = pts[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        else:
            draw.line(pts, fill=colour, width=width)
    draw.text((4, top - 6), f"{hi:.4g}", fill=TEXT)
    draw.text((4, bottom - 8), f"{lo:.4g}", fill=TEXT)
    draw.text((left, bottom + 8), "1", fill=TEXT)
    draw.text((right - 40, bottom + 8), f"{n} steps", fill=TEXT)
    legend = "loss, moving average" + (", preservation" if len(series) == 3 else "")
    draw.text((left + 120, bottom + 26), legend, fill=TEXT)
    return _to_tensor(img)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
