"""The Layout Guided Sampler's sampling: KSampler's, or the official self-recurrence on guided steps.

Self-recurrence is a sampler function that core ``comfy.samplers.KSAMPLER`` wraps like any
other (so the inpaint wrapper, ``noise_mask``, the noise scaling and its inverse are core's);
it calls the chosen sampler's own function once per segment of
``guidance.self_recurrence.plan_segments``: a guided step runs, is re-noised by
``sqrt(σ_i² − σ_{i+1}²)·ε`` and runs again; unguided steps run together in one call.
Consequences of cutting the run: multistep samplers (lms, dpmpp_2m, ipndm, deis...)
restart their history at each segment, and samplers that draw noise (ancestral, SDE) seed
each segment's noise from ``seed + segment call``. uni_pc and uni_pc_bh2 are refused: given a
one-step segment they only prime their history and return the latent rescaled, not denoised.
One progress bar covers the whole run; the sampler registers no wrapper.
"""

from __future__ import annotations

import functools

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy.samplers import KSAMPLER
from tqdm.auto import trange

import nodes as comfy_nodes

from ..guidance.layout import Layout
from ..guidance.layout_guidance import GuidanceSettings
from ..guidance.self_recurrence import plan_segments, renoise_scale
from ..guidance.step_range import StepRange
from .guidance_patch import apply_layout_guidance, step_range

# Samplers that cannot take one step on their own (see the module docstring).
NO_SINGLE_STEP = ("uni_pc", "uni_pc_bh2")


def check_self_recurrent_sampler(sampler_name: str, node: str) -> None:
    """Refuse a sampler that self-recurrence would stop from denoising."""
    if sampler_name in NO_SINGLE_STEP:
        raise ValueError(
            f"{node}: self_recurrence runs each guided step on its own, and {sampler_name} does not denoise "
            "a single step (it only starts its multistep history there); choose another sampler (euler is "
            "the official code's) or turn self_recurrence off"
        )


def self_recurrent_sampler(sampler_name: str, steps: StepRange, seed: int) -> KSAMPLER:
    """Core's sampler ``sampler_name`` with self-recurrence on the steps ``steps`` guides."""
    inner = comfy.samplers.sampler_object(sampler_name)
    function = functools.partial(_self_recurrent, inner.sampler_function, inner.extra_options, steps, int(seed))
    return KSAMPLER(function, inpaint_options=inner.inpaint_options)


def _self_recurrent(inner_function, inner_options, steps: StepRange, seed: int, model, x, sigmas, extra_args=None,
                    callback=None, disable=None):
    extra_args = extra_args or {}
    total = len(sigmas) - 1
    values = [float(s) for s in sigmas]
    renoise = torch.Generator(device="cpu").manual_seed((seed + 1) % (1 << 63))
    base_seed = extra_args.get("seed")
    calls = 0
    pbar = trange(total, disable=disable)
    for seg in plan_segments(values, steps.guides):
        seg_sigmas = sigmas[seg.start:seg.end + 1]
        for p in range(seg.passes):
            if p:
                eps = torch.randn(x.shape, generator=renoise, device="cpu").to(x.dtype).to(x.device)
                x = x + renoise_scale(values[seg.start], values[seg.start + 1]) * eps
            args = dict(extra_args)
            if base_seed is not None:
                args["seed"] = base_seed + calls

            def k_callback(d, offset=seg.start, last_pass=p == seg.passes - 1):
                if last_pass:
                    pbar.update(1)
                if callback is not None:
                    callback({**d, "i": d["i"] + offset})

            x = inner_function(model, x, seg_sigmas, extra_args=args, callback=k_callback, disable=True,
                               **inner_options)
            calls += 1
    pbar.close()
    return x


def sample_guided(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive, negative,
                  layout: Layout, latent_image: dict, denoise: float, settings: GuidanceSettings,
                  start_percent: float, end_percent: float, self_recurrence: bool, node: str) -> dict:
    """The Layout Guided Sampler: core KSampler's sampling of ``model`` with layout guidance, and with
    self-recurrence on guided steps when asked. Returns the LATENT."""
    if self_recurrence:
        check_self_recurrent_sampler(sampler_name, node)
    guided = apply_layout_guidance(model, layout, settings, start_percent, end_percent, node)
    if not self_recurrence or guided is model:  # weight 0: no guided step to repeat
        return comfy_nodes.common_ksampler(guided, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                           latent_image, denoise=denoise)[0]
    latent = comfy.sample.fix_empty_latent_channels(guided, latent_image["samples"])
    noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
    sigmas = comfy.samplers.KSampler(guided, steps=steps, device=guided.load_device, sampler=sampler_name,
                                     scheduler=scheduler, denoise=denoise, model_options=guided.model_options).sigmas
    sampler = self_recurrent_sampler(sampler_name, step_range(guided, start_percent, end_percent), seed)
    callback = latent_preview.prepare_callback(guided, max(sigmas.shape[-1] - 1, 1))
    samples = comfy.sample.sample_custom(guided, noise, cfg, sampler, sigmas, positive, negative, latent,
                                         noise_mask=latent_image.get("noise_mask"), callback=callback,
                                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return {**latent_image, "samples": samples}
