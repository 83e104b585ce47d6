"""Layout guidance in the real ComfyUI with the tiny SD2-architecture UNet (random weights).

Tests marked ``@every_family`` also run on the tiny SD1.5 UNet and on Segmind Vega's (SDXL
family: multi-transformer blocks, no middle transformer, the ADM input).

Cross-attention is observed through ComfyUI's own ``optimized_attention_override`` hook
(it sees every attention call with its q, k and mask) and module hooks on the attention
output projections; nothing of ComfyUI is replaced.
"""

import sys

import pytest
import torch
from cones2.devtools.comfy_host import load_core_extras
from cones2.guidance.attention_bias import SuppressionScope
from cones2_test_support.guidance_oracle import official_attention as official_attention_of_one
from cones2_test_support.guidance_oracle import oracle_bias

OFFICIAL = "outside own region (official)"
PAPER = "other subjects' regions (paper)"
SCHEDULE = "log(1+sigma^2)*std (official)"
TEXT = "a dog and a cat"
SIZE = 64  # 8x8 latent: fast on a CPU


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def two_subject_layout(host, width=SIZE, height=SIZE):
    L = pack_module(host, "guidance.layout")
    return L.Layout(width, height, (
        L.LayoutSubject("dog", 1, box=L.Box(0, 0, width // 2, height)),
        L.LayoutSubject("cat", 1, box=L.Box(width // 2, 0, width // 2, height)),
    ))


def guidance_options(**kw):
    opts = {"weight": 0.08, "suppression": -1e8, "suppression_scope": OFFICIAL, "sigma_schedule": SCHEDULE,
            "start_percent": 0.0, "end_percent": 1.0}
    opts.update(kw)
    return opts


class Probe:
    """Every cross-attention computation of a model: q, k, mask and the batch's chunk layout."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: stay one probe
        return self

    def __call__(self, func, *args, **kwargs):
        q, k, _v, heads = args[:4]
        mask = args[4] if len(args) > 4 else kwargs.get("mask")
        to = kwargs.get("transformer_options") or {}
        out = func(*args, **kwargs)
        if k.shape[1] % 77 == 0 and k.shape[1] != q.shape[1]:
            self.calls.append({"q": q.clone(), "k": k.clone(), "v": _v.clone(), "out": out.clone(),
                               "mask": None if mask is None else mask.clone(), "func": func.__name__,
                               "heads": heads, "branches": list(to.get("cond_or_uncond", [])),
                               "shape": list(to["activations_shape"]), "block": to.get("block"),
                               "sigma": float(to["sigmas"].flatten()[0])})
        return out


def probed(model):
    m = model.clone()
    probe = Probe()
    m.model_options["transformer_options"]["optimized_attention_override"] = probe
    return m, probe


def mass_inside(probe, layout, subject_rows, guided: bool):
    """Per subject, the share of its tokens' attention that falls inside its region (positive rows)."""
    inside = torch.zeros(len(subject_rows), dtype=torch.float64)
    total = torch.zeros_like(inside)
    for call in probe.calls:
        if guided != (call["mask"] is not None):
            continue
        q, k, heads = call["q"].double(), call["k"].double(), call["heads"]
        if not guided:  # the positive chunk of the plain batch
            batch = q.shape[0] // len(call["branches"])
            j = call["branches"].index(0)
            q, k = q[j * batch:(j + 1) * batch], k[j * batch:(j + 1) * batch]
        b, n, c = q.shape
        d = c // heads
        s = (q.view(b, n, heads, d).transpose(1, 2) @ k.view(b, -1, heads, d).transpose(1, 2).transpose(-1, -2))
        s = s * d**-0.5
        if guided:
            s = s + call["mask"].double()[:, None]
        p = s.softmax(-1)
        h, w = call["shape"][-2:]
        regions = layout.region_masks(h, w).flatten(1)
        length = 77
        for i, rows in enumerate(subject_rows):
            cols = [r + t for r in rows for t in range(0, k.shape[1], length)]
            mass = p[..., cols].sum(-1)  # [b, heads, n]
            inside[i] += mass[..., regions[i]].sum()
            total[i] += mass.sum()
    assert total.min() > 0, "no cross-attention call was recorded"
    return inside / total


def official_attention(call, layout, subject_rows, weight=0.08, suppression=-1e8):
    """The oracle for a recorded guided call's rows (float64), each image's std over its prompt's 77 tokens."""
    h, w = call["shape"][-2:]
    m = oracle_bias(layout, subject_rows, h, w, 77, suppression, SuppressionScope.OUTSIDE_OWN_REGION)
    return torch.stack([official_attention_of_one(q, k, v, call["heads"], m, call["sigma"], weight, std_tokens=77)
                        for q, k, v in zip(call["q"], call["k"], call["v"], strict=True)])


FAMILIES = ["sd2", "sd1", "sdxl"]
every_family = pytest.mark.parametrize("family", FAMILIES, indirect=True)
_PARTS = {}  # per family, built once: SDXL's text encoders are slow on a CPU


@pytest.fixture
def family(request):
    """The family a test runs on: SD2 unless it is marked ``@every_family``."""
    return getattr(request, "param", "sd2")


@pytest.fixture
def parts(host, request, family):
    if family not in _PARTS:
        _PARTS[family] = make_parts(host, request.getfixturevalue(family))
    return _PARTS[family]


def make_parts(host, checkpoint):
    model, clip, _vae = checkpoint
    load_core_extras(host)
    (pos,) = host.run("Cones2ApplyResidual", clip=clip, text=TEXT)
    (neg,) = host.run("CLIPTextEncode", clip=clip, text="")
    (middle,) = host.run("Cones2ApplyResidual", clip=clip, text="a cat and a dog")  # DualCFGGuider's cond2
    (latent,) = host.run("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    keys = pack_module(host, "guidance.conditioning_keys")
    tokens = keys.prompt_tokens(pos[0][1])
    rows = [tokens.occurrence("dog"), tokens.occurrence("cat")]
    return {"model": model, "clip": clip, "pos": pos, "neg": neg, "middle": middle, "latent": latent, "rows": rows,
            "layout": two_subject_layout(host)}


def guide(host, model, layout, **kw):
    (m,) = host.run("Cones2LayoutGuidance", model=model, layout=layout, **guidance_options(**kw))
    return m


def ksampler(host, model, p, steps=1, cfg=7.0, positive=None, negative=None, latent=None, seed=3):
    (out,) = host.run("KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                      scheduler="normal", positive=positive or p["pos"], negative=negative or p["neg"],
                      latent_image=latent or p["latent"], denoise=1.0)
    return out["samples"]


# --- guidance moves attention ---------------------------------------------------------------

@every_family
@pytest.mark.parametrize("scope", [OFFICIAL, PAPER])
def test_guidance_raises_each_subjects_attention_mass_inside_its_box(host, parts, scope):
    plain, plain_probe = probed(parts["model"])
    ksampler(host, plain, parts)
    base = mass_inside(plain_probe, parts["layout"], parts["rows"], guided=False)

    guided, probe = probed(guide(host, parts["model"], parts["layout"], suppression_scope=scope))
    ksampler(host, guided, parts)
    got = mass_inside(probe, parts["layout"], parts["rows"], guided=True)
    assert torch.all(got > base + 0.05), (base, got)
    if scope == OFFICIAL:  # γ− = −1e8 on everything outside the region: a hard mask
        assert torch.all(got > 0.999), got
    # every cross-attention layer of the UNet was guided
    layers = {c["block"] for c in plain_probe.calls}
    assert {c["block"] for c in probe.calls if c["mask"] is not None} == layers and len(layers) >= 3


@every_family
def test_negative_rows_and_self_attention_are_bitwise_unchanged(host, parts):
    def record(model):
        m, probe = probed(model)
        outs = {"attn1": [], "attn2": [], "unet": []}
        hooks = []
        for mod in m.model.diffusion_model.modules():
            if hasattr(mod, "attn1") and hasattr(mod, "attn2"):
                for name in ("attn1", "attn2"):
                    hooks.append(getattr(mod, name).to_out.register_forward_pre_hook(
                        lambda _m, a, name=name: outs[name].append(a[0].clone())))

        def unet_wrapper(apply_model, args):
            out = apply_model(args["input"], args["timestep"], **args["c"])
            outs["unet"].append((list(args["cond_or_uncond"]), out.clone()))
            return out

        m.set_model_unet_function_wrapper(unet_wrapper)
        try:
            ksampler(host, m, parts, steps=1)  # one UNet call: both runs see the same inputs
        finally:
            for h in hooks:
                h.remove()
        return outs, probe

    plain, _ = record(parts["model"])
    guided, probe = record(guide(host, parts["model"], parts["layout"]))
    assert any(c["mask"] is not None for c in probe.calls)  # guidance did run
    (branches, out_p), = plain["unet"]
    (branches_g, out_g), = guided["unet"]
    assert branches == branches_g
    neg, pos = branches.index(1), branches.index(0)
    assert torch.equal(out_p[neg], out_g[neg])  # the negative prediction, bit for bit
    assert not torch.equal(out_p[pos], out_g[pos])
    for name in ("attn1", "attn2"):
        assert len(plain[name]) == len(guided[name]) >= 3
        for a, b in zip(plain[name], guided[name], strict=True):
            assert torch.equal(a[neg], b[neg]), name
    # the first self-attention precedes any guided layer: its positive rows are equal too
    assert torch.equal(plain["attn1"][0], guided["attn1"][0])
    # and the patched model has no self-attention patch at all
    to = guide(host, parts["model"], parts["layout"]).model_options["transformer_options"]
    assert "attn1" not in to.get("patches_replace", {}) and not to.get("patches", {}).get("attn1_patch")


@every_family
def test_negative_predictions_match_the_unpatched_unet_at_every_step(host, parts):
    guided = guide(host, parts["model"], parts["layout"]).clone()
    checked = []

    def unet_wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        c = dict(args["c"])
        to = dict(c["transformer_options"])
        to.pop("patches_replace")  # the same call without the pack
        c["transformer_options"] = to
        ref = apply_model(args["input"], args["timestep"], **c)
        neg = list(args["cond_or_uncond"]).index(1)
        batch = out.shape[0] // len(args["cond_or_uncond"])
        rows = slice(neg * batch, (neg + 1) * batch)
        checked.append(torch.equal(out[rows], ref[rows]) and not torch.equal(out, ref))
        return out

    guided.set_model_unet_function_wrapper(unet_wrapper)
    ksampler(host, guided, parts, steps=2)
    assert checked == [True, True]


def test_a_plain_unet_call_through_the_guided_model_outside_sampling_is_unchanged(host, parts):
    guided = guide(host, parts["model"], parts["layout"])
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10.0, 10.0])
    ctx = torch.cat([parts["pos"][0][0], parts["neg"][0][0]])
    with torch.inference_mode():
        a = parts["model"].model.apply_model(x, t, c_crossattn=ctx, transformer_options={})
        b = guided.model.apply_model(x, t, c_crossattn=ctx, transformer_options=dict(
            guided.model_options["transformer_options"]))
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["attention_sage", "attention_flash"])
def test_a_masked_attention_backend_that_cannot_take_masks_is_not_handed_the_bias(host, parts, backend, monkeypatch,
                                                                                  caplog):
    import comfy.ldm.modules.attention as attention

    # --use-sage-attention / --use-flash-attention make these ComfyUI's masked attention: sageattn
    # ignores attn_mask, attention_flash raises on any mask and falls back to SDPA with a warning
    monkeypatch.setattr(attention, "optimized_attention_masked", getattr(attention, backend))
    guided, probe = probed(guide(host, parts["model"], parts["layout"]))
    with caplog.at_level("WARNING"):
        ksampler(host, guided, parts)
    masked = [c for c in probe.calls if c["mask"] is not None]
    assert masked
    assert {c["func"] for c in masked} == {"attention_pytorch"}
    assert not [r for r in caplog.records if "attention" in r.getMessage().lower()]
    for call in masked:
        want = official_attention(call, parts["layout"], parts["rows"])
        torch.testing.assert_close(call["out"].double(), want, rtol=1e-4, atol=1e-5)


@every_family
def test_the_explicit_path_gives_the_official_formula_in_the_real_unet(host, parts, monkeypatch):
    lg = pack_module(host, "guidance.layout_guidance")
    monkeypatch.setattr(lg.GuidanceRun, "explicit", lambda self, device: True)  # the default off the CPU
    guided, probe = probed(guide(host, parts["model"], parts["layout"]))
    outputs = []  # what each cross-attention layer's output projection receives
    attn2 = [b.attn2 for b in guided.model.diffusion_model.modules() if hasattr(b, "attn2") and hasattr(b, "attn1")]
    hooks = [a.to_out.register_forward_pre_hook(lambda _m, args: outputs.append(args[0].clone())) for a in attn2]
    try:
        ksampler(host, guided, parts)
    finally:
        for h in hooks:
            h.remove()
    assert probe.calls and all(c["mask"] is None for c in probe.calls)  # no masked kernel was asked
    assert len(outputs) == len(probe.calls)  # one plain whole-batch call per cross-attention layer
    for call, out in zip(probe.calls, outputs, strict=True):
        j = call["branches"].index(0)
        pos = {key: call[key][j:j + 1] for key in ("q", "k", "v")}
        want = official_attention({**call, **pos}, parts["layout"], parts["rows"])
        torch.testing.assert_close(out[j:j + 1].double(), want, rtol=1e-4, atol=1e-5)
        neg = 1 - j
        torch.testing.assert_close(out[neg], call["out"][neg], rtol=0, atol=0)


# --- every core sampler --------------------------------------------------------------------

def run_sampler(host, kind, model, p, seed=3):
    if kind == "KSampler":
        return ksampler(host, model, p, seed=seed)
    if kind == "KSamplerAdvanced":
        (out,) = host.run("KSamplerAdvanced", model=model, add_noise="enable", noise_seed=seed, steps=1, cfg=7.0,
                          sampler_name="euler", scheduler="normal", positive=p["pos"], negative=p["neg"],
                          latent_image=p["latent"], start_at_step=0, end_at_step=10000,
                          return_with_leftover_noise="disable")
        return out["samples"]
    (sigmas,) = host.run("BasicScheduler", model=model, scheduler="normal", steps=1, denoise=1.0)
    (sampler,) = host.run("KSamplerSelect", sampler_name="euler")
    if kind == "SamplerCustom":
        out, _ = host.run("SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=7.0,
                          positive=p["pos"], negative=p["neg"], sampler=sampler, sigmas=sigmas,
                          latent_image=p["latent"])
        return out["samples"]
    (noise,) = host.run("RandomNoise", noise_seed=seed)
    if kind == "DualCFGGuider":  # evaluates [negative, middle, positive]: the positive is the last branch
        (guider,) = host.run("DualCFGGuider", model=model, cond1=p["pos"], cond2=p["middle"], negative=p["neg"],
                             cfg_conds=7.0, cfg_cond2_negative=3.0, style="regular")
    elif kind == "PerpNegGuider":  # [positive, negative, empty]
        guider = host.node("PerpNegGuider").execute(model=model, positive=p["pos"], negative=p["neg"],
                                                    empty_conditioning=p["neg"], cfg=7.0, neg_scale=1.0)[0]
    else:
        (guider,) = host.run("CFGGuider", model=model, positive=p["pos"], negative=p["neg"], cfg=7.0)
    out, _ = host.run("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                      latent_image=p["latent"])
    return out["samples"]


def guided_branches(probe):
    """The branch (cond_or_uncond value) of every chunk the guided calls recomputed (matched by q and k:
    the keys tell prompts apart, the queries images)."""
    out = set()
    for plain, guided in zip(probe.calls, probe.calls[1:], strict=False):
        if plain["mask"] is None and guided["mask"] is not None:
            batch = plain["q"].shape[0] // len(plain["branches"])
            for j, branch in enumerate(plain["branches"]):
                rows = slice(j * batch, (j + 1) * batch)
                for i in range(0, guided["q"].shape[0], batch):
                    if (torch.equal(plain["q"][rows], guided["q"][i:i + batch])
                            and torch.equal(plain["k"][rows], guided["k"][i:i + batch])):
                        out.add(branch)
    return out


SAMPLERS = ["KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "DualCFGGuider",
            "PerpNegGuider"]
POSITIVE_BRANCH = {"DualCFGGuider": 2}  # every other guider evaluates the positive as branch 0


@pytest.mark.parametrize("kind", SAMPLERS)
def test_guidance_works_through_every_core_sampler_and_guider(host, parts, kind):
    guided, probe = probed(guide(host, parts["model"], parts["layout"]))
    out = run_sampler(host, kind, guided, parts)
    got = mass_inside(probe, parts["layout"], parts["rows"], guided=True)
    assert torch.all(got > 0.999)
    assert guided_branches(probe) == {POSITIVE_BRANCH.get(kind, 0)}  # only the positive prompt is guided
    assert torch.isfinite(out).all()
    assert not torch.equal(out, run_sampler(host, kind, parts["model"], parts))
    # the run's state was dropped with the sampling call
    assert "cones2_layout_guidance" not in guided.model_options["transformer_options"]


def test_the_guided_sampler_equals_ksampler_on_the_guided_model(host, parts):
    opts = guidance_options()
    (a,) = host.run("Cones2LayoutGuidedSampler", model=parts["model"], seed=5, steps=2, cfg=7.0,
                    sampler_name="euler", scheduler="normal", positive=parts["pos"], negative=parts["neg"],
                    layout=parts["layout"], latent_image=parts["latent"], denoise=1.0, self_recurrence=False, **opts)
    b = ksampler(host, guide(host, parts["model"], parts["layout"]), parts, steps=2, seed=5)
    assert torch.equal(a["samples"], b)


def count_unet_calls(model):
    m = model.clone()
    calls = []

    def wrapper(apply_model, args):
        calls.append(float(args["timestep"][0]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


def recurrent_run(host, parts, model, sampler_name, recur, end=1.0, steps=3, seed=5):
    (out,) = host.run("Cones2LayoutGuidedSampler", model=model, seed=seed, steps=steps, cfg=7.0,
                      sampler_name=sampler_name, scheduler="normal", positive=parts["pos"], negative=parts["neg"],
                      layout=parts["layout"], latent_image=parts["latent"], denoise=1.0, self_recurrence=recur,
                      **guidance_options(end_percent=end))
    return out["samples"]


@every_family
@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_2m"])
def test_self_recurrence_repeats_each_guided_step(host, parts, sampler_name):
    model, calls = count_unet_calls(parts["model"])
    plain = recurrent_run(host, parts, model, sampler_name, False)
    plain_calls = list(calls)
    assert len(plain_calls) == 3
    calls.clear()
    rec = recurrent_run(host, parts, model, sampler_name, True)
    assert len(calls) == 6  # every step guided: each taken twice, at the same σ
    assert calls[0::2] == calls[1::2] == plain_calls
    assert torch.isfinite(rec).all() and not torch.equal(rec, plain)
    calls.clear()
    recurrent_run(host, parts, model, sampler_name, True, end=0.5)
    guided_steps = sum(1 for s in plain_calls if s > _sigma_at(parts["model"], 0.5))
    assert len(calls) == 3 + guided_steps and 0 < guided_steps < 3


def test_self_recurrence_inpaints_only_inside_the_noise_mask(host, parts):
    """Core KSAMPLER wraps the self-recurrent function, so its inpaint handling applies: the latent outside the
    mask comes back exactly as it went in, and every step is still taken twice."""
    model, calls = count_unet_calls(parts["model"])
    source = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, SIZE // 8, SIZE // 8)
    mask[..., :, SIZE // 16:] = 1.0  # repaint the right half only
    latent = {"samples": source, "noise_mask": mask}
    (out,) = host.run("Cones2LayoutGuidedSampler", model=model, seed=5, steps=3, cfg=7.0, sampler_name="euler",
                      scheduler="normal", positive=parts["pos"], negative=parts["neg"], layout=parts["layout"],
                      latent_image=latent, denoise=1.0, self_recurrence=True, **guidance_options())
    samples = out["samples"]
    assert len(calls) == 6 and out["noise_mask"] is mask
    torch.testing.assert_close(samples[..., : SIZE // 16], source[..., : SIZE // 16], rtol=0, atol=1e-5)
    assert (samples[..., SIZE // 16:] - source[..., SIZE // 16:]).abs().mean() > 0.1


def test_self_recurrence_follows_the_official_recurrence_exactly(host, parts):
    # euler, 2 steps, both guided: step σ0→σ1, re-noise by sqrt(σ0²−σ1²)·ε, step again; same at σ1→0
    m = parts["model"].clone()
    calls = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append((args["input"].clone(), float(args["timestep"][0]), out.clone(), list(args["cond_or_uncond"])))
        return out

    m.set_model_unet_function_wrapper(wrapper)
    seed, cfg = 5, 7.0
    final = recurrent_run(host, parts, m, "euler", True, steps=2, seed=seed)
    assert len(calls) == 4

    def denoised(call):  # CFG as core combines it
        _, _, out, branches = call
        cond, uncond = out[branches.index(0)], out[branches.index(1)]
        return (uncond + (cond - uncond) * cfg)[None]

    renoise = torch.Generator().manual_seed(seed + 1)
    x = calls[0][0][:1]
    for i, (s_from, s_to) in enumerate([(calls[0][1], calls[2][1]), (calls[2][1], 0.0)]):
        first, second = calls[2 * i], calls[2 * i + 1]
        assert first[1] == second[1] == s_from
        torch.testing.assert_close(first[0][:1], x)
        x = x + (x - denoised(first)) / s_from * (s_to - s_from)
        eps = torch.randn(x.shape, generator=renoise)
        x = x + (s_from ** 2 - s_to ** 2) ** 0.5 * eps
        torch.testing.assert_close(second[0][:1], x, rtol=1e-5, atol=1e-4)
        x = x + (x - denoised(second)) / s_from * (s_to - s_from)
    torch.testing.assert_close(final, parts["model"].model.process_latent_out(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sampler_name", ["uni_pc", "uni_pc_bh2"])
def test_self_recurrence_refuses_a_sampler_that_cannot_take_one_step(host, parts, sampler_name):
    with pytest.raises(ValueError) as e:
        recurrent_run(host, parts, parts["model"], sampler_name, True)
    msg = str(e.value)
    assert msg.startswith("Cones2LayoutGuidedSampler: self_recurrence") and sampler_name in msg
    assert "euler" in msg and "turn self_recurrence off" in msg
    assert torch.isfinite(recurrent_run(host, parts, parts["model"], sampler_name, False, steps=2)).all()


def test_weight_zero_returns_the_model_unpatched(host, parts):
    model = parts["model"]
    assert guide(host, model, parts["layout"], weight=0.0) is model
    m, calls = count_unet_calls(model)
    (out,) = host.run("Cones2LayoutGuidedSampler", model=m, seed=5, steps=2, cfg=7.0, sampler_name="euler",
                      scheduler="normal", positive=parts["pos"], negative=parts["neg"], layout=parts["layout"],
                      latent_image=parts["latent"], denoise=1.0, self_recurrence=True,
                      **guidance_options(weight=0.0))
    assert len(calls) == 2  # no guided step, so nothing repeated
    assert torch.equal(out["samples"], ksampler(host, model, parts, steps=2, seed=5))


def test_self_recurrence_with_a_noise_drawing_sampler_is_seeded(host, parts):
    a = recurrent_run(host, parts, parts["model"], "euler_ancestral", True, steps=2)
    b = recurrent_run(host, parts, parts["model"], "euler_ancestral", True, steps=2)
    c = recurrent_run(host, parts, parts["model"], "euler_ancestral", True, steps=2, seed=6)
    assert torch.isfinite(a).all() and torch.equal(a, b) and not torch.equal(a, c)


def _sigma_at(model, percent):
    return float(model.get_model_object("model_sampling").percent_to_sigma(percent))


def test_guided_step_range_follows_start_and_end_percent(host, parts):
    guided, probe = probed(guide(host, parts["model"], parts["layout"], start_percent=0.0, end_percent=0.5))
    ksampler(host, guided, parts, steps=4)
    limit = _sigma_at(parts["model"], 0.5)
    by_sigma = {}
    for c in probe.calls:
        by_sigma.setdefault(c["sigma"], set()).add(c["mask"] is not None)
    assert len(by_sigma) == 4
    for sigma, masked in by_sigma.items():
        assert masked == ({False, True} if sigma > limit else {False}), (sigma, limit)


def test_guided_steps_follow_the_sampling_of_the_model_as_sampled(host, parts):
    # a ModelSampling node after the guidance node changes the σ range: percents map onto the new one
    guided = guide(host, parts["model"], parts["layout"], start_percent=0.0, end_percent=0.2)
    (resampled,) = host.run("ModelSamplingDiscrete", model=guided, sampling="eps", zsnr=True)
    old, new = _sigma_at(parts["model"], 0.2), _sigma_at(resampled, 0.2)
    assert old != new
    resampled, probe = probed(resampled)
    ksampler(host, resampled, parts, steps=20)
    guided_sigmas = {c["sigma"] for c in probe.calls if c["mask"] is not None}
    sigmas = {c["sigma"] for c in probe.calls}
    assert guided_sigmas == {s for s in sigmas if s > new}
    assert guided_sigmas != {s for s in sigmas if s > old}, (old, new, sorted(sigmas))


def test_cfg_one_and_prompts_of_different_lengths(host, parts):
    clip = parts["clip"]
    (long_neg,) = host.run("CLIPTextEncode", clip=clip, text=", ".join(["blurry, low quality"] * 20))
    assert long_neg[0][0].shape[1] == 154
    guided, probe = probed(guide(host, parts["model"], parts["layout"]))
    ksampler(host, guided, parts, negative=long_neg)
    masked = [c for c in probe.calls if c["mask"] is not None]
    assert masked and all(c["k"].shape[1] == 154 and c["mask"].shape[-1] == 154 for c in masked)
    assert torch.all(mass_inside(probe, parts["layout"], parts["rows"], guided=True) > 0.999)

    probe.calls.clear()
    ksampler(host, guided, parts, cfg=1.0)  # no negative pass at all
    assert all(c["branches"] == [0] for c in probe.calls)
    assert torch.all(mass_inside(probe, parts["layout"], parts["rows"], guided=True) > 0.999)


def test_a_batch_of_latents_and_an_odd_aspect_latent(host, parts):
    (latent,) = host.run("EmptyLatentImage", width=72, height=40, batch_size=2)  # 9x5 latent, 5x3 inner layer
    layout = two_subject_layout(host, 72, 40)
    guided, probe = probed(guide(host, parts["model"], layout))
    out = ksampler(host, guided, parts, latent=latent)
    assert out.shape == (2, 4, 5, 9) and torch.isfinite(out).all()
    shapes = {tuple(c["shape"][-2:]) for c in probe.calls if c["mask"] is not None}
    assert (5, 9) in shapes and (3, 5) in shapes
    assert torch.all(mass_inside(probe, layout, parts["rows"], guided=True) > 0.999)


# --- chaining -------------------------------------------------------------------------------

@pytest.mark.parametrize("key,where,shift", [(("input", 1), "input1", 0.5), (("output", 0, 0), "output0", -0.25)],
                         ids=["keyed-by-block", "keyed-by-transformer"])
def test_an_existing_attn2_replacement_is_chained_not_dropped(host, parts, key, where, shift):
    """Another pack's attn2 replacement (a constant shift) keeps running: the negative half is its output bit
    for bit, and the guided positive half is guidance's own output plus exactly that shift."""
    import comfy.ldm.modules.attention as attention

    calls = []

    def patch(q, k, v, extra_options):
        calls.append(1)
        out = attention.optimized_attention(q, k, v, extra_options["n_heads"],
                                            attn_precision=extra_options["attn_precision"])
        return out + shift

    base = parts["model"].clone()
    base.set_model_attn2_replace(patch, *key)

    def to_out_input(model):
        """The input of the patched layer's output projection, for the one UNet call of a 1-step run."""
        m, _ = probed(model)
        unet = m.model.diffusion_model
        block = unet.input_blocks[1] if where == "input1" else unet.output_blocks[0]
        got = []
        hook = block[1].transformer_blocks[0].attn2.to_out.register_forward_pre_hook(
            lambda _m, a: got.append(a[0].clone()))
        try:
            ksampler(host, m, parts, steps=1)
        finally:
            hook.remove()
        (out,) = got
        return out

    patched = to_out_input(base)
    n_plain = len(calls)
    chained = to_out_input(guide(host, base, parts["layout"]))
    assert n_plain > 0 and len(calls) == 2 * n_plain  # the patch ran in the guided run as often as before
    guided_alone = to_out_input(guide(host, parts["model"], parts["layout"]))
    # batch is [positive, negative] or the reverse; the negative half keeps the patch's output bit for bit
    halves = [torch.equal(chained[i], patched[i]) for i in range(2)]
    assert halves.count(True) == 1
    pos = halves.index(False)
    # nothing upstream of the patched layer differs, so: chained = guided (q, k, v) + (patched − plain) = guided + shift
    torch.testing.assert_close(chained[pos] - guided_alone[pos], torch.full_like(chained[pos], shift),
                               rtol=0, atol=1e-4)
    assert not torch.allclose(guided_alone[pos], patched[pos] - shift, atol=1e-4)  # and guidance did act there


def test_applying_guidance_twice_replaces_the_first(host, parts):
    gp = pack_module(host, "comfy_adapters.guidance_patch")
    once = guide(host, parts["model"], parts["layout"])
    twice = guide(host, once, parts["layout"])
    for patch in twice.model_options["transformer_options"]["patches_replace"]["attn2"].values():
        assert isinstance(patch, gp.GuidedAttn2) and patch.previous is None
    import comfy.patcher_extension as pe
    assert len(twice.get_wrappers(pe.WrappersMP.OUTER_SAMPLE, gp.WRAPPER_KEY)) == 1


@every_family
def test_guidance_finds_every_cross_attention_block_of_the_unet(host, parts):
    gp = pack_module(host, "comfy_adapters.guidance_patch")
    blocks = gp.cross_attention_blocks(parts["model"])
    plain, probe = probed(parts["model"])
    ksampler(host, plain, parts, steps=1)
    assert {(n, i) for n, i, _ in blocks} == {c["block"] for c in probe.calls}


# --- bad input ------------------------------------------------------------------------------

def test_an_empty_layout_is_refused_by_the_node(host, parts):
    L = pack_module(host, "guidance.layout")
    with pytest.raises(ValueError, match="Cones2LayoutGuidance: the layout is empty"):
        guide(host, parts["model"], L.Layout(64, 64))
    with pytest.raises(ValueError, match="Cones2LayoutGuidedSampler: the layout is empty"):
        host.run("Cones2LayoutGuidedSampler", model=parts["model"], seed=0, steps=1, cfg=7.0, sampler_name="euler",
                 scheduler="normal", positive=parts["pos"], negative=parts["neg"], layout=L.Layout(64, 64),
                 latent_image=parts["latent"], denoise=1.0, **guidance_options())


def test_a_bad_step_range_is_refused(host, parts):
    with pytest.raises(ValueError, match="Cones2LayoutGuidance: start_percent 0.7 and end_percent 0.3"):
        guide(host, parts["model"], parts["layout"], start_percent=0.7, end_percent=0.3)


def test_a_positive_prompt_from_clip_text_encode_is_refused_when_sampling(host, parts):
    (plain_pos,) = host.run("CLIPTextEncode", clip=parts["clip"], text=TEXT)
    with pytest.raises(ValueError) as e:
        ksampler(host, guide(host, parts["model"], parts["layout"]), parts, positive=plain_pos)
    assert "Cones2LayoutGuidance: the positive prompt was not encoded by Cones2ApplyResidual" in str(e.value)


def test_a_layout_phrase_missing_from_the_prompt_is_refused_when_sampling(host, parts):
    (pos,) = host.run("Cones2ApplyResidual", clip=parts["clip"], text="a dog and a horse")
    with pytest.raises(ValueError) as e:
        ksampler(host, guide(host, parts["model"], parts["layout"]), parts, positive=pos)
    msg = str(e.value)
    assert msg.startswith("Cones2LayoutGuidance: layout subject 'cat': the phrase 'cat' is not in the prompt")
    assert "horse" in msg


def test_a_canvas_with_another_aspect_than_the_latent_is_refused(host, parts):
    (wide,) = host.run("EmptyLatentImage", width=128, height=64, batch_size=1)
    with pytest.raises(ValueError) as e:
        ksampler(host, guide(host, parts["model"], parts["layout"]), parts, latent=wide)
    msg = str(e.value)
    assert "the layout canvas is 64x64" in msg and "128x64" in msg
    # the same aspect at another size is fine: regions scale with the canvas
    (big,) = host.run("EmptyLatentImage", width=128, height=128, batch_size=1)
    big_layout = two_subject_layout(host, 512, 512)
    guided, probe = probed(guide(host, parts["model"], big_layout))
    ksampler(host, guided, parts, latent=big, steps=1)
    assert torch.all(mass_inside(probe, big_layout, parts["rows"], guided=True) > 0.999)


def test_a_non_layout_input_is_refused(host, parts):
    with pytest.raises(ValueError, match="not a CONES2_LAYOUT"):
        guide(host, parts["model"], {"boxes": []})


def test_a_model_of_another_kind_is_refused_naming_what_it_is(host):
    """The SDXL refiner has cross-attention too, but no family's text conditioning: refused by name."""
    import comfy.model_patcher
    import comfy.supported_models

    unet = {"model_channels": 32, "use_linear_in_transformer": True, "context_dim": 1280, "adm_in_channels": 2560,
            "transformer_depth": [1], "use_temporal_attention": False, "in_channels": 4, "out_channels": 4,
            "num_res_blocks": [1], "channel_mult": [1], "transformer_depth_middle": 1,
            "transformer_depth_output": [1, 1], "num_head_channels": 32, "use_spatial_transformer": True,
            "legacy": False, "num_classes": "sequential", "image_size": 32, "use_checkpoint": False,
            "use_temporal_resblock": False}
    config = comfy.supported_models.SDXLRefiner(unet)
    config.set_inference_dtype(torch.float32, None)
    refiner = comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    for node in ("Cones2LayoutGuidance", "Cones2LayoutGuidedSampler"):
        inputs = {"model": refiner, "layout": two_subject_layout(host), **guidance_options()}
        if node == "Cones2LayoutGuidedSampler":
            inputs.update(seed=0, steps=1, cfg=7.0, sampler_name="euler", scheduler="normal", positive=[], negative=[],
                          latent_image={"samples": torch.zeros(1, 4, 8, 8)}, denoise=1.0)
        with pytest.raises(ValueError, match=rf"{node}: the MODEL is SDXLRefiner, which Cones 2 cannot use.*"
                                             r"SD1.x \(CLIP-L\), SD2.x \(OpenCLIP-H\), SDXL"):
            host.run(node, **inputs)
