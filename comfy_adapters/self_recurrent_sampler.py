"""A ComfyUI sampler that runs another one with the official self-recurrence on guided steps.

It mirrors ``comfy.samplers.KSAMPLER.sample`` (inpaint wrapper, noise scaling once at the
start, inverse scaling once at the end) but calls the inner sampler's function once per
segment of ``guidance.self_recurrence.plan_segments``: a guided step runs, is re-noised by
``sqrt(σ_i² − σ_{i+1}²)·ε`` and runs again; unguided steps run together in one call.
Consequences of cutting the run: multistep samplers (lms, dpmpp_2m, ipndm, deis...)
restart their history at each segment, and samplers that draw noise (ancestral, SDE) seed
each segment's noise from ``seed + segment call``. uni_pc and uni_pc_bh2 are refused: given a
one-step segment they only prime their history and return the latent rescaled, not denoised.
One progress bar covers the whole run. ``sample`` keeps ``KSAMPLER.sample``'s signature,
which newer hosts (0.38) call the same way; the sampler registers no wrapper.
"""

from __future__ import annotations

import torch
from comfy.samplers import KSAMPLER, KSamplerX0Inpaint, Sampler
from tqdm.auto import trange

from ..guidance.self_recurrence import plan_segments, renoise_scale
from ..guidance.step_range import StepRange

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


class SelfRecurrentSampler(Sampler):
    def __init__(self, inner: KSAMPLER, steps: StepRange, seed: int):
        self.inner = inner
        self.steps = steps
        self.seed = int(seed)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = self.inner
        extra_args["denoise_mask"] = denoise_mask
        model_k = KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        if inner.inpaint_options.get("random", False):
            generator = torch.manual_seed(extra_args.get("seed", 41) + 1)
            model_k.noise = torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)
        else:
            model_k.noise = noise
        sampling = model_wrap.inner_model.model_sampling
        x = sampling.noise_scaling(sigmas[0], noise, latent_image, inner.max_denoise(model_wrap, sigmas))

        total = len(sigmas) - 1
        values = [float(s) for s in sigmas]
        renoise = torch.Generator(device="cpu").manual_seed((self.seed + 1) % (1 << 63))
        base_seed = extra_args.get("seed")
        calls = 0
        pbar = trange(total, disable=disable_pbar)
        for seg in plan_segments(values, self.steps.guides):
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
                        callback(d["i"] + offset, d["denoised"], d["x"], total)
                x = inner.sampler_function(model_k, x, seg_sigmas, extra_args=args, callback=k_callback,
                                           disable=True, **inner.extra_options)
                calls += 1
        pbar.close()
        return sampling.inverse_noise_scaling(sigmas[-1], x)
