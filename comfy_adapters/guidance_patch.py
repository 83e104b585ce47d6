"""Patch a ComfyUI MODEL with layout guidance: attn2 replacements plus two sampler-level wrappers.

- Every cross-attention block of the UNet gets a ``GuidedAttn2`` replacement (self-attention
  is never touched). An attn2 replacement already on the model (another pack's) is kept as
  ``previous`` and called first: chained, not dropped.
- An OUTER_SAMPLE wrapper creates a ``GuidanceRun`` for each sampling call (checking the
  latent's aspect), binds the guider's positive entries (their uuids and the token maps
  Cones2ApplyResidual recorded) and hands the run to the attention calls through
  ``transformer_options``; it is dropped when sampling ends, with its cached biases.
- A CALC_COND_BATCH wrapper tells the run, before each model evaluation, which (branch,
  uuid) chunks are the guider's positive entries (the branch index is the guider's choice)
  and reads σ once (whether the step is guided), so attention layers never sync.
"""

from __future__ import annotations

import comfy.ldm.modules.attention as attention
import comfy.patcher_extension
from comfy.ldm.modules.attention import SpatialTransformer

from ..guidance.layout import Layout
from ..guidance.layout_guidance import GuidanceRun, GuidanceSettings, LayoutGuidanceError
from ..guidance.strength import StepRange, check_percents

RUN_KEY = "cones2_layout_guidance"  # transformer_options key holding the current GuidanceRun
WRAPPER_KEY = "cones2_layout_guidance"

# ComfyUI's attention functions that apply an additive mask. Others drop it (attention_sage:
# upstream sageattn has no attn_mask and ignores it) or refuse it (attention_flash raises,
# logs "Flash Attention failed" and falls back to SDPA), as may a function a pack installs.
MASK_CAPABLE = ("attention_pytorch", "attention_xformers", "attention_sub_quad", "attention_split", "attention_basic")


def masked_attention():
    """The configured masked attention if it applies masks, else ``attention_pytorch`` (SDPA)."""
    current = attention.optimized_attention_masked
    if any(current is getattr(attention, name, None) for name in MASK_CAPABLE):
        return current
    return attention.attention_pytorch


class GuidedAttn2:
    """An attn2 replacement: the batch as before, positive rows re-run with the layout bias."""

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")

        def attend(q_, k_, v_, mask):
            # The very call CrossAttention.forward makes, so unguided rows come out bit for bit the same.
            if mask is None:
                return attention.optimized_attention(q_, k_, v_, heads, attn_precision=precision,
                                                     transformer_options=extra_options)
            return masked_attention()(q_, k_, v_, heads, mask, attn_precision=precision,
                                      transformer_options=extra_options)

        run = extra_options.get(RUN_KEY)
        if run is None:  # sampled without the OUTER_SAMPLE hook (or outside sampling): no guidance
            return self.previous(q, k, v, extra_options) if self.previous is not None else attend(q, k, v, None)
        return run.attention(q, k, v, extra_options, attend, self.previous)


def cross_attention_blocks(model_patcher) -> list[tuple[str, int, int]]:
    """``(block_name, number, transformer_depth)`` of every UNet block with cross-attention."""
    unet = getattr(model_patcher.model, "diffusion_model", None)
    groups = [("input", getattr(unet, "input_blocks", None)), ("middle", [getattr(unet, "middle_block", None)]),
              ("output", getattr(unet, "output_blocks", None))]
    out = []
    for name, blocks in groups:
        for number, block in enumerate(blocks or ()):
            for module in block or ():
                if isinstance(module, SpatialTransformer) and any(
                        getattr(b, "attn2", None) is not None for b in module.transformer_blocks):
                    out.append((name, number, len(module.transformer_blocks)))
    return out


def _own_previous(patch):
    """Re-applying guidance replaces the earlier guidance instead of stacking it."""
    return patch.previous if isinstance(patch, GuidedAttn2) else patch


def apply_layout_guidance(model, layout: Layout, settings: GuidanceSettings, start_percent: float,
                          end_percent: float, node: str):
    """A clone of ``model`` (a ModelPatcher) that applies layout guidance when sampled.

    Weight 0 is "off": ``model`` itself comes back, unpatched, so sampling costs nothing extra.
    """
    if not isinstance(layout, Layout):
        raise ValueError(f"{node}: the layout input is not a CONES2_LAYOUT; connect a Cones2 layout node")
    if not layout.subjects:
        raise ValueError(f"{node}: the layout is empty; add at least one subject's box or mask")
    try:
        check_percents(start_percent, end_percent)
    except ValueError as e:
        raise ValueError(f"{node}: {e}") from None
    blocks = cross_attention_blocks(model)
    if not blocks:
        raise ValueError(
            f"{node}: this model has no SD-style UNet cross-attention; layout guidance needs an SD2.x "
            "checkpoint (loaded with CheckpointLoaderSimple)"
        )
    if settings.weight == 0:
        return model
    m = model.clone()

    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for name, number, depth in blocks:
        m.set_model_attn2_replace(GuidedAttn2(_own_previous(existing.get((name, number)))), name, number)
        for index in range(depth):  # replacements keyed per transformer take precedence: wrap those too
            previous = existing.get((name, number, index))
            if previous is not None:
                m.set_model_attn2_replace(GuidedAttn2(_own_previous(previous)), name, number, index)

    def outer_sample(executor, noise, *args, **kwargs):
        guider = executor.class_obj
        # σ bounds from the model as sampled (a later ModelSampling node may have changed its σ range)
        run = GuidanceRun(layout, settings, step_range(guider.model_patcher, start_percent, end_percent), node)
        run.check_latent(int(noise.shape[-2]), int(noise.shape[-1]))
        run.bind(_positive_entries(guider, node))
        run.positive_source = lambda: guider.conds.get("positive")  # the entries as sampling processed them
        options = guider.model_options.setdefault("transformer_options", {})
        options[RUN_KEY] = run
        try:
            return executor(noise, *args, **kwargs)
        finally:
            options.pop(RUN_KEY, None)

    W = comfy.patcher_extension.WrappersMP
    m.remove_wrappers_with_key(W.OUTER_SAMPLE, WRAPPER_KEY)
    m.add_wrapper_with_key(W.OUTER_SAMPLE, WRAPPER_KEY, outer_sample)
    m.remove_wrappers_with_key(W.CALC_COND_BATCH, WRAPPER_KEY)
    m.add_wrapper_with_key(W.CALC_COND_BATCH, WRAPPER_KEY, _begin_call)
    return m


def step_range(model_patcher, start_percent: float, end_percent: float) -> StepRange:
    """The guided σ range of ``model_patcher``'s sampling, as core ControlNet reads percents."""
    sampling = model_patcher.get_model_object("model_sampling")
    return StepRange(float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))


def _positive_entries(guider, node: str) -> list:
    """The guider's positive conditioning (CFGGuider and its subclasses keep it as conds["positive"])."""
    conds = getattr(guider, "conds", None)
    if not isinstance(conds, dict) or "positive" not in conds:
        raise LayoutGuidanceError(
            f"{node}: the guider {type(guider).__name__} has no 'positive' conditioning, so there is no "
            "prompt to guide; use a core guider (CFGGuider, BasicGuider, DualCFGGuider, PerpNegGuider) "
            "or KSampler"
        )
    return list(conds["positive"] or ())


def _begin_call(executor, model, conds, x_in, timestep, model_options):
    run = model_options.get("transformer_options", {}).get(RUN_KEY)
    if run is not None:
        run.begin_call(conds, timestep, run.positive_source() if run.positive_source else None)
    return executor(model, conds, x_in, timestep, model_options)


__all__ = ["GuidedAttn2", "LayoutGuidanceError", "apply_layout_guidance", "cross_attention_blocks", "step_range"]
