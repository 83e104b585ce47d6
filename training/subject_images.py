"""Subject photos -> latents, encoded once, with random crops and flips drawn cheaply per step.

As the authors' script, each photo is resized so its short side is the training
resolution and a square is cropped from it (random by default). Here the VAE encodes each
resized photo once (and its mirror image once, if flips are on); a step's crop is a window
of that latent on the 8-pixel latent grid, which costs nothing. Very elongated photos are
first center-cropped to ``max_aspect`` so one encode stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import TrainingInputError

MIN_IMAGE_SIDE = 64  # pixels; smaller photos carry no usable detail at SD2's resolutions
LATENT_SCALE = 8  # SD VAE downsampling

EncodeImage = Callable[[torch.Tensor], torch.Tensor]  # [1, H, W, 3] in 0..1 -> [1, C, H/8, W/8] (model-scaled)


class ImageInputError(TrainingInputError):
    """Subject photos that cannot be trained on; the message says which and why."""


def check_images(images: Sequence[torch.Tensor], min_side: int = MIN_IMAGE_SIDE) -> None:
    """Raise ImageInputError for an empty set, a non-image tensor or a too-small photo."""
    if len(images) == 0:
        raise ImageInputError(
            "no subject images. Connect 3-5 photos of the subject as an IMAGE batch "
            "(e.g. Load Image Dataset from Folder, or Load Image nodes joined with Image Batch)."
        )
    for i, img in enumerate(images, start=1):
        if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
            raise ImageInputError(f"image {i} has shape {list(img.shape)}; expected [height, width, channels].")
        h, w = int(img.shape[0]), int(img.shape[1])
        if min(h, w) < min_side:
            raise ImageInputError(
                f"image {i} is {w}x{h} px; subject photos must be at least {min_side} px on each side "
                "(512 px or more is best). Replace or remove it."
            )
        if not torch.isfinite(img).all():
            raise ImageInputError(f"image {i} holds NaN or infinite pixel values.")


def resize_for_training(image: torch.Tensor, resolution: int, max_aspect: float = 2.0) -> torch.Tensor:
    """``[H, W, C]`` -> ``[h, w, 3]`` with ``min(h, w) == resolution`` and both sides multiples of 8.

    The long side is first center-cropped to at most ``max_aspect`` times the short side.
    """
    img = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].expand(-1, -1, 3)
    img = img.float().clamp(0, 1)
    h, w = img.shape[0], img.shape[1]
    short = min(h, w)
    cap = int(short * max_aspect)
    if h > cap:
        top = (h - cap) // 2
        img, h = img[top:top + cap], cap
    if w > cap:
        left = (w - cap) // 2
        img, w = img[:, left:left + cap], cap
    long = max(resolution, LATENT_SCALE * round(max(h, w) * resolution / min(h, w) / LATENT_SCALE))
    size = (resolution, long) if h <= w else (long, resolution)
    chw = img.permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(chw, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.squeeze(0).permute(1, 2, 0).clamp(0, 1)


@dataclass
class LatentBank:
    """Each photo's latent ``[C, h, w]`` (short side = resolution / 8), and its mirror's when flips are on."""

    latents: list[torch.Tensor]
    flipped: list[torch.Tensor] | None
    crop: int  # latent crop size (resolution / 8)
    random_crop: bool = True

    def __len__(self) -> int:
        return len(self.latents)

    def sample(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """``[B, C, crop, crop]``: one crop per index; draws from ``generator`` in a fixed order."""
        out = []
        for i in indices:
            flip = bool(self.flipped is not None and torch.rand((), generator=generator) < 0.5)
            lat = self.flipped[i] if flip else self.latents[i]
            _, h, w = lat.shape
            top, left = self._offset(h, generator), self._offset(w, generator)
            out.append(lat[:, top:top + self.crop, left:left + self.crop])
        return torch.stack(out)

    def _offset(self, size: int, generator: torch.Generator) -> int:
        room = size - self.crop
        if room <= 0:
            return 0
        if not self.random_crop:
            return room // 2
        return int(torch.randint(0, room + 1, (), generator=generator))


@torch.no_grad()
def build_latent_bank(images: Sequence[torch.Tensor], encode: EncodeImage, resolution: int, *,
                      flip: bool = False, random_crop: bool = True, max_aspect: float = 2.0,
                      device=None, between: Callable[[], None] | None = None,
                      encoded: Callable[[int], None] | None = None) -> LatentBank:
    """Encode every photo once (and its mirror with ``flip``); see the module docstring.

    After each photo: ``encoded(1)`` (progress, in photos), then ``between()`` (a cancel check)."""
    if resolution % LATENT_SCALE or resolution < MIN_IMAGE_SIDE:
        raise ImageInputError(f"resolution {resolution} must be a multiple of {LATENT_SCALE}, at least {MIN_IMAGE_SIDE}.")
    check_images(images)
    latents, mirrored = [], [] if flip else None
    for img in images:
        px = resize_for_training(img, resolution, max_aspect).unsqueeze(0)
        latents.append(encode(px)[0].float().to(device))
        if flip:
            mirrored.append(encode(torch.flip(px, dims=[2]))[0].float().to(device))
        if encoded:
            encoded(1)
        if between:
            between()
    return LatentBank(latents, mirrored, resolution // LATENT_SCALE, random_crop)
