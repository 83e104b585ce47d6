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
    c = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(0, i - window)
    return ((c[i] - c[lo]) / (i - lo)).tolist()


def loss_plot_image(losses: dict[str, list[float]]) -> torch.Tensor:
    """``[1, H, W, 3]`` float image: the total loss per step (light), its moving average (dark), and the
    preservation term (orange, its own scale on the right) when there is one."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    total = [v for v in losses.get("loss", []) if np.isfinite(v)]
    left, top, right, bottom = MARGIN + 16, 24, WIDTH - MARGIN - 16, HEIGHT - MARGIN
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS, width=2)
    draw.text((left, 4), "Cones 2 training loss", fill=TEXT)
    if not total:
        draw.text((left + 20, (top + bottom) // 2), "no steps run", fill=TEXT)
        return _to_tensor(img)
    n = len(total)

    def scale(values, lo=None, hi=None):
        lo = min(values) if lo is None else lo
        hi = max(values) if hi is None else hi
        span = (hi - lo) or 1.0
        return lo, hi, [(left + (right - left) * (i / max(1, n - 1)), bottom - (bottom - top) * ((v - lo) / span))
                        for i, v in enumerate(values)]

    def plot(points, colour, width):
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        else:
            draw.line(points, fill=colour, width=width)

    pres = [v for v in losses.get("preservation", []) if np.isfinite(v)]
    if len(pres) == n and max(pres) > 0:
        p_lo, p_hi, p_pts = scale(pres)
        plot(p_pts, PRESERVATION, 1)
        draw.line([(right, top), (right, bottom)], fill=PRESERVATION, width=1)
        draw.text((right + 4, top - 6), f"{p_hi:.3g}", fill=PRESERVATION)
        draw.text((right + 4, bottom - 8), f"{p_lo:.3g}", fill=PRESERVATION)
    smoothed = smooth(total, max(1, n // 50))
    lo, hi, raw_pts = scale(total)
    _, _, smooth_pts = scale(smoothed, lo, hi)  # a moving average stays within the raw range
    plot(raw_pts, RAW, 1)
    plot(smooth_pts, SMOOTH, 2)
    draw.text((4, top - 6), f"{hi:.4g}", fill=TEXT)
    draw.text((4, bottom - 8), f"{lo:.4g}", fill=TEXT)
    draw.text((left, bottom + 8), "1", fill=TEXT)
    draw.text((right - 40, bottom + 8), f"{n} steps", fill=TEXT)
    legend = "loss (blue: moving average)" + ("; preservation term (orange, right scale)" if pres else "")
    draw.text((left + 60, bottom + 26), legend, fill=TEXT)
    return _to_tensor(img)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
