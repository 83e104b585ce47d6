"""Layouts: where each subject goes, as boxes or masks on a canvas, and their rasterisation.

A layout is the value of the CONES2_LAYOUT type. Regions are kept at full image
resolution (a box in pixels, or a mask at canvas size) and rasterised per attention layer
by ``Layout.region_masks(h, w)``: a binary mask per subject at the layer's grid, made from
exact area coverage, so nothing bleeds across region borders (the authors bilinearly resize
their ±1e8 weight maps, which smears the suppression value over the border).

A layout may hold no subjects (an empty Layout Boxes node, a preview of a bare canvas);
layout guidance rejects an empty layout when sampling. A subject (phrase occurrence) has
one region: a second region for the same occurrence is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .prompt_tokens import phrase_words

DEFAULT_GAMMA = 2.5  # γ+, the official and paper default


class LayoutError(ValueError):
    """A layout that cannot be used; the message says what to change."""


def subject_label(phrase: str, occurrence: int) -> str:
    """How a subject is written for people: ``dog``, ``dog #2``."""
    return phrase if occurrence == 1 else f"{phrase} #{occurrence}"


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

    def __post_init__(self):
        if self.mask is not None:  # a copy: the caller's MASK may be a view that another node edits in place
            object.__setattr__(self, "mask", self.mask.detach().to("cpu", torch.float32).clone())

    @property
    def label(self) -> str:
        return subject_label(self.phrase, self.occurrence)


@dataclass(frozen=True, eq=False)
class Layout:
    """A canvas size and the subjects placed on it."""

    width: int
    height: int
    subjects: tuple[LayoutSubject, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.width < 8 or self.height < 8:
            raise LayoutError(f"the canvas is {self.width}x{self.height}; it must be at least 8x8 pixels")
        seen = {}
        for s in self.subjects:
            _check_subject(s, self.width, self.height)
            key = subject_key(s.phrase, s.occurrence)
            if key in seen:
                raise LayoutError(
                    f"subject {s.label!r} has two regions; a phrase occurrence has one region: give the "
                    f"second one another occurrence (e.g. '{s.phrase} #{s.occurrence + 1}'), or use one "
                    "mask covering both"
                )
            seen[key] = s

    def add(self, subject: LayoutSubject) -> Layout:
        """A new layout with ``subject`` appended (layouts are immutable: node outputs are shared)."""
        return replace(self, subjects=(*self.subjects, subject))

    def region_masks(self, height: int, width: int) -> torch.Tensor:
        """Binary masks ``[S, height, width]`` of every subject's region on a ``height x width`` grid.

        A grid cell is inside when more than half of its area is covered (exact coverage, masks
        and boxes alike), so regions that do not overlap on the canvas never share a cell. A
        region too small to cover more than half of any cell keeps its best-covered cell(s), so
        no subject vanishes at the coarsest layers.
        """
        if not self.subjects:
            return torch.zeros(0, height, width, dtype=torch.bool)
        return _binarize(torch.stack([self._coverage(s, height, width) for s in self.subjects]))

    def _coverage(self, subject: LayoutSubject, height: int, width: int) -> torch.Tensor:
        """Fraction of each grid cell covered by the subject's region, ``[height, width]``."""
        if subject.box is not None:
            b = subject.box
            ys = _axis_coverage(b.y, b.y + b.height, self.height, height)
            xs = _axis_coverage(b.x, b.x + b.width, self.width, width)
            return ys[:, None] * xs[None, :]
        inside = (subject.mask > 0.5).to(torch.float64)
        if inside.shape == (height, width):
            return inside.float()
        rows = _axis_weights(self.height, height)  # [height, canvas_h]
        cols = _axis_weights(self.width, width)  # [width, canvas_w]
        return (rows @ inside @ cols.T).float()


_TIE = 1e-6  # an exactly half-covered cell is outside, whatever the rounding


def subject_key(phrase: str, occurrence: int) -> tuple[tuple[str, ...], int]:
    """What identifies a subject: its phrase as CLIP splits it (case and spacing ignored) and occurrence."""
    return phrase_words(phrase), int(occurrence)


def _axis_coverage(start: float, end: float, canvas: int, cells: int) -> torch.Tensor:
    """Covered fraction of each of ``cells`` equal cells spanning ``canvas`` by ``[start, end)``."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * (canvas / cells)
    lo = torch.clamp(edges[:-1], min=start)
    hi = torch.clamp(edges[1:], max=end)
    return (torch.clamp(hi - lo, min=0) / (canvas / cells)).float()


def _axis_weights(canvas: int, cells: int) -> torch.Tensor:
    """``[cells, canvas]``: the fraction of each cell that each canvas pixel covers (rows sum to 1)."""
    cell_edges = torch.arange(cells + 1, dtype=torch.float64) * (canvas / cells)
    pixel_edges = torch.arange(canvas + 1, dtype=torch.float64)
    lo = torch.maximum(cell_edges[:-1, None], pixel_edges[None, :-1])
    hi = torch.minimum(cell_edges[1:, None], pixel_edges[None, 1:])
    return torch.clamp(hi - lo, min=0) / (canvas / cells)


def fit_mask(mask: torch.Tensor, width: int, height: int, what: str = "the mask") -> torch.Tensor:
    """``mask`` ``[H, W]`` as a ``[height, width]`` float mask (``> 0.5`` = inside).

    Same size: returned as is. Same aspect ratio (to within rounding of one pixel): rescaled by
    exact area coverage, then thresholded, as ``region_masks`` does. A different aspect ratio is
    a ``LayoutError``: stretching would move the region.
    """
    mh, mw = int(mask.shape[-2]), int(mask.shape[-1])
    if (mh, mw) == (height, width):
        return mask
    if abs(mh * width / mw - height) > 1 and abs(mw * height / mh - width) > 1:
        raise LayoutError(
            f"{what} is {mw}x{mh} but the canvas is {width}x{height}, a different aspect ratio "
            f"({mw / mh:.3f} vs {width / height:.3f}); give it the canvas's shape (crop it, e.g. with "
            "core CropMask) or set the canvas to the mask's size"
        )
    inside = (mask > 0.5).to(torch.float64)
    coverage = _axis_weights(mh, height) @ inside @ _axis_weights(mw, width).T
    return _binarize(coverage[None])[0].float()


def _binarize(coverage: torch.Tensor) -> torch.Tensor:
    """``[S, h, w]`` coverage -> inside where more than half covered; a region covering no cell
    that much keeps its best-covered cell(s)."""
    inside = coverage > 0.5 + _TIE
    empty = ~inside.flatten(1).any(dim=1)
    if empty.any():
        best = coverage.flatten(1).amax(dim=1, keepdim=True)
        fallback = (coverage.flatten(1) >= best - 1e-6).view_as(coverage) & (coverage > 0)
        inside = torch.where(empty[:, None, None], fallback, inside)
    return inside


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
