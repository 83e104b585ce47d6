"""Colour-coded layouts (the authors' format): which pixels of an image belong to which colour.

The authors match each listed colour exactly. Drawn layouts have anti-aliased edges: their
example PNG holds hundreds of in-between pixels, (255,190,0) next to (255,192,0), or
(255,156,156) between red and the white background, that an exact match drops. Here a pixel
goes to:

1. the nearest palette colour (the listed colours and the background colours) when it is
   within ``tolerance`` of it (Euclidean distance in 0..255 RGB), else
2. when it lies within ``tolerance`` of the straight line between two palette colours (an
   anti-aliased blend of the two), the one of the two it is closer to along that line, else
3. nowhere: an unknown colour. Unknown pixels are background; when they make up more than
   ``UNKNOWN_LIMIT`` of the image, the map holds a region of a colour nobody listed, which is
   an error naming the colours.

``tolerance=0`` is the authors' exact match: only pixels of exactly a listed colour count,
blends are background. The work is done once per distinct colour, not per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .layout import DEFAULT_GAMMA, Layout, LayoutError, LayoutSubject, fit_mask, subject_key
from .layout_text import ColorEntry, LayoutTextError, format_color

DEFAULT_TOLERANCE = 24.0
DEFAULT_BACKGROUND = ((255, 255, 255),)
UNKNOWN_LIMIT = 0.01  # a larger share of unmatched pixels is an unlisted region, not edge blending
BLEND_SLACK = 1.0  # 8-bit rounding moves a blend up to ~0.87 off the line between its two colours

_CHUNK = 16384

UNKNOWN = -2
BACKGROUND = -1


@dataclass(frozen=True)
class ColorMatch:
    """Per pixel, the index of its colour entry, ``BACKGROUND`` or ``UNKNOWN``; ``[H, W]`` long."""

    labels: torch.Tensor
    unknown_colors: tuple[tuple[tuple[int, int, int], int], ...]  # (colour, pixels), most frequent first

    @property
    def unknown_share(self) -> float:
        return sum(n for _, n in self.unknown_colors) / self.labels.numel()


def to_rgb8(image: torch.Tensor) -> torch.Tensor:
    """An image ``[H, W, C]`` with values in 0..1 (ComfyUI's IMAGE) as int ``[H, W, 3]`` in 0..255."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise LayoutError(f"expected an image [height, width, channels] with 1, 3 or 4 channels, got "
                          f"{list(image.shape)}")
    rgb = image[..., :3] if image.shape[-1] != 1 else image.expand(*image.shape[:2], 3)
    return (rgb.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.int64)


def match_colors(rgb8: torch.Tensor, colors: Sequence[tuple[int, int, int]],
                 background: Sequence[tuple[int, int, int]] = DEFAULT_BACKGROUND,
                 tolerance: float = DEFAULT_TOLERANCE) -> ColorMatch:
    """Assign every pixel of ``rgb8`` (``[H, W, 3]`` ints 0..255) as the module docstring says."""
    height, width = rgb8.shape[:2]
    packed = (rgb8[..., 0] << 16) | (rgb8[..., 1] << 8) | rgb8[..., 2]
    distinct, inverse, counts = torch.unique(packed.flatten(), return_inverse=True, return_counts=True)
    pixels = torch.stack([(distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255], dim=1).double()

    palette_colors = [*colors, *(c for c in background if c not in colors)]
    palette = torch.tensor(palette_colors, dtype=torch.float64).reshape(-1, 3)
    ids = torch.tensor([*range(len(colors)), *[BACKGROUND] * (len(palette_colors) - len(colors))])
    label = torch.full((len(distinct),), UNKNOWN, dtype=torch.long)
    if len(palette):
        dist = torch.cdist(pixels, palette)  # [U, K]
        nearest_d, nearest = dist.min(dim=1)
        direct = nearest_d <= tolerance
        blend_to, on_line = _blends(pixels, palette, max(float(tolerance), BLEND_SLACK))
        on_line &= ~direct
        label = torch.where(direct, ids[nearest], label)
        if tolerance > 0:
            label = torch.where(on_line, ids[blend_to], label)
        else:  # the authors' exact match: blends are background, but not unknown
            label = torch.where(on_line, torch.full_like(label, BACKGROUND), label)

    unknown = (label == UNKNOWN).nonzero().flatten()
    order = unknown[torch.argsort(counts[unknown], descending=True, stable=True)]
    unknown_colors = tuple((tuple(int(v) for v in pixels[i].tolist()), int(counts[i])) for i in order)
    return ColorMatch(label[inverse].view(height, width), unknown_colors)


def _blends(pixels: torch.Tensor, palette: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For each colour: the palette index it is a blend towards, and whether it is a blend at all.

    A blend of palette colours ``a`` and ``b`` lies near the segment ``a``-``b``; it goes to
    whichever end is nearer along the segment (ties to the later palette entry).
    """
    k = len(palette)
    i, j = torch.triu_indices(k, k, offset=1)
    if len(i) == 0:
        return torch.zeros(len(pixels), dtype=torch.long), torch.zeros(len(pixels), dtype=torch.bool)
    if len(pixels) > _CHUNK:  # a photo has ~10^5 colours: bound the [U, pairs, 3] temporaries
        parts = [_blends(pixels[s:s + _CHUNK], palette, tolerance) for s in range(0, len(pixels), _CHUNK)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    a, ab = palette[i], palette[j] - palette[i]  # [P, 3]
    t = ((pixels[:, None, :] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)
    t = t.clamp(0, 1)  # [U, P]
    off = (pixels[:, None, :] - (a[None] + t[..., None] * ab[None])).norm(dim=-1)
    best_off, best = off.min(dim=1)
    best_t = t.gather(1, best[:, None])[:, 0]
    return torch.where(best_t < 0.5, i[best], j[best]), best_off <= tolerance


def describe_colors(rgb8: torch.Tensor, limit: int = 5) -> str:
    """The most frequent colours of an image with their shares, e.g. ``255,255,255 (66%), 255,0,0 (17%)``."""
    packed = ((rgb8[..., 0] << 16) | (rgb8[..., 1] << 8) | rgb8[..., 2]).flatten()
    distinct, counts = torch.unique(packed, return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)[:limit]
    total = packed.numel()
    return ", ".join(
        f"{format_color(_unpack(int(distinct[o])))} ({100 * int(counts[o]) / total:.1f}%)" for o in order)


def _unpack(v: int) -> tuple[int, int, int]:
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def layout_from_color_map(image: torch.Tensor, entries: Sequence[ColorEntry],
                          background: Sequence[tuple[int, int, int]] = DEFAULT_BACKGROUND,
                          tolerance: float = DEFAULT_TOLERANCE, gamma: float = DEFAULT_GAMMA,
                          base: Layout | None = None) -> Layout:
    """A layout with one mask subject per colour entry, from a colour-coded ``image`` ``[H, W, C]`` in 0..1.

    The canvas is the image's size, or ``base``'s canvas when chaining (the masks are then
    rescaled if the aspect ratio matches; see ``layout.fit_mask``).
    """
    if not entries:
        raise LayoutTextError("the colour mapping lists no colours; write one line per subject, e.g. "
                              "'255,192,0: mug 2.5'")
    for e in entries:
        if e.color in background:
            raise LayoutTextError(
                f"the colour {format_color(e.color)} of {e.label!r} is also a background colour; remove it from "
                "the background, or give the subject another colour")
    rgb8 = to_rgb8(image)
    height, width = rgb8.shape[:2]
    match = match_colors(rgb8, [e.color for e in entries], background, tolerance)
    if match.unknown_share > UNKNOWN_LIMIT:
        shown = ", ".join(f"{format_color(c)} ({100 * n / match.labels.numel():.1f}%)"
                          for c, n in match.unknown_colors[:3])
        raise LayoutTextError(
            f"{100 * match.unknown_share:.1f}% of the image is in colours the mapping does not list: {shown}. "
            f"Map them to a phrase (e.g. '{format_color(match.unknown_colors[0][0])}: <phrase>'), add them to "
            "the background colours, or raise the tolerance if they are shades of a listed colour")

    canvas_w, canvas_h = (base.width, base.height) if base is not None else (width, height)
    taken = {subject_key(s.phrase, s.occurrence) for s in base.subjects} if base is not None else set()
    subjects = list(base.subjects) if base is not None else []
    for index, e in enumerate(entries):
        mask = (match.labels == index).float()
        if not bool(mask.any()):
            raise LayoutTextError(
                f"the colour {format_color(e.color)} ({e.label!r}) is not in the image; its main colours are "
                f"{describe_colors(rgb8)}. Fix the colour, or raise the tolerance")
        key = subject_key(e.phrase, e.occurrence)
        if key in taken:
            raise LayoutTextError(
                f"{e.label!r} (colour {format_color(e.color)}) already has a region; one region per phrase "
                f"occurrence: write '{e.phrase} #{e.occurrence + 1}' for another one")
        taken.add(key)
        mask = fit_mask(mask, canvas_w, canvas_h, what="the colour map")
        subjects.append(LayoutSubject(e.phrase, e.occurrence, mask=mask,
                                      gamma=float(gamma if e.gamma is None else e.gamma)))
    return Layout(canvas_w, canvas_h, tuple(subjects))
