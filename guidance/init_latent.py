"""MuDI's mean-shifted initial noise (MuDI §4.2, Eq. 3, Algorithm 2), placed by a layout.

MuDI composes the segmented subjects on an empty canvas (its Seg-Mix composition), encodes the
composite with the VAE and starts sampling from ``z_T = γ·(E(x_init) ⊙ Resize(M_init)) + ε``.
Here each subject is placed in its layout region instead of at random. This module holds the
pure parts: the subject photos, the composition, the latent mask and the mapping from the mean
shift to the LATENT a ComfyUI sampler must be given; the VAE and the model live in the host.

Images are ComfyUI's ``[H, W, 3]`` floats in 0..1; masks ``[H, W]``, 1 = the subject.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layout import Box, Layout, fit_mask, subject_key, subject_label

DEFAULT_GAMMA = 1.0  # MuDI's γ (Algorithm 2's default)
INSIDE = 0.5  # a mask value above this is the subject (the pack's convention for masks)
MASK_IS = ("subject", "background")  # what a MASK marks: ComfyUI's LoadImage gives 1 - alpha


class InitLatentError(ValueError):
    """A subject photo or composition that cannot be used; the message names the subject and the fix."""


@dataclass(frozen=True, eq=False)
class SubjectPhoto:
    """A reference photo of one layout subject and its mask (1 = the subject), same height and width."""

    phrase: str
    occurrence: int
    image: torch.Tensor  # [H, W, 3] float 0..1
    mask: torch.Tensor  # [H, W] float 0..1

    @property
    def label(self) -> str:
        return subject_label(self.phrase, self.occurrence)


def subject_photo(phrase: str, occurrence: int, images: torch.Tensor, mask: torch.Tensor | None = None,
                  mask_is: str = "subject", index: int = 0) -> SubjectPhoto:
    """One photo of a batch (``images[index]``) with its mask, checked; errors name the subject.

    ``images`` is an IMAGE ``[B, H, W, C]`` (C = 3, or 4 with alpha); ``mask`` a MASK ``[H, W]``
    or ``[B, H, W]`` (one for all photos, or one per photo). No mask: the image's alpha channel is
    the subject. ``mask_is = "background"`` inverts the mask (LoadImage of a cut-out PNG with a
    transparent background gives MASK = 1 - alpha, i.e. 1 on the background).
    """
    phrase = " ".join(phrase.split())
    label = subject_label(phrase, int(occurrence)) if phrase else "(no phrase)"
    if not phrase:
        raise InitLatentError("the phrase is empty; name the layout subject this photo shows (e.g. 'dog')")
    if mask_is not in MASK_IS:
        raise InitLatentError(f"subject {label!r}: mask_is must be one of {list(MASK_IS)}, got {mask_is!r}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise InitLatentError(f"subject {label!r}: expected an IMAGE [batch, height, width, 3 or 4], got "
                              f"{list(images.shape)}")
    if not 0 <= index < images.shape[0]:
        raise InitLatentError(f"subject {label!r}: index {index} is outside the batch of {images.shape[0]} "
                              f"photo(s); give 0 to {images.shape[0] - 1}")
    image = images[index].detach().to("cpu", torch.float32)
    height, width = int(image.shape[0]), int(image.shape[1])
    if mask is None:
        if image.shape[-1] != 4:
            raise InitLatentError(
                f"subject {label!r}: no mask and the photo has no alpha channel; connect a MASK of the subject "
                "(paint it in Load Image's mask editor, or use a segmentation node)")
        m = image[..., 3]
    else:
        m = mask.detach().to("cpu", torch.float32)
        if m.ndim == 3:
            if m.shape[0] == 1:
                m = m[0]
            elif m.shape[0] == images.shape[0]:
                m = m[index]
            else:
                raise InitLatentError(
                    f"subject {label!r}: the mask batch holds {m.shape[0]} masks for {images.shape[0]} photos; "
                    "give one mask, or one per photo")
        if m.ndim != 2:
            raise InitLatentError(f"subject {label!r}: expected a MASK [height, width], got {list(mask.shape)}")
        if tuple(m.shape) != (height, width):
            hint = (" (Load Image gives an empty 64x64 mask for a photo without alpha: paint the subject in its "
                    "mask editor)" if tuple(m.shape) == (64, 64) else "")
            raise InitLatentError(
                f"subject {label!r}: the mask is {m.shape[1]}x{m.shape[0]} but the photo is {width}x{height}; "
                f"give the mask of this photo, at its size{hint}")
        if mask_is == "background":
            m = 1.0 - m
    m = m.clamp(0.0, 1.0)
    if mask is not None and mask_is == "subject" and _covers_border(m):
        raise InitLatentError(
            f"subject {label!r}: the mask covers the photo's whole border, as Load Image's MASK of a cut-out PNG "
            "with a transparent background does (it is 1 - alpha: 1 on the background); set mask_is to "
            "'background' (if the subject really fills every edge, crop the photo around it)")
    if not bool((m > INSIDE).any()):
        what = "the alpha channel is transparent everywhere" if mask is None else "the mask is empty"
        flip = "" if mask is None else (" (or set mask_is to 'subject')" if mask_is == "background"
                                        else " (if it marks the background, set mask_is to 'background')")
        raise InitLatentError(f"subject {label!r}: {what} (no value above {INSIDE}); mark the subject{flip}")
    return SubjectPhoto(phrase, int(occurrence), image[..., :3].clamp(0.0, 1.0), m)


@dataclass(frozen=True)
class Composite:
    """The composed subjects: ``image [H, W, 3]`` (black where no subject), ``mask [H, W]`` (1 = a
    subject) and, per placed subject, the rectangle its cut-out covers, in composite pixels."""

    image: torch.Tensor
    mask: torch.Tensor
    placed: tuple[tuple[str, Box], ...]


def compose_subjects(layout: Layout, photos: tuple[SubjectPhoto, ...], width: int, height: int) -> Composite:
    """MuDI's Seg-Mix composition, placed by the layout, on a ``width x height`` canvas.

    Each subject is cut out by its mask (cropped to the mask's bounding box), scaled keeping its
    aspect ratio to fit inside the bounding box of its region (a box, or a mask region) as the
    layout rasterises it at this size, centred there, and pasted (alpha over, in layout order:
    later subjects on top). Subjects without a photo get nothing. The layout's canvas may have
    another size than ``width x height`` but not another aspect ratio (checked by the caller).
    """
    by_key = {subject_key(s.phrase, s.occurrence): i for i, s in enumerate(layout.subjects)}
    chosen: dict[int, SubjectPhoto] = {}
    for p in photos:
        i = by_key.get(subject_key(p.phrase, p.occurrence))
        if i is None:
            have = ", ".join(repr(s.label) for s in layout.subjects) or "none"
            raise InitLatentError(
                f"there is a photo for {p.label!r} but the layout has no such subject (its subjects: {have}); "
                "fix the phrase or occurrence of that Cones2 Subject Photo, or add the subject to the layout")
        if i in chosen:
            raise InitLatentError(f"subject {layout.subjects[i].label!r} has two photos; give each layout subject "
                                  "one photo")
        chosen[i] = p
    image = torch.zeros(height, width, 3)
    mask = torch.zeros(height, width)
    placed = []
    regions = layout.region_masks(height, width) if chosen else None
    for i in sorted(chosen):
        photo = chosen[i]
        target = _bounding_box(regions[i])
        rgb, alpha = _cut_out(photo)
        box = fit_inside(int(alpha.shape[1]), int(alpha.shape[0]), target)
        rgb = _resize(rgb.permute(2, 0, 1), box.height, box.width).permute(1, 2, 0)
        alpha = _resize(alpha[None], box.height, box.width)[0].clamp(0.0, 1.0)
        ys, xs = slice(box.y, box.y + box.height), slice(box.x, box.x + box.width)
        image[ys, xs] = image[ys, xs] * (1 - alpha[..., None]) + rgb.clamp(0.0, 1.0)
        mask[ys, xs] = mask[ys, xs] * (1 - alpha) + alpha
        placed.append((photo.label, box))
    return Composite(image.clamp(0.0, 1.0), mask.clamp(0.0, 1.0), tuple(placed))


def fit_inside(width: int, height: int, target: Box) -> Box:
    """A ``width x height`` picture scaled, aspect kept, to the largest size inside ``target``, centred."""
    scale = min(target.width / width, target.height / height)
    w = min(target.width, max(1, round(width * scale)))
    h = min(target.height, max(1, round(height * scale)))
    return Box(target.x + (target.width - w) // 2, target.y + (target.height - h) // 2, w, h)


def latent_mask(mask: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """Resize(M_init): the composite mask on the latent grid, ``[h, w]`` of 0/1.

    A latent cell is inside when more than half of its pixels are (exact area coverage, as the
    layout rasterises regions; a tiny subject keeps its best-covered cell).
    """
    return fit_mask(mask, latent_width, latent_height, what="the composite mask").float()


def full_denoise_scale(sigma_max: float) -> float:
    """ComfyUI's noise factor at full denoise for eps/v models: ``sqrt(1 + σ_max²)``.

    ComfyUI's sampler starts from ``x = ε·sqrt(1 + σ_max²) + L`` (EPS.noise_scaling with
    max_denoise) and the UNet sees ``x / sqrt(σ_max² + 1)`` (calculate_input), i.e. ``ε + L/s``.
    """
    return math.sqrt(1.0 + float(sigma_max) ** 2)


def sampler_latent(mean_shift: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """The model-space latent a sampler must start from so that its UNet's first input is
    ``mean_shift + ε`` (Eq. 3 with ``mean_shift = γ·E(x_init)⊙Resize(M_init)``)."""
    return mean_shift * full_denoise_scale(sigma_max)


def _covers_border(mask: torch.Tensor) -> bool:
    edges = torch.cat([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return bool((edges > INSIDE).all())


def _bounding_box(region: torch.Tensor) -> Box:
    ys = torch.nonzero(region.any(dim=1)).flatten()
    xs = torch.nonzero(region.any(dim=0)).flatten()
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    return Box(x0, y0, x1 - x0, y1 - y0)


def _cut_out(photo: SubjectPhoto) -> tuple[torch.Tensor, torch.Tensor]:
    """The subject, cropped to its mask's bounding box: premultiplied colour ``[h, w, 3]`` and alpha."""
    box = _bounding_box(photo.mask > INSIDE)
    ys, xs = slice(box.y, box.y + box.height), slice(box.x, box.x + box.width)
    alpha = photo.mask[ys, xs]
    return photo.image[ys, xs] * alpha[..., None], alpha


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[C, h, w]`` resized (bilinear, antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrink = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)[0]
