"""Layouts: where each subject goes, as boxes or masks on a canvas, and their rasterisation.

A layout is the value of the CONES2_LAYOUT type. Regions are kept at full image
resolution (a box in pixels, or a mask at canvas size) and rasterised per attention layer
by ``Layout.region_masks(h, w)``: a binary mask per subject at the layer's grid, made from
area coverage, so nothing bleeds across region borders (the authors bilinearly resize
their ±1e8 weight maps, which smears the suppression value over the border).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

DEFAULT_GAMMA = 2.5  # γ+, the official and paper default


class LayoutError(ValueError):
    """A layout that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Box:
    """A rectangle in canvas pixels, top-left origin (GLIGEN / ConditioningSetArea conventions)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class LayoutSubject:
    """One subject: the phrase occurrence it belongs to, its region, and its γ+."""

    phrase: str
    occurrence: int = 1
    box: Box | None = None
    mask: torch.Tensor | None = None  # [canvas_h, canvas_w] float in 0..1 (> 0.5 = inside)
    gamma: float = DEFAULT_GAMMA

    @property
    def label(self) -> str:
        return self.phrase if self.occurrence == 1 else f"{self.phrase} #{self.occurrence}"


@dataclass(frozen=True, eq=False)
class Layout:
    """A canvas size and the subjects placed on it."""

    width: int
    height: int
    subjects: tuple[LayoutSubject, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.width < 8 or self.height < 8:
            raise LayoutError(f"the canvas is {self.width}x{self.height}; it must be at least 8x8 pixels")
        for s in self.subjects:
            _check_subject(s, self.width, self.height)

    def add(self, subject: LayoutSubject) -> Layout:
        """A new layout with ``subject`` appended (layouts are immutable: node outputs are shared)."""
        return replace(self, subjects=(*self.subjects, subject))

    def region_masks(self, height: int, width: int) -> torch.Tensor:
        """Binary masks ``[S, height, width]`` of every subject's region on a ``height x width`` grid.

        A grid cell is inside when at least half of its area is covered. A region too small to
        cover half of any cell keeps its best-covered cell(s), so no subject vanishes at the
        coarsest layers.
        """
        if not self.subjects:
            return torch.zeros(0, height, width, dtype=torch.bool)
        coverage = torch.stack([self._coverage(s, height, width) for s in self.subjects])
        inside = coverage >= 0.5
        empty = ~inside.flatten(1).any(dim=1)
        if empty.any():
            best = coverage.flatten(1).amax(dim=1, keepdim=True)
            fallback = (coverage.flatten(1) >= best - 1e-6).view_as(coverage) & (coverage > 0)
            inside = torch.where(empty[:, None, None], fallback, inside)
        return inside

    def _coverage(self, subject: LayoutSubject, height: int, width: int) -> torch.Tensor:
        """Fraction of each grid cell covered by the subject's region, ``[height, width]``."""
        if subject.box is not None:
            b = subject.box
            ys = _axis_coverage(b.y, b.y + b.height, self.height, height)
            xs = _axis_coverage(b.x, b.x + b.width, self.width, width)
            return ys[:, None] * xs[None, :]
        mask = (subject.mask > 0.5).float()[None, None]
        return F.interpolate(mask, size=(height, width), mode="area")[0, 0] if mask.shape[-2:] != (height, width) \
            else mask[0, 0]


def _axis_coverage(start: float, end: float, canvas: int, cells: int) -> torch.Tensor:
    """Covered fraction of each of ``cells`` equal cells spanning ``canvas`` by ``[start, end)``."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * (canvas / cells)
    lo = torch.clamp(edges[:-1], min=start)
    hi = torch.clamp(edges[1:], max=end)
    return (torch.clamp(hi - lo, min=0) / (canvas / cells)).float()


def _check_subject(s: LayoutSubject, width: int, height: int) -> None:
    name = f"subject {s.label!r}"
    if not s.phrase.strip():
        raise LayoutError(f"{name}: the phrase is empty; name the phrase of the prompt this region is for")
    if s.occurrence < 1:
        raise LayoutError(f"{name}: occurrence must be 1 or more, got {s.occurrence}")
    if (s.box is None) == (s.mask is None):
        raise LayoutError(f"{name}: give exactly one region, a box or a mask")
    if s.box is not None:
        b = s.box
        if b.width <= 0 or b.height <= 0:
            raise LayoutError(f"{name}: the box {b.width}x{b.height} has zero area; give it a width and height > 0")
        if b.x < 0 or b.y < 0 or b.x + b.width > width or b.y + b.height > height:
            raise LayoutError(
                f"{name}: the box x={b.x} y={b.y} w={b.width} h={b.height} reaches outside the "
                f"{width}x{height} canvas; move it inside or make the canvas larger"
            )
    else:
        if tuple(s.mask.shape) != (height, width):
            raise LayoutError(
                f"{name}: the mask is {s.mask.shape[-1]}x{s.mask.shape[-2]} but the canvas is {width}x{height}"
            )
        if not bool((s.mask > 0.5).any()):
            raise LayoutError(f"{name}: the mask is empty; paint the region where the subject goes")
