"""Patch a ComfyUI MODEL with layout guidance: attn2 replacements plus two sampler-level wrappers.

- Every cross-attention block of the UNet gets a ``GuidedAttn2`` replacement (self-attention
  is never touched): on SD1.x, SD2.x and SDXL alike (SDXL's blocks hold 1 to 10 transformers,
  all replaced; its ADM input, the pooled vector and size embedding, is the host's, untouched). An attn2 replacement already on the model (another pack's) is kept as
  ``previous`` and called first: chained, not dropped.
- An OUTER_SAMPLE wrapper creates a ``GuidanceRun`` for each sampling call with the host's
  attention (``host_attention``) and the guider's positive entries as their source, checks
  the latent's aspect, binds the positive entries (their uuids and the token maps
  Cones2ApplyResidual recorded) and hands the run to the attention calls through
  ``transformer_options``; it is dropped when sampling ends, with its cached biases.
- A CALC_COND_BATCH wrapper tells the run, before each model evaluation, which (branch,
  uuid) chunks are the guider's positive entries (the branch index is the guider's choice)
  and reads σ once (whether the step is guided), so attention layers never sync.

Both wrappers pass every argument through untouched (newer hosts add keyword arguments such
as ``latent_shapes``).
"""

from __future__ import annotations

import functools

import comfy.ldm.modules.attention as attention
import comfy.patcher_extension
from comfy.ldm.modules.attention import SpatialTransformer

from ..guidance.layout import Layout
from ..guidance.layout_guidance import GuidanceRun, GuidanceSettings, LayoutGuidanceError
from ..guidance.step_range import StepRange, check_percents
from ..training.model_families import ModelFamilyError
from .model_families import model_family

RUN_KEY = "cones2_layout_guidance"  # transformer_options key holding the current GuidanceRun
PREFERRED_KEY = "cones2_preferred_attention"  # extra_options key: the layer's preferred attention (newer hosts)
WRAPPER_KEY = "cones2_layout_guidance"

# ComfyUI's attention functions that apply an additive mask, in every host that has them.
# attention_comfy_kitchen_int8 (newer hosts) hands the mask to comfy_kitchen's kernel;
# attention3_sage (newer hosts) has no mask support and falls back to attention_pytorch itself
# when given one. attention_flash refuses a mask (it logs "Flash Attention failed" and falls back
# to SDPA on every call), so it is not listed; neither is a function another pack installs.
MASK_CAPABLE = ("attention_pytorch", "attention_xformers", "attention_sub_quad", "attention_split", "attention_basic",
                "attention_comfy_kitchen_int8", "attention3_sage")
# attention_sage: hosts that define SAGE_ATTENTION_SUPPORTS_MASK (0.38) pass the mask to sageattn
# when it takes one and otherwise fall back to attention_pytorch themselves; older hosts (0.3.64)
# pass attn_mask to sageattn, whose upstream release ignores it.
SAGE_MASK_FLAG = "SAGE_ATTENTION_SUPPORTS_MASK"


def applies_masks(name: str, sage_handles_masks: bool) -> bool:
    """Whether the host attention function ``name`` applies an additive mask (or falls back to one that does)."""
    return name in MASK_CAPABLE or (name == "attention_sage" and sage_handles_masks)


def masked_attention():
    """The configured masked attention if it applies masks, else ``attention_pytorch`` (SDPA)."""
    current = attention.optimized_attention_masked
    name = next((n for n in (*MASK_CAPABLE, "attention_sage") if getattr(attention, n, None) is current), None)
    if name is not None and applies_masks(name, hasattr(attention, SAGE_MASK_FLAG)):
        return current
    return attention.attention_pytorch


def host_attention(q, k, v, mask, extra_options, masked=None):
    """The host's attention on projected q/k/v: the call CrossAttention.forward makes when ``mask`` is
    None (so unguided rows come out bit for bit the same), its masked attention else (``masked``:
    ``masked_attention()`` resolved once by the caller; looked up here if not given).

    Newer hosts (0.38) also hand ``optimized_attention`` the layer's ``preferred_attention`` (a
    kernel some checkpoints store with a layer, e.g. comfy-kitchen int8), which ``GuidedAttn2``
    puts in ``extra_options``; their q/k/v containers are unwrapped to these very tensors."""
    heads = extra_options["n_heads"]
    precision = extra_options.get("attn_precision")
    if mask is None:
        preferred = extra_options.get(PREFERRED_KEY)
        extra = {} if preferred is None else {"preferred_attention": preferred}
        return attention.optimized_attention(q, k, v, heads, attn_precision=precision,
                                             transformer_options=extra_options, **extra)
    return (masked or masked_attention())(q, k, v, heads, mask, attn_precision=precision,
                                          transformer_options=extra_options)


class GuidedAttn2:
    """An attn2 replacement: the batch as before, positive rows re-run with the layout bias.

    ``preferred``: per transformer index of its block, the attn2 layer's ``comfy_attention``
    (newer hosts), handed on to the host's attention as CrossAttention.forward would."""

    def __init__(self, previous=None, preferred=None):
        self.previous = previous
        self.preferred = preferred or {}

    def __call__(self, q, k, v, extra_options):
        preferred = self.preferred.get(extra_options.get("block_index", 0))
        if preferred is not None:
            extra_options = {**extra_options, PREFERRED_KEY: preferred}
        run = extra_options.get(RUN_KEY)
        if run is None:  # sampled without the OUTER_SAMPLE hook (or outside sampling): no guidance
            if self.previous is not None:
                return self.previous(q, k, v, extra_options)
            return host_attention(q, k, v, None, extra_options)
        return run.attention(q, k, v, extra_options, self.previous)


def cross_attention_blocks(model_patcher) -> list[tuple[str, int, int]]:
    """``(block_name, number, transformer_depth)`` of every UNet block with cross-attention."""
    return [(name, number, len(module.transformer_blocks)) for name, number, module in _spatial_transformers(model_patcher)]


def preferred_attentions(model_patcher, name: str, number: int) -> dict:
    """Transformer index -> the attn2 layer's ``comfy_attention`` (hosts that have one) in block (name, number)."""
    out = {}
    for n, k, module in _spatial_transformers(model_patcher):
        if (n, k) == (name, number):
            for index, b in enumerate(module.transformer_blocks):
                preferred = getattr(getattr(b, "attn2", None), "comfy_attention", None)
                if preferred is not None:
                    out[index] = preferred
    return out


def _spatial_transformers(model_patcher):
    unet = getattr(model_patcher.model, "diffusion_model", None)
    groups = [("input", getattr(unet, "input_blocks", None)), ("middle", [getattr(unet, "middle_block", None)]),
              ("output", getattr(unet, "output_blocks", None))]
    out = []
    for name, blocks in groups:
        for number, block in enumerate(blocks or ()):
            for module in block or ():
                if isinstance(module, SpatialTransformer) and any(
                        getattr(b, "attn2", None) is not None for b in module.transformer_blocks):
                    out.append((name, number, module))
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
    try:
        family = model_family(model)  # SD1.x, SD2.x or SDXL; anything else is named and refused
    except ModelFamilyError as e:
        raise ValueError(f"{node}: {e}") from None
    blocks = cross_attention_blocks(model)
    if not blocks:
        raise ValueError(
            f"{node}: this {family.label} model has no UNet cross-attention block that layout guidance can "
            "find; load the checkpoint with CheckpointLoaderSimple (a UNet replaced by another pack is not supported)"
        )
    if settings.weight == 0:
        return model
    m = model.clone()

    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for name, number, depth in blocks:
        preferred = preferred_attentions(model, name, number)
        m.set_model_attn2_replace(GuidedAttn2(_own_previous(existing.get((name, number))), preferred), name, number)
        for index in range(depth):  # replacements keyed per transformer take precedence: wrap those too
            previous = existing.get((name, number, index))
            if previous is not None:
                m.set_model_attn2_replace(GuidedAttn2(_own_previous(previous), preferred), name, number, index)

    def outer_sample(executor, *args, **kwargs):
        guider = executor.class_obj
        noise = _argument(args, kwargs, 0, "noise")
        _check_positive(guider, node)
        # σ bounds from the model as sampled (a later ModelSampling node may have changed its σ range)
        run = GuidanceRun(layout, settings, step_range(guider.model_patcher, start_percent, end_percent), node,
                          attend=functools.partial(host_attention, masked=masked_attention()),  # once per run
                          positive=lambda: guider.conds.get("positive"))  # the entries as sampling holds them
        run.check_latent(int(noise.shape[-2]), int(noise.shape[-1]))
        run.bind()
        options = guider.model_options.setdefault("transformer_options", {})
        options[RUN_KEY] = run
        try:
            return executor(*args, **kwargs)
        finally:
            options.pop(RUN_KEY, None)

    W = comfy.patcher_extension.WrappersMP
    m.remove_wrappers_with_key(W.OUTER_SAMPLE, WRAPPER_KEY)
    m.add_wrapper_with_key(W.OUTER_SAMPLE, WRAPPER_KEY, outer_sample)
    m.remove_wrappers_with_key(W.CALC_COND_BATCH, WRAPPER_KEY)
    m.add_wrapper_with_key(W.CALC_COND_BATCH, WRAPPER_KEY, _model_call)
    return m


def step_range(model_patcher, start_percent: float, end_percent: float) -> StepRange:
    """The guided σ range of ``model_patcher``'s sampling, as core ControlNet reads percents."""
    sampling = model_patcher.get_model_object("model_sampling")
    return StepRange(float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))


def _check_positive(guider, node: str) -> None:
    """The guider must hold positive conditioning (CFGGuider and its subclasses keep it as conds["positive"])."""
    conds = getattr(guider, "conds", None)
    if not isinstance(conds, dict) or "positive" not in conds:
        raise LayoutGuidanceError(
            f"{node}: the guider {type(guider).__name__} has no 'positive' conditioning, so there is no "
            "prompt to guide; use a core guider (CFGGuider, BasicGuider, DualCFGGuider, PerpNegGuider) "
            "or KSampler"
        )


def _argument(args: tuple, kwargs: dict, index: int, name: str):
    """An executor's argument by position or by name, whichever the host used."""
    return args[index] if len(args) > index else kwargs[name]


def _model_call(executor, *args, **kwargs):
    """CALC_COND_BATCH wrapper: ``(model, conds, x_in, timestep, model_options, ...)`` passed on as given."""
    options = _argument(args, kwargs, 4, "model_options")
    run = options.get("transformer_options", {}).get(RUN_KEY)
    if run is not None:
        run.model_call(_argument(args, kwargs, 1, "conds"), _argument(args, kwargs, 3, "timestep"))
    return executor(*args, **kwargs)


__all__ = ["GuidedAttn2", "LayoutGuidanceError", "apply_layout_guidance", "applies_masks", "cross_attention_blocks",
           "host_attention", "masked_attention", "step_range"]
