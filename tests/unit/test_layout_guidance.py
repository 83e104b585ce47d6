"""GuidanceRun: the guided cross-attention against the official formula written out directly."""

import math
import uuid

import pytest
import torch
from cones2.guidance import conditioning_keys, layout_guidance
from cones2.guidance.attention_bias import SuppressionScope
from cones2.guidance.layout import Box, Layout, LayoutSubject
from cones2.guidance.layout_guidance import (
    GuidanceRun,
    GuidanceSettings,
    LayoutGuidanceError,
    bind_prompt,
)
from cones2.guidance.prompt_tokens import PromptTokens
from cones2.guidance.step_range import StepRange
from cones2.guidance.strength import SigmaSchedule
from cones2_test_support.guidance_oracle import official_attention, oracle_bias

HEADS, D = 2, 8
C = HEADS * D
NODE = "Cones2LayoutGuidance"


def tokens(words, length=77, start=1):
    """PromptTokens of whole-word pieces placed at rows start, start+1, ..."""
    return PromptTokens(length=length, rows=tuple(range(start, start + len(words))),
                        pieces=tuple(w + "</w>" for w in words))


def attend(q, k, v, mask, extra_options=None):
    """Plain attention on projected q/k/v with an additive mask on the scaled logits ([B, N, T])."""
    b, n, _ = q.shape
    qh, kh, vh = (t.view(b, -1, HEADS, D).transpose(1, 2).float() for t in (q, k, v))
    s = qh @ kh.transpose(-1, -2) * D**-0.5
    if mask is not None:
        s = s + mask[:, None].float()
    return (s.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, C).to(q.dtype)


def official(q, k, v, m, sigma, weight, schedule=SigmaSchedule.OFFICIAL):
    """The oracle for one image with this file's heads; std over every logit."""
    return official_attention(q, k, v, HEADS, m, sigma, weight, schedule)


LAYOUT = Layout(48, 32, (LayoutSubject("dog", 1, box=Box(0, 0, 24, 32)),
                         LayoutSubject("cat", 1, box=Box(24, 8, 24, 24), gamma=3.0)))


ALL_STEPS = StepRange()


PATHS = ["explicit", "masked"]  # forced, whatever the device


class Positive:
    """The guider's positive entries as the sampler hook reads them; tests set ``entries``."""

    def __init__(self, entries=None):
        self.entries = entries

    def __call__(self):
        return self.entries


def make_run(layout=LAYOUT, steps=ALL_STEPS, path="auto", attend=attend, **kw):
    return GuidanceRun(layout, GuidanceSettings(**kw), steps, NODE, attend=attend, positive=Positive(), path=path)


def bind(run, positive):
    run.positive.entries = positive
    run.bind()


def options(branches, uids, sigma, h=4, w=6, batch=1):
    return {"n_heads": HEADS, "dim_head": D, "activations_shape": [len(branches) * batch, 320, h, w],
            "cond_or_uncond": branches, "uuids": uids, "sigmas": torch.full((batch,), float(sigma))}


def qkv(bt, n=24, t=77, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(bt, n, C, generator=g).to(dtype), torch.randn(bt, t, C, generator=g).to(dtype),
            torch.randn(bt, t, C, generator=g).to(dtype))


def bind_call(run, conds, positive):
    """What the sampler hooks do: bind the guider's positive entries, then announce a model call."""
    bind(run, positive)
    run.model_call(conds, torch.tensor([1.0]))


def bound(run, pos_tokens, pos_len=77, neg_len=77):
    pu, nu = uuid.uuid4(), uuid.uuid4()
    pos = [{"uuid": pu, conditioning_keys.PROMPT_TOKENS: pos_tokens.to_json(), "cross_attn": torch.zeros(1, pos_len, 4)}]
    bind_call(run, [pos, [{"uuid": nu, "cross_attn": torch.zeros(1, neg_len, 4)}]], pos)
    return pu, nu


PROMPT = tokens(["a", "dog", "and", "a", "cat"])  # dog at row 2, cat at row 5


@pytest.mark.parametrize("scope", list(SuppressionScope))
@pytest.mark.parametrize("sigma", [14.6, 1.0, 0.03])
@pytest.mark.parametrize("path", PATHS)
def test_positive_rows_follow_the_official_formula_and_negative_rows_are_untouched(scope, sigma, path):
    run = make_run(path=path, scope=scope, suppression=-1e8, weight=0.08)
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(4)  # batch 2 per chunk, negative chunk first
    out = run.attention(q, k, v, options([1, 0], [nu, pu], sigma, batch=2))
    plain = attend(q, k, v, None)
    assert torch.equal(out[:2], plain[:2])
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, scope)
    for i in (2, 3):  # each image with its own std
        torch.testing.assert_close(out[i].double(), official(q[i], k[i], v[i], m, sigma, 0.08), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[2:], plain[2:])


def test_the_official_hard_mask_moves_all_of_a_subjects_attention_into_its_region():
    captured = {}

    def spy(q_, k_, v_, mask, extra_options):
        if mask is not None:
            captured["mask"] = mask
        return attend(q_, k_, v_, mask)

    run = make_run(path="masked", attend=spy)
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2)
    run.attention(q, k, v, options([0, 1], [pu, nu], 14.6))
    mask = captured["mask"]
    scores = (q[:1].view(1, 24, HEADS, D).transpose(1, 2) @ k[:1].view(1, 77, HEADS, D).transpose(1, 2).transpose(-1, -2))
    probs = (scores * D**-0.5 + mask[:, None]).softmax(-1)
    dog = LAYOUT.region_masks(4, 6)[0].flatten()
    assert probs[0, :, ~dog, 2].max() == 0 and probs[0, :, dog, 2].min() > 0


@pytest.mark.parametrize("path", PATHS)
def test_positive_tokens_tiled_to_a_longer_negative_give_the_untiled_result(path):
    run = make_run(path=path)
    pu, nu = bound(run, PROMPT, pos_len=77, neg_len=154)
    q, k77, v77 = qkv(1, t=77, seed=3)
    kn, vn = torch.randn(1, 154, C), torch.randn(1, 154, C)
    k = torch.cat([k77.repeat(1, 2, 1), kn])  # ComfyUI repeats the shorter prompt to the LCM length
    v = torch.cat([v77.repeat(1, 2, 1), vn])
    q2 = torch.cat([q, torch.randn(1, 24, C)])
    out = run.attention(q2, k, v, options([0, 1], [pu, nu], 5.0))
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    torch.testing.assert_close(out[0].double(), official(q[0], k77[0], v77[0], m, 5.0, 0.08), rtol=1e-4, atol=1e-5)
    assert torch.equal(out[1], attend(q2, k, v, None)[1])


@pytest.mark.parametrize("path", PATHS)
def test_several_positive_entries_are_each_guided_with_their_own_token_map(path):
    run = make_run(path=path)
    p1, p2, nu = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    other = tokens(["cat", "near", "a", "dog"], start=1)  # cat at 1, dog at 4
    pos = [{"uuid": p1, conditioning_keys.PROMPT_TOKENS: PROMPT.to_json()}, {"uuid": p2, conditioning_keys.PROMPT_TOKENS: other.to_json()}]
    bind_call(run, [pos, [{"uuid": nu}]], pos)
    q, k, v = qkv(3, seed=5)
    out = run.attention(q, k, v, options([0, 1, 0], [p1, nu, p2], 2.0))
    scope = SuppressionScope.OUTSIDE_OWN_REGION
    m1 = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, scope)
    m2 = oracle_bias(LAYOUT, [(4,), (1,)], 4, 6, 77, -1e8, scope)
    torch.testing.assert_close(out[0].double(), official(q[0], k[0], v[0], m1, 2.0, 0.08), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[2].double(), official(q[2], k[2], v[2], m2, 2.0, 0.08), rtol=1e-4, atol=1e-5)
    assert torch.equal(out[1], attend(q, k, v, None)[1])


@pytest.mark.parametrize("path", PATHS)
def test_cfg_one_batches_hold_only_the_positive_chunk(path):
    run = make_run(path=path)
    pu, _ = bound(run, PROMPT)
    q, k, v = qkv(1, seed=6)
    out = run.attention(q, k, v, options([0], [pu], 3.0))
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    torch.testing.assert_close(out[0].double(), official(q[0], k[0], v[0], m, 3.0, 0.08), rtol=1e-4, atol=1e-5)


def test_outside_the_step_range_the_batch_takes_the_plain_path_exactly():
    calls = []

    def spy(q_, k_, v_, mask, extra_options):
        calls.append(mask)
        return attend(q_, k_, v_, mask)

    run = make_run(path="masked", steps=StepRange(sigma_start=10.0, sigma_end=1.0), attend=spy)
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, seed=7)
    for sigma in (14.6, 1.0, 0.5):
        calls.clear()
        out = run.attention(q, k, v, options([1, 0], [nu, pu], sigma))
        assert calls == [None] and torch.equal(out, attend(q, k, v, None))
    calls.clear()
    run.attention(q, k, v, options([1, 0], [nu, pu], 5.0))
    assert len(calls) == 2 and calls[1] is not None


class CountingRange(StepRange):
    """A step range that records every σ it is asked about (each one is a read of σ on the host)."""

    def __init__(self, sigma_start, sigma_end):
        super().__init__(sigma_start, sigma_end)
        object.__setattr__(self, "asked", [])

    def guides(self, sigma):
        self.asked.append(float(sigma))
        return super().guides(sigma)


def test_the_step_decision_made_before_the_model_call_is_reused_by_every_layer():
    steps = CountingRange(sigma_start=10.0, sigma_end=1.0)
    run = make_run(steps=steps)
    pu, nu = bound(run, PROMPT)
    steps.asked.clear()
    q, k, v = qkv(2, seed=12)
    sigma = torch.tensor([5.0])
    run.model_call([run.positive(), [{"uuid": nu}]], sigma)
    eo = options([1, 0], [nu, pu], 5.0)
    eo["sigmas"] = sigma
    outs = [run.attention(q, k, v, eo) for _ in range(16)]  # a UNet's 16 cross-attention layers
    assert steps.asked == [5.0]  # σ was read once, by model_call; no layer reads it again
    assert not torch.equal(outs[0], attend(q, k, v, None)) and all(torch.equal(o, outs[0]) for o in outs)
    eo["sigmas"] = torch.tensor([0.5])  # a call the hook did not announce: that layer decides for its own σ
    assert torch.equal(run.attention(q, k, v, eo), attend(q, k, v, None)) and steps.asked == [5.0, 0.5]


@pytest.mark.parametrize("path", PATHS)
def test_a_previous_attn2_replacement_is_chained(path):
    run = make_run(path=path)
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, seed=8)
    extra = torch.randn(2, 24, C)

    def previous(q_, k_, v_, eo):  # e.g. an IPAdapter-style patch adding its own term
        assert eo["cond_or_uncond"] == [1, 0]
        return attend(q_, k_, v_, None) + extra

    out = run.attention(q, k, v, options([1, 0], [nu, pu], 4.0), previous)
    assert torch.equal(out[0], attend(q, k, v, None)[0] + extra[0])
    guided_alone = run.attention(q, k, v, options([1, 0], [nu, pu], 4.0))
    torch.testing.assert_close(out[1], guided_alone[1] + extra[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", list(SigmaSchedule))
@pytest.mark.parametrize("path", PATHS)
def test_every_schedule_gives_the_official_formula_with_its_eta(schedule, path):
    run = make_run(path=path, schedule=schedule, weight=0.3, suppression=-2.0)  # a soft bias: η visibly changes the output
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(4, seed=13)
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -2.0, SuppressionScope.OUTSIDE_OWN_REGION)
    for sigma in (9.0, 0.5):
        out = run.attention(q, k, v, options([0, 1], [pu, nu], sigma, batch=2))
        for i in (0, 1):
            want = official(q[i], k[i], v[i], m, sigma, 0.3, schedule)
            torch.testing.assert_close(out[i].double(), want, rtol=1e-4, atol=1e-5)


def test_the_bias_of_each_layer_shape_is_built_once_per_run(monkeypatch):
    built = []
    real = layout_guidance.bias_matrix
    monkeypatch.setattr(layout_guidance, "bias_matrix", lambda maps, *a: built.append(tuple(maps.shape)) or real(maps, *a))
    run = make_run()
    pu, nu = bound(run, PROMPT)
    for sigma in (14.6, 7.0, 1.0):
        for h, w in ((4, 6), (2, 3)):
            q, k, v = qkv(2, n=h * w)
            run.attention(q, k, v, options([1, 0], [nu, pu], sigma, h, w))
    assert sorted(shape[1] for shape in built) == [2 * 3, 4 * 6]  # one per layer shape (its h·w cells), whatever the step
    q, k, v = qkv(2)
    run.attention(q, k, v, options([1, 0], [nu, pu], 0.5))
    assert len(built) == 2


def test_half_precision_masks_stay_finite():
    seen = []

    def spy(q_, k_, v_, mask, extra_options):
        if mask is not None:
            seen.append(mask)
        return attend(q_, k_, v_, mask)

    run = make_run(path="masked", attend=spy)
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, seed=9, dtype=torch.float16)
    out = run.attention(q, k, v, options([0, 1], [pu, nu], 14.6))
    assert seen[0].dtype == torch.float16 and torch.isfinite(seen[0]).all()
    assert seen[0].min() < -1000 and torch.isfinite(out).all()


def test_the_explicit_path_hands_no_mask_to_the_host_attention_and_auto_picks_by_device():
    masks = []
    run = make_run(path="explicit", attend=lambda *a: masks.append(a[3]) or attend(*a))
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, seed=14)
    out = run.attention(q, k, v, options([1, 0], [nu, pu], 6.0))
    assert masks == [None]  # only the whole-batch plain call
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    torch.testing.assert_close(out[1].double(), official(q[1], k[1], v[1], m, 6.0, 0.08), rtol=1e-4, atol=1e-5)
    auto = make_run()
    assert not auto.explicit(torch.device("cpu")) and auto.explicit(torch.device("cuda"))
    assert make_run(path="explicit").explicit("cpu") and not make_run(path="masked").explicit("cuda")
    with pytest.raises(ValueError, match="unknown attention path"):
        make_run(path="fast")


def test_the_explicit_path_in_half_precision_computes_in_float32():
    run = make_run(path="explicit")
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, seed=9, dtype=torch.float16)
    out = run.attention(q, k, v, options([0, 1], [pu, nu], 14.6))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    want = official(q[0].float(), k[0].float(), v[0].float(), m, 14.6, 0.08)
    torch.testing.assert_close(out[0].double(), want, rtol=2e-3, atol=2e-3)


def test_the_schedule_without_std_and_zero_weight():
    captured = []
    run = make_run(path="masked", schedule=SigmaSchedule.LOG_SIGMA, weight=0.5,
                   attend=lambda *a: captured.append(a[3]) or attend(*a))
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, seed=10)
    run.attention(q, k, v, options([0, 1], [pu, nu], 2.0))
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    want = (0.5 * math.log(5.0) * m * D**-0.5).clamp(min=-torch.finfo(torch.float32).max / 4)
    torch.testing.assert_close(captured[1][0], want)
    off = make_run(weight=0.0)
    pu, nu = bound(off, PROMPT)
    out = off.attention(q, k, v, options([0, 1], [pu, nu], 2.0))
    torch.testing.assert_close(out, attend(q, k, v, None))


@pytest.mark.parametrize("path", PATHS)
def test_an_entry_without_a_token_map_next_to_one_with_it_is_left_alone(path):
    run = make_run(path=path)
    pu, plain_u, nu = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pos = [{"uuid": pu, conditioning_keys.PROMPT_TOKENS: PROMPT.to_json()}, {"uuid": plain_u}]
    bind_call(run, [pos, [{"uuid": nu}]], pos)
    q, k, v = qkv(3, seed=11)
    out = run.attention(q, k, v, options([0, 0, 1], [plain_u, pu, nu], 2.0))
    plain = attend(q, k, v, None)
    assert torch.equal(out[0], plain[0]) and torch.equal(out[2], plain[2]) and not torch.equal(out[1], plain[1])


def test_the_positive_is_found_by_entry_whatever_its_branch_index():
    # DualCFGGuider evaluates [negative, middle, positive]: the positive is branch 2, and the
    # middle prompt (made by Cones2ApplyResidual too, but not the guider's positive) is not guided
    run = make_run()
    pu, mu, nu = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pos = [{"uuid": pu, conditioning_keys.PROMPT_TOKENS: PROMPT.to_json()}]
    middle = [{"uuid": mu, conditioning_keys.PROMPT_TOKENS: PROMPT.to_json()}]
    bind_call(run, [[{"uuid": nu}], middle, pos], pos)
    q, k, v = qkv(3, seed=15)
    out = run.attention(q, k, v, options([0, 1, 2], [nu, mu, pu], 2.0))
    plain = attend(q, k, v, None)
    assert torch.equal(out[:2], plain[:2])
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    torch.testing.assert_close(out[2].double(), official(q[2], k[2], v[2], m, 2.0, 0.08), rtol=1e-4, atol=1e-5)


def test_a_copy_of_a_positive_entry_in_another_branch_is_not_guided():
    # ComfyUI copies an area-conditioned positive entry into the negative list (same uuid,
    # the negative's embedding): only the guider's own positive entry is guided
    run = make_run()
    pu, nu = uuid.uuid4(), uuid.uuid4()
    entry = {"uuid": pu, conditioning_keys.PROMPT_TOKENS: PROMPT.to_json(), "area": (4, 6, 0, 0)}
    pos = [entry]
    bind_call(run, [pos, [{"uuid": nu}, dict(entry)]], pos)
    assert run.guided_chunks([0, 1, 1], [pu, nu, pu]) == [(0, pu)]
    run.positive.entries = None  # no positive list: by uuid
    run.model_call([pos, [{"uuid": nu}, dict(entry)]], torch.tensor([1.0]))
    assert run.guided_chunks([0, 1, 1], [pu, nu, pu]) == [(0, pu), (2, pu)]


def test_a_grid_that_does_not_match_the_activations_is_left_alone():
    run = make_run()
    pu, nu = bound(run, PROMPT)
    q, k, v = qkv(2, n=10)
    out = run.attention(q, k, v, options([0, 1], [pu, nu], 2.0, h=4, w=6))
    assert torch.equal(out, attend(q, k, v, None))


# --- errors ------------------------------------------------------------------------------

def test_an_empty_layout_is_refused():
    with pytest.raises(LayoutGuidanceError, match="Cones2LayoutGuidance: the layout is empty"):
        GuidanceRun(Layout(64, 64), GuidanceSettings(), StepRange(), NODE, attend=attend, positive=Positive())


def test_a_positive_prompt_without_a_token_map_is_refused():
    run = make_run()
    with pytest.raises(LayoutGuidanceError) as e:
        bind(run, [{"uuid": uuid.uuid4()}])
    msg = str(e.value)
    assert msg.startswith("Cones2LayoutGuidance:") and "not encoded by Cones2ApplyResidual" in msg
    assert "Cones2 Apply Residual" in msg


def test_an_unreadable_token_map_is_refused_with_the_fix():
    run = make_run()
    with pytest.raises(LayoutGuidanceError) as e:
        bind(run, [{"uuid": uuid.uuid4(), conditioning_keys.PROMPT_TOKENS: '{"rows": [1]}'}])
    msg = str(e.value)
    assert msg.startswith("Cones2LayoutGuidance: the positive prompt's recorded token map cannot be read")
    assert "encode the prompt again" in msg


def test_a_layout_phrase_missing_from_the_prompt_is_refused():
    run = make_run()
    with pytest.raises(LayoutGuidanceError) as e:
        bind(run, [{"uuid": uuid.uuid4(), conditioning_keys.PROMPT_TOKENS: tokens(["a", "dog", "on", "grass"]).to_json()}])
    msg = str(e.value)
    assert msg.startswith("Cones2LayoutGuidance: layout subject 'cat':")
    assert "the phrase 'cat' is not in the prompt" in msg and "dog" in msg


def test_a_missing_occurrence_is_refused():
    layout = Layout(64, 64, (LayoutSubject("dog", 2, box=Box(0, 0, 8, 8)),))
    run = make_run(layout=layout)
    with pytest.raises(LayoutGuidanceError, match="occurs 1 time"):
        bind(run, [{"uuid": uuid.uuid4(), conditioning_keys.PROMPT_TOKENS: PROMPT.to_json()}])


def test_subjects_sharing_a_token_are_refused():
    layout = Layout(64, 64, (LayoutSubject("robot toy", box=Box(0, 0, 8, 8)), LayoutSubject("toy", box=Box(8, 8, 8, 8))))
    with pytest.raises(LayoutGuidanceError, match="same word of the prompt"):
        bind_prompt(layout, tokens(["a", "robot", "toy"]))


def test_occurrences_bind_separately():
    layout = Layout(64, 64, (LayoutSubject("dog", 1, box=Box(0, 0, 8, 8)), LayoutSubject("dog", 2, box=Box(8, 8, 8, 8))))
    b = bind_prompt(layout, tokens(["a", "dog", "and", "a", "dog"]))
    assert b.rows == ((2,), (5,)) and b.length == 77


@pytest.mark.parametrize("lat_h,lat_w,ok", [(4, 6, True), (8, 12, True), (64, 96, True), (6, 6, False), (6, 4, False)])
def test_the_latent_aspect_must_match_the_canvas(lat_h, lat_w, ok):
    run = make_run()  # canvas 48x32
    if ok:
        run.check_latent(lat_h, lat_w)
        return
    with pytest.raises(LayoutGuidanceError) as e:
        run.check_latent(lat_h, lat_w)
    msg = str(e.value)
    assert msg.startswith("Cones2LayoutGuidance: the layout canvas is 48x32")
    assert f"{lat_w * 8}x{lat_h * 8}" in msg and "width and height" in msg


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU lane: needs CUDA (python -m pytest -m gpu)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_on_cuda_auto_takes_the_explicit_path_and_gives_the_official_formula(dtype):
    run = make_run()  # "auto": explicit everywhere but the CPU
    pu, nu = bound(run, PROMPT)
    q, k, v = (t.cuda() for t in qkv(2, seed=21, dtype=dtype))
    eo = options([1, 0], [nu, pu], 6.0)
    eo["sigmas"] = eo["sigmas"].cuda()
    out = run.attention(q, k, v, eo)
    assert run.explicit(q.device) and out.device.type == "cuda" and out.dtype == dtype
    m = oracle_bias(LAYOUT, [(2,), (5,)], 4, 6, 77, -1e8, SuppressionScope.OUTSIDE_OWN_REGION)
    want = official(q[1].cpu().float(), k[1].cpu().float(), v[1].cpu().float(), m, 6.0, 0.08)
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # inputs rounded to half precision, logits in fp32
    torch.testing.assert_close(out[1].cpu().double(), want, rtol=tol, atol=tol)
    assert torch.equal(out[0], attend(q, k, v, None)[0])  # the negative rows as without guidance
