"""What the pack detects about its host, on the real ComfyUI 0.3.64; newer hosts' branches by their rules.

Newer hosts (0.38.x) are read, not run (see docs/compatibility.md): their branches are
tested through the pure decisions the adapters take from the host's capabilities, and the
0.3.64 branch by running it.
"""

import json
import sys
from types import SimpleNamespace

import pytest
import torch

TEXT = "a dog and a cat"
SIZE = 64


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


# --- DynamicVRAM: training works on a patcher that loads every weight -------------------------

def test_the_static_source_follows_the_patchers_capabilities(host):
    training = pack_module(host, "comfy_adapters.training")
    assert training.static_source(dynamic=False, has_delegate=False) == "clone"
    assert training.static_source(dynamic=False, has_delegate=True) == "clone"
    assert training.static_source(dynamic=True, has_delegate=True) == "delegate"  # core CFGGuider's way
    assert training.static_source(dynamic=True, has_delegate=False) == "reload"  # clone(disable_dynamic=True)


def test_on_0_3_64_training_takes_a_plain_clone_and_the_clip_as_it_is(host, sd2):
    training = pack_module(host, "comfy_adapters.training")
    model, clip, _vae = sd2
    assert not hasattr(model, "is_dynamic")  # 0.3.64 has no DynamicVRAM
    assert not training.dynamic_vram(model) and not training.dynamic_vram(clip.patcher)
    patcher = training.static_patcher(model, "MODEL")
    assert type(patcher) is type(model) and patcher is not model and patcher.model is model.model
    assert training.static_clip(clip) is clip


def test_the_training_flag_is_set_for_the_run_and_restored_where_the_host_has_one(host):
    training = pack_module(host, "comfy_adapters.training")
    import comfy.model_management

    assert not hasattr(comfy.model_management, "in_training")  # 0.3.64
    with training.host_training_flag():
        assert not hasattr(comfy.model_management, "in_training")  # not invented where absent
    newer = SimpleNamespace(in_training=False)  # the flag as 0.38's model_management holds it
    with training.host_training_flag(newer):
        assert newer.in_training is True
    assert newer.in_training is False
    with pytest.raises(RuntimeError), training.host_training_flag(newer):
        raise RuntimeError("interrupted")
    assert newer.in_training is False


# --- masked attention: only functions that apply the mask ----------------------------------

@pytest.mark.parametrize("name,sage_flag,applies", [
    ("attention_pytorch", False, True), ("attention_sub_quad", False, True), ("attention_split", False, True),
    ("attention_basic", False, True), ("attention_xformers", False, True),
    ("attention_comfy_kitchen_int8", False, True),  # 0.38: the mask goes to comfy_kitchen's kernel
    ("attention3_sage", False, True),  # 0.38: falls back to attention_pytorch itself when masked
    ("attention_sage", False, False),  # 0.3.64: sageattn ignores attn_mask
    ("attention_sage", True, True),  # 0.38 (SAGE_ATTENTION_SUPPORTS_MASK defined): applies or falls back
    ("attention_flash", True, False),  # refuses the mask, logs and falls back on every call
    ("my_pack_attention", True, False),
])
def test_which_attention_functions_apply_masks(host, name, sage_flag, applies):
    patch = pack_module(host, "comfy_adapters.guidance_patch")
    assert patch.applies_masks(name, sage_flag) is applies


def test_on_0_3_64_a_mask_dropping_backend_is_replaced_by_sdpa(host, monkeypatch):
    patch = pack_module(host, "comfy_adapters.guidance_patch")
    import comfy.ldm.modules.attention as attention

    assert not hasattr(attention, patch.SAGE_MASK_FLAG)
    assert patch.masked_attention() is attention.optimized_attention_masked  # the CPU default applies masks
    for dropping in (attention.attention_sage, attention.attention_flash):
        monkeypatch.setattr(attention, "optimized_attention_masked", dropping)
        assert patch.masked_attention() is attention.attention_pytorch


# --- wrappers pass every argument through ----------------------------------------------------

def test_a_layers_preferred_attention_reaches_the_hosts_attention_as_crossattention_hands_it(host, sd2, monkeypatch):
    """0.38's CrossAttention.forward passes its ``comfy_attention`` (a kernel stored with some checkpoints) as
    ``preferred_attention``; so do unguided rows under the pack's attn2 replacement. 0.3.64 has none."""
    import comfy.ldm.modules.attention as attention

    gp = pack_module(host, "comfy_adapters.guidance_patch")
    model, _clip, _vae = sd2
    assert gp.preferred_attentions(model, "input", 1) == {}  # 0.3.64: no comfy_attention on the layers
    layer = model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn2
    marker = SimpleNamespace(function=None)  # 0.38's ComfyAttention with no kernel loaded
    monkeypatch.setattr(layer, "comfy_attention", marker, raising=False)
    assert gp.preferred_attentions(model, "input", 1) == {0: marker}
    seen = []
    monkeypatch.setattr(attention, "optimized_attention", lambda *a, **kw: seen.append(kw) or a[0])
    q, k, v = torch.zeros(2, 4, 64), torch.zeros(2, 77, 64), torch.zeros(2, 77, 64)
    options = {"n_heads": 1, "attn_precision": None, "block": ("input", 1), "block_index": 0}
    gp.GuidedAttn2(preferred={0: marker})(q, k, v, dict(options))
    gp.GuidedAttn2(preferred={0: marker})(q, k, v, {**options, "block_index": 1})
    gp.GuidedAttn2()(q, k, v, dict(options))
    assert [kw.get("preferred_attention") for kw in seen] == [marker, None, None]
    assert "preferred_attention" not in seen[2]  # a host without the keyword never gets it


def test_both_sampler_wrappers_pass_keyword_arguments_through(host, sd2):
    import comfy.patcher_extension as ext
    import comfy.samplers

    patch = pack_module(host, "comfy_adapters.guidance_patch")
    L = pack_module(host, "guidance.layout")
    model, clip, _vae = sd2
    (pos,) = host.run("Cones2ApplyResidual", clip=clip, text=TEXT)
    (neg,) = host.run("CLIPTextEncode", clip=clip, text="")
    layout = L.Layout(SIZE, SIZE, (L.LayoutSubject("dog", box=L.Box(0, 0, SIZE // 2, SIZE)),))
    (guided,) = host.run("Cones2LayoutGuidance", model=model, layout=layout, weight=0.08, suppression=-1e8,
                         suppression_scope="outside own region (official)",
                         sigma_schedule="log(1+sigma^2)*std (official)", start_percent=0.0, end_percent=1.0)
    guider = comfy.samplers.CFGGuider(guided)
    guider.set_conds(pos, neg)
    guider.conds = {k: [c.copy() for c in v] for k, v in guider.original_conds.items()}
    seen = {}

    def outer_sample(noise, latent_image, *args, latent_shapes=None, **kwargs):  # 0.38's signature tail
        seen["outer"] = (latent_shapes, kwargs)
        seen["run"] = guider.model_options["transformer_options"].get(patch.RUN_KEY)
        return noise

    wrappers = guided.get_all_wrappers(ext.WrappersMP.OUTER_SAMPLE)
    noise = torch.zeros(1, 4, SIZE // 8, SIZE // 8)
    ext.WrapperExecutor.new_class_executor(outer_sample, guider, wrappers).execute(
        noise, noise, None, torch.tensor([1.0, 0.0]), latent_shapes=[noise.shape], future_option=7)
    assert seen["outer"] == ([noise.shape], {"future_option": 7})
    run = seen["run"]
    assert run is not None and patch.RUN_KEY not in guider.model_options["transformer_options"]

    def calc_cond_batch(model_, conds, x_in, timestep, model_options, **kwargs):
        seen["calc"] = kwargs
        return [x_in]

    options = {"transformer_options": {patch.RUN_KEY: run}}
    calc = guided.get_all_wrappers(ext.WrappersMP.CALC_COND_BATCH)
    positive = guider.conds["positive"]
    run.positive = lambda: positive
    ext.WrapperExecutor.new_executor(calc_cond_batch, calc).execute(
        None, conds=[positive, guider.conds["negative"]], x_in=noise, timestep=torch.tensor([5.0]),
        model_options=options, future_option=8)  # by name: the wrapper reads what it needs either way
    assert seen["calc"] == {"future_option": 8}
    assert run.guided_chunks([0, 1], [positive[0]["uuid"], guider.conds["negative"][0]["uuid"]]) == [
        (0, positive[0]["uuid"])]


# --- the token map survives core nodes that copy or save conditioning -------------------------

def test_the_recorded_token_map_is_text_that_saved_conditioning_keeps(host, sd2):
    """Core SaveConditioning (0.38, comfy_extras/nodes_cond.py) keeps tensors, lists of tensors and
    bool/int/float/str options (the last as JSON metadata) and refuses other objects."""
    keys = pack_module(host, "guidance.conditioning_keys")
    _model, clip, _vae = sd2
    (pos,) = host.run("Cones2ApplyResidual", clip=clip, text=TEXT)
    options = pos[0][1]
    ours = {k: v for k, v in options.items() if k.startswith("cones2_")}
    assert list(ours) == [keys.PROMPT_TOKENS] and isinstance(ours[keys.PROMPT_TOKENS], str)
    reloaded = json.loads(json.dumps({k: v for k, v in options.items() if isinstance(v, str)}))
    tokens = keys.prompt_tokens(reloaded)
    assert tokens == keys.prompt_tokens(options) and tokens.occurrence("cat") == (5,)


COPY_NODES = {
    "ConditioningCombine": lambda c, other: {"conditioning_1": c, "conditioning_2": other},
    "ConditioningAverage": lambda c, other: {"conditioning_to": c, "conditioning_from": other,
                                             "conditioning_to_strength": 0.7},
    "ConditioningConcat": lambda c, other: {"conditioning_to": c, "conditioning_from": other},
    "ConditioningSetArea": lambda c, other: {"conditioning": c, "width": SIZE, "height": SIZE, "x": 0, "y": 0,
                                             "strength": 1.0},
    "ConditioningSetAreaPercentage": lambda c, other: {"conditioning": c, "width": 1.0, "height": 1.0, "x": 0.0,
                                                       "y": 0.0, "strength": 1.0},
    "ConditioningSetAreaStrength": lambda c, other: {"conditioning": c, "strength": 0.8},
    "ConditioningSetMask": lambda c, other: {"conditioning": c, "mask": torch.ones(1, SIZE, SIZE),
                                             "set_cond_area": "default", "strength": 1.0},
    "ConditioningSetTimestepRange": lambda c, other: {"conditioning": c, "start": 0.0, "end": 1.0},
    "ConditioningZeroOut": lambda c, other: {"conditioning": c},
}


@pytest.mark.parametrize("node", list(COPY_NODES))
def test_core_conditioning_nodes_keep_the_token_map_and_guidance_still_runs(host, sd2, node):
    keys = pack_module(host, "guidance.conditioning_keys")
    L = pack_module(host, "guidance.layout")
    model, clip, _vae = sd2
    (pos,) = host.run("Cones2ApplyResidual", clip=clip, text=TEXT)
    (other,) = host.run("CLIPTextEncode", clip=clip, text="a photo")
    (neg,) = host.run("CLIPTextEncode", clip=clip, text="")
    (out,) = host.run(node, **COPY_NODES[node](pos, other))
    assert keys.prompt_tokens(out[0][1]) == keys.prompt_tokens(pos[0][1])

    layout = L.Layout(SIZE, SIZE, (L.LayoutSubject("dog", box=L.Box(0, 0, SIZE // 2, SIZE)),
                                   L.LayoutSubject("cat", box=L.Box(SIZE // 2, 0, SIZE // 2, SIZE))))
    (guided,) = host.run("Cones2LayoutGuidance", model=model, layout=layout, weight=0.08, suppression=-1e8,
                         suppression_scope="outside own region (official)",
                         sigma_schedule="log(1+sigma^2)*std (official)", start_percent=0.0, end_percent=1.0)
    m = guided.clone()
    masks = []

    def probe(func, *args, **kwargs):
        mask = args[4] if len(args) > 4 else kwargs.get("mask")
        if mask is not None:
            masks.append(mask)
        return func(*args, **kwargs)

    m.model_options["transformer_options"]["optimized_attention_override"] = probe
    (latent,) = host.run("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    (samples,) = host.run("KSampler", model=m, seed=1, steps=1, cfg=7.0, sampler_name="euler", scheduler="normal",
                          positive=out, negative=neg, latent_image=latent, denoise=1.0)
    assert torch.isfinite(samples["samples"]).all()
    assert masks, f"{node}: layout guidance found no guided rows in the conditioning it made"
