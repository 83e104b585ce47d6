"""The host side of MuDI's initial latent: the VAE, and the model's latent space and noise schedule.

``guidance.init_latent`` composes the subjects and computes the mean shift; this module encodes
and decodes with ComfyUI's VAE and reads from a MODEL (or, without one, from SD2's defaults:
the SD latent format and the discrete SD noise schedule, which SD1.x shares) how its sampler
scales latents and noise. Each family's latent format comes with its MODEL (SDXL: scale 0.13025).
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.latent_formats
import comfy.model_sampling
import torch

from ..guidance.init_latent import sampler_latent


@dataclass(frozen=True)
class LatentSpace:
    """How a model's sampler sees a LATENT: ``process_in`` (VAE latent -> model space), its inverse,
    and σ_max of its noise schedule."""

    process_in: object
    process_out: object
    sigma_max: float


def latent_space(model=None, node: str = "Cones2LayoutInitLatent") -> LatentSpace:
    """The LatentSpace of ``model`` (a ModelPatcher, object patches such as ModelSamplingDiscrete
    included), or SD2's without one."""
    if model is None:
        fmt = comfy.latent_formats.SD15()  # SD2 uses SD1's latent format (scale 0.18215)
        return LatentSpace(fmt.process_in, fmt.process_out,
                           float(comfy.model_sampling.ModelSamplingDiscrete().sigma_max))
    sampling = model.get_model_object("model_sampling")
    if not isinstance(sampling, comfy.model_sampling.EPS):
        raise ValueError(
            f"{node}: the model samples as {type(sampling).__name__}, not as an eps or v-prediction model; "
            "MuDI's initial noise is defined here for eps / v-prediction models (SD1.x, SD2.x, SDXL): connect such "
            "a model, or none")
    return LatentSpace(model.get_model_object("process_latent_in"), model.get_model_object("process_latent_out"),
                       float(sampling.sigma_max))


def encode(vae, image: torch.Tensor) -> torch.Tensor:
    """VAE latent ``[1, C, H/8, W/8]`` of an ``[H, W, 3]`` image, as core VAEEncode makes it."""
    return vae.encode(image[None, :, :, :3])


def decode(vae, latent: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, 3]`` of a VAE latent, as core VAEDecode makes it."""
    images = vae.decode(latent)
    if images.ndim == 5:
        images = images.reshape(-1, *images.shape[-3:])
    return images


def latent_for_sampler(space: LatentSpace, mean_shift: torch.Tensor) -> torch.Tensor:
    """The VAE-space LATENT that makes the sampler's first UNet input ``mean_shift + ε``
    (``mean_shift`` in model space); all zeros when the shift is (ComfyUI then adds nothing)."""
    if not bool(torch.count_nonzero(mean_shift)):
        return torch.zeros_like(mean_shift)
    return space.process_out(sampler_latent(mean_shift, space.sigma_max))
