"""Region crops, cosine similarities and the scores built from them (CLIP-I, CLIP-T, MuDI's D&C).

For one generated image and one image encoder E, with subjects 1..S that have reference photos
(in layout order) and crop c_i of subject i's region:

- ``similarity[i][j] = mean_r cos(E(c_i), E(x_j,r))``: subject i's crop against subject j's
  references (MuDI's "reference similarity"); the diagonal is subject i's fidelity (CLIP-I /
  DINO-I style, on its region instead of the whole image).
- ``mixing[i] = similarity[i][i] - max_{j != i} similarity[i][j]``: higher = better separated;
  negative when the crop looks more like another subject.
- ``separation = sum_i mixing[i]``: the layout-aware D&C. It equals MuDI's Algorithm 3 whenever
  every crop is nearest its own subject, and, unlike it, goes negative when subjects swap places.
- ``mudi_dc``: MuDI's Algorithm 3 as published (two subjects; it ignores which region is whose).
- ``whole_image[i]``: the whole image against subject i's references (the Cones 2 / Textual
  Inversion protocol behind Cones 2's Table 1 image alignment).
- ``clip_t = cos(E_image(image), E_text(prompt))`` in CLIP's joint space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FITS = ("pad", "center crop", "stretch")  # how a crop of any aspect becomes the encoder's square
PAD_VALUE = 0.5  # neutral grey around a padded crop


class ScoreError(ValueError):
    """Inputs that cannot be scored; the message says what to change."""


@dataclass(frozen=True)
class PixelBox:
    """Rows ``top:bottom`` and columns ``left:right`` of an image."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def check_aspect(canvas_w: int, canvas_h: int, width: int, height: int) -> None:
    """Refuse an image whose aspect differs from the layout canvas (a region would land elsewhere)."""
    if abs(width * canvas_h - height * canvas_w) > max(canvas_w, canvas_h, width, height):
        raise ScoreError(
            f"the images are {width}x{height} but the layout canvas is {canvas_w}x{canvas_h}, another aspect "
            "ratio; give the layout the images' size (or the same aspect), as used for sampling")


def region_pixel_box(canvas_w: int, canvas_h: int, width: int, height: int, *, box=None,
                     mask: torch.Tensor | None = None) -> PixelBox:
    """A layout region (a box in canvas pixels, or a canvas-size mask) as a box of a ``width x height`` image.

    A mask region gives its bounding box (values > 0.5). Edges are scaled by the image/canvas ratio
    and rounded outward, so the crop holds the whole region.
    """
    if box is not None:
        x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
    else:
        inside = mask > 0.5
        rows = torch.nonzero(inside.any(dim=1)).flatten()
        cols = torch.nonzero(inside.any(dim=0)).flatten()
        if rows.numel() == 0:
            raise ScoreError("a mask region is empty (no value above 0.5)")
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
    sx, sy = width / canvas_w, height / canvas_h
    left, right = max(0, math.floor(x0 * sx + 1e-9)), min(width, math.ceil(x1 * sx - 1e-9))
    top, bottom = max(0, math.floor(y0 * sy + 1e-9)), min(height, math.ceil(y1 * sy - 1e-9))
    if right <= left or bottom <= top:
        raise ScoreError(f"a region lies outside the {width}x{height} image")
    return PixelBox(top, left, bottom, right)


def subject_boxes(layout, subjects, width: int, height: int) -> list[PixelBox]:
    """Each of ``subjects`` (``guidance.layout.LayoutSubject``) as a box of a ``width x height`` image."""
    check_aspect(layout.width, layout.height, width, height)
    return [region_pixel_box(layout.width, layout.height, width, height, box=s.box, mask=s.mask) for s in subjects]


def crop(image: torch.Tensor, box: PixelBox) -> torch.Tensor:
    """``image[box]`` of an ``[H, W, C]`` image."""
    return image[box.top:box.bottom, box.left:box.right]


def mask_crop(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A reference photo ``[H, W, C]`` cut to its mask's bounding box (the whole photo without a mask)."""
    if mask is None:
        return image
    box = region_pixel_box(image.shape[1], image.shape[0], image.shape[1], image.shape[0], mask=mask)
    return crop(image, box)


def fit_square(image: torch.Tensor, size: int, fit: str = "pad") -> torch.Tensor:
    """An ``[H, W, C]`` image in 0..1 as a ``[size, size, C]`` encoder input.

    ``pad``: the whole crop, centred on grey; ``center crop``: its central square (CLIP's own
    preprocessing); ``stretch``: resized to the square, distorting the aspect.
    """
    if fit not in FITS:
        raise ScoreError(f"unknown fit {fit!r}; use one of {', '.join(FITS)}")
    image = image[..., :3].float()
    h, w = int(image.shape[0]), int(image.shape[1])
    if fit == "pad" and h != w:
        side = max(h, w)
        out = torch.full((side, side, image.shape[2]), PAD_VALUE, dtype=image.dtype, device=image.device)
        top, left = (side - h) // 2, (side - w) // 2
        out[top:top + h, left:left + w] = image
        image = out
    elif fit == "center crop" and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top:top + side, left:left + side]
    if image.shape[0] == size and image.shape[1] == size:
        return image
    x = image.movedim(-1, 0)[None]
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0].movedim(0, -1).clamp(0, 1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` cosine similarities of rows of ``a [N, D]`` and ``b [M, D]`` (float64)."""
    if a.shape[-1] != b.shape[-1]:
        raise ScoreError(f"embeddings of different widths ({a.shape[-1]} and {b.shape[-1]}) cannot be compared")
    return F.normalize(a.double(), dim=-1) @ F.normalize(b.double(), dim=-1).T


@dataclass(frozen=True)
class EncoderScores:
    """One image's scores under one image encoder (see the module docstring)."""

    per_reference: tuple[tuple[tuple[float, ...], ...], ...]  # [subject crop][subject j][reference r]
    similarity: tuple[tuple[float, ...], ...]  # [i][j]
    mixing: tuple[float, ...] | None  # per subject; None with one subject
    whole_image: tuple[float, ...]  # whole image vs each subject's own references

    @property
    def own(self) -> tuple[float, ...]:
        return tuple(self.similarity[i][i] for i in range(len(self.similarity)))

    @property
    def fidelity(self) -> float:
        return sum(self.own) / len(self.own)

    @property
    def separation(self) -> float | None:
        return None if self.mixing is None else sum(self.mixing)

    @property
    def mudi_dc(self) -> float | None:
        return mudi_detect_and_compare(self.similarity) if len(self.similarity) == 2 else None

    def as_dict(self) -> dict:
        return {"similarity": [list(r) for r in self.similarity], "own": list(self.own),
                "mixing": None if self.mixing is None else list(self.mixing), "separation": self.separation,
                "mudi_dc": self.mudi_dc, "fidelity": self.fidelity, "whole_image": list(self.whole_image),
                "per_reference": [[list(r) for r in row] for row in self.per_reference]}


def mixing_scores(similarity) -> tuple[float, ...] | None:
    """Own minus the best other, per subject; None for a single subject (nothing to mix with)."""
    n = len(similarity)
    if n < 2:
        return None
    return tuple(similarity[i][i] - max(similarity[i][j] for j in range(n) if j != i) for i in range(n))


def mudi_detect_and_compare(similarity) -> float:
    """MuDI's Algorithm 3 on a 2x2 reference-similarity matrix (rows: detected subjects)."""
    (s1x, s1y), (s2x, s2y) = similarity
    conf1, conf2 = s1x - s1y, s2x - s2y
    if conf1 * conf2 > 0:  # both look like the same subject: identity mixing or subject dominance
        return abs(conf1 - conf2)
    return abs(conf1) + abs(conf2)


def encoder_scores(crop_embeddings: torch.Tensor, reference_embeddings, whole_embedding: torch.Tensor) -> EncoderScores:
    """Scores of one image from embeddings: crops ``[S, D]``, references (S tensors ``[N_j, D]``), whole ``[D]``."""
    per_ref = [[cosine_matrix(crop_embeddings[i:i + 1], refs)[0] for refs in reference_embeddings]
               for i in range(crop_embeddings.shape[0])]
    similarity = tuple(tuple(float(c.mean()) for c in row) for row in per_ref)
    whole = tuple(float(cosine_matrix(whole_embedding[None], refs)[0].mean()) for refs in reference_embeddings)
    return EncoderScores(
        per_reference=tuple(tuple(tuple(float(v) for v in c) for c in row) for row in per_ref),
        similarity=similarity, mixing=mixing_scores(similarity), whole_image=whole)


def clip_t(image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> float:
    """CLIP-T: cosine of an image's and a prompt's CLIP embeddings."""
    return float(cosine_matrix(image_embedding.reshape(1, -1), text_embedding.reshape(1, -1))[0, 0])


def rank(values, k: int) -> list[int]:
    """Indices of the ``k`` highest values, best first; ties keep batch order."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return order[:max(0, k)]
