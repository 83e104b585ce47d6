"""The training loop on a tiny real encoder and a tiny frozen cross-attention denoiser."""

import copy
import os
import statistics

import pytest
import torch
from cones2.training import corpus
from cones2.training.errors import (
    TrainingDivergedError,
    TrainingInputError,
    TrainingOutOfMemoryError,
    TrainingResumeError,
)
from cones2.training.losses import diffusion_target, noisy_latents
from cones2.training.prompt_ids import encode_prompts
from cones2.training.residual_file import load_residual, make_residual, save_residual
from cones2.training.subject_images import build_latent_bank
from cones2.training.train_checkpoint import load_state
from cones2.training.trainer import (
    TrainSettings,
    image_indices,
    residual_training_info,
    step_generator,
    train_residual,
)
from cones2_test_support import tiny_text as tt
from cones2_test_support.float_noise import norm_bound


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared CPU
    yield
    torch.set_num_threads(before)


def quick(**kw):
    base = dict(steps=8, learning_rate=3e-3, resolution=64, corpus_size=40, sentences_per_step=2,
                gradient_checkpointing=False)
    return TrainSettings(**{**base, **kw})


def run(settings, *, phrase="dog", encoder=None, denoiser=None, images=None, prediction="eps", **kw):
    return train_residual(encoder=encoder or tt.tiny_encoder(), tokenize=tt.tokenize, phrase=phrase,
                          images=tt.photos() if images is None else images, encode_image=tt.encode_image_stub,
                          denoiser=denoiser or tt.TinyDenoiser(), alphas_cumprod=tt.schedule(),
                          prediction=prediction, settings=settings, special=tt.special_tokens(), **kw)


def drift(tuned, base, phrase="dog", n=40):
    prompts = encode_prompts(tt.tokenize, corpus.iter_subject_sentences(phrase), tt.tokenize(phrase),
                             tt.special_tokens(), limit=n, strict=False)
    with torch.no_grad():
        d = tuned(prompts.ids) - base(prompts.ids)
    m = prompts.subject_mask()
    return float(d[~m].norm(dim=-1).mean()), float(d[m].norm(dim=-1).mean())


def test_the_loss_falls_and_preservation_keeps_non_subject_rows(tmp_path):
    s = quick(steps=300, preservation="paper", preservation_weight=0.05)
    enc = tt.tiny_encoder()
    base = copy.deepcopy(enc)
    res = run(s, encoder=enc)
    diff = res.losses["diffusion"]
    assert statistics.mean(diff[-30:]) < 0.5 * statistics.mean(diff[:30])
    non_subject, subject = drift(enc, base)
    assert non_subject < 0.2 * subject
    assert non_subject < 0.1 * 32 ** 0.5  # rows are layer-normed: norm about sqrt(width); under 10% moved

    free = tt.tiny_encoder()
    run(quick(steps=300, preservation="none"), encoder=free)
    free_non_subject, _ = drift(free, base)
    assert non_subject < 0.1 * free_non_subject  # without Eq. 3 every row moves

    # the residual is Eq. 5 over the corpus, and it round-trips through the residual file
    assert res.residual.shape == (1, 32) and res.token_ids == tuple(tt.tokenize("dog"))
    prompts = encode_prompts(tt.tokenize, corpus.iter_subject_sentences("dog"), res.token_ids,
                             tt.special_tokens(), limit=40, strict=False)
    with torch.no_grad():
        rows = prompts.subject_rows()[:, 0]
        want = (enc(prompts.ids) - base(prompts.ids))[torch.arange(40), rows].mean(0)
    torch.testing.assert_close(res.residual[0], want, atol=1e-5, rtol=1e-5)
    assert res.metadata["corpus_size"] == 40 and res.metadata["residual_from"] == "corpus"


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_target_follows_the_prediction_type(prediction):
    """A denoiser that predicts 0: the diffusion loss is then exactly mean(target^2) of each step's draw."""

    class Zero(torch.nn.Module):
        def forward(self, x_t, t, context):
            return x_t * 0 + context.sum() * 0

    s = quick(steps=3, preservation="none")
    res = run(s, denoiser=Zero(), prediction=prediction)
    bank = build_latent_bank(tt.photos(), tt.encode_image_stub, 64)
    ac = tt.schedule()
    for step in range(3):
        g = step_generator(s.seed, step)
        x0 = bank.sample(image_indices(s.seed, step, 1, 3), g)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (1,), generator=g)
        want = diffusion_target(prediction, x0, noise, t, ac).pow(2).mean().item()
        assert res.losses["diffusion"][step] == pytest.approx(want, rel=1e-5)
    other = "v" if prediction == "eps" else "eps"
    g = step_generator(s.seed, 0)
    x0 = bank.sample(image_indices(s.seed, 0, 1, 3), g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (1,), generator=g)
    wrong = diffusion_target(other, x0, noise, t, ac).pow(2).mean().item()
    assert res.losses["diffusion"][0] != pytest.approx(wrong, rel=1e-3)
    torch.testing.assert_close(noisy_latents(x0, noise, t, ac), ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * noise)


def test_official_mode_uses_the_bare_prompt_and_the_27_templates():
    res = run(quick(steps=4, preservation="official", residual_from="templates", training_prompt="{}"))
    assert res.metadata["training_prompt"] == "dog" and res.metadata["residual_sentences"] == 27
    assert res.metadata["preservation"] == "official" and res.metadata["preservation_weight"] is None
    # step 1 starts from the original encoder: only the batch shape differs from the targets' (kernel noise)
    first, *_, last = res.losses["preservation"]
    assert first <= norm_bound(77 * 32) and last > 10 * norm_bound(77 * 32)  # a real change stands well clear of it


def test_a_zero_preservation_weight_skips_the_corpus_sentences_entirely():
    enc = tt.tiny_encoder()
    batches = []
    forward_from = enc.forward_from

    def recording(hidden, start=0):
        batches.append((hidden.shape[0], torch.is_grad_enabled()))
        return forward_from(hidden, start)

    enc.forward_from = recording
    s = quick(steps=4, preservation="paper", preservation_weight=0.0, residual_from="templates")
    res = run(s, encoder=enc)
    # each of the 4 steps encodes the training prompt alone (the only passes with gradients) ...
    assert [n for n, grad in batches if grad] == [1, 1, 1, 1]
    # ... and without gradients: the prompt's target once, the 27 templates before and after training (Eq. 5)
    assert sum(n for n, grad in batches if not grad) == 1 + 27 + 27
    assert res.losses["preservation"] == [0.0] * 4
    unregularized = run(quick(steps=4, preservation="none", residual_from="templates"))
    assert res.losses["loss"] == unregularized.losses["loss"]
    torch.testing.assert_close(res.residual, unregularized.residual, rtol=0, atol=0)


def test_training_the_last_layers_leaves_the_rest_untouched():
    enc = tt.tiny_encoder(layers=3)
    before = copy.deepcopy(enc.state_dict())
    run(quick(steps=4, train_layers=1), encoder=enc)
    after = enc.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("encoder.layers.2.", "final_layer_norm.")) for k in changed)


def test_a_concat_encoder_trains_its_parts_last_layers_and_gives_rows_of_their_total_width():
    enc = tt.tiny_concat_encoder()
    before = copy.deepcopy(enc.state_dict())
    res = run(quick(steps=4, train_layers=1), encoder=enc, denoiser=tt.TinyDenoiser(context_dim=40))
    after = enc.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k.split(".layers.")[0] + ".layers." + k.split(".layers.")[1].split(".")[0] for k in changed} == {
        "parts.0.encoder.layers.1", "parts.1.encoder.layers.2"}
    assert res.residual.shape == (1, 40) and torch.isfinite(res.residual).all() and res.residual.abs().max() > 0
    assert res.metadata["train_layers"] == 1


def test_a_run_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    s = quick(steps=6, checkpoint_every=3)
    straight = run(s, checkpoint_path=tmp_path / "a.ckpt")

    class Stop(Exception):
        pass

    calls = []

    def stop_after_three(done, total, last):
        calls.append(done)
        if done == 4:
            raise Stop

    with pytest.raises(Stop):
        run(s, checkpoint_path=tmp_path / "b.ckpt", progress=stop_after_three)
    assert load_state(tmp_path / "b.ckpt").step == 3
    resumed = run(s, checkpoint_path=tmp_path / "b.ckpt", resume_path=tmp_path / "b.ckpt")
    assert resumed.steps_run == 3 and resumed.steps == 6
    torch.testing.assert_close(resumed.residual, straight.residual, atol=1e-6, rtol=1e-5)
    assert resumed.losses["loss"] == pytest.approx(straight.losses["loss"][:3] + resumed.losses["loss"][3:])
    assert resumed.losses["loss"][3:] == pytest.approx(straight.losses["loss"][3:], rel=1e-5)
    assert load_state(tmp_path / "b.ckpt").step == 6
    # resuming with more steps continues the same run
    longer = run(quick(steps=8, checkpoint_every=3), checkpoint_path=tmp_path / "b.ckpt",
                 resume_path=tmp_path / "b.ckpt")
    assert longer.steps_run == 2 and len(longer.losses["loss"]) == 8


def test_a_checkpoint_of_another_run_is_refused_with_the_differences(tmp_path):
    run(quick(steps=2, checkpoint_every=1), checkpoint_path=tmp_path / "c.ckpt")
    with pytest.raises(TrainingResumeError, match=r"learning_rate: checkpoint 0.003, now 0.001"):
        run(quick(steps=4, learning_rate=1e-3), resume_path=tmp_path / "c.ckpt")
    with pytest.raises(TrainingResumeError, match="the subject images differ"):
        run(quick(steps=4), images=tt.photos(seed=9), resume_path=tmp_path / "c.ckpt")
    with pytest.raises(TrainingResumeError, match="the text encoder"):
        run(quick(steps=4), encoder=tt.tiny_encoder(seed=3), resume_path=tmp_path / "c.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingResumeError, match="not a readable checkpoint"):
        run(quick(steps=4), resume_path=tmp_path / "junk.ckpt")


class NanAt(torch.nn.Module):
    def __init__(self, step):
        super().__init__()
        self.inner, self.step, self.calls = tt.TinyDenoiser(), step, 0

    def forward(self, x_t, t, context):
        self.calls += 1
        out = self.inner(x_t, t, context)
        return out * float("nan") if self.calls >= self.step else out


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    with pytest.raises(TrainingDivergedError) as info:
        run(quick(steps=10, checkpoint_every=2), denoiser=NanAt(6), checkpoint_path=path)
    msg = str(info.value)
    assert "the loss became NaN or infinite at step 6" in msg and "no residual was made" in msg
    assert f"The last good checkpoint is kept: {path}" in msg and "lower learning_rate" in msg
    assert info.value.step == 6
    state = load_state(path)
    assert state.step == 4 and all(torch.isfinite(v).all() for v in state.params.values())
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temp files left


def test_nan_without_checkpoints_says_so():
    with pytest.raises(TrainingDivergedError, match="No checkpoint was written"):
        run(quick(steps=4), denoiser=NanAt(2))


def test_out_of_memory_suggests_the_low_memory_options():
    class Oom(torch.nn.Module):
        def forward(self, *a):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TrainingOutOfMemoryError) as info:
        run(quick(steps=2), denoiser=Oom())
    msg = str(info.value)
    assert "out of memory while training (CUDA out of memory. Tried to allocate 2.00 GiB)" in msg
    assert "train_layers" in msg and "gradient_checkpointing" in msg and "resolution" in msg


def test_an_interrupt_stops_within_a_step_and_leaves_no_partial_file(tmp_path):
    class Cancel(Exception):
        pass

    den = tt.TinyDenoiser()
    checks = []

    def check():
        checks.append(den.calls)
        if den.calls >= 3:
            raise Cancel

    with pytest.raises(Cancel):
        run(quick(steps=50, checkpoint_every=2), denoiser=den, check_interrupt=check, checkpoint_path=tmp_path / "x")
    assert den.calls == 3  # the step in flight finished; no further UNet call
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"] and load_state(tmp_path / "x").step == 2


@pytest.mark.parametrize("phrase", ["", "  "])
def test_a_zero_token_phrase_fails_before_any_heavy_work(phrase):
    den = tt.TinyDenoiser()
    encoded = []

    def encode(px):
        encoded.append(px)
        return tt.encode_image_stub(px)

    with pytest.raises(TrainingInputError, match="has no tokens"):
        train_residual(encoder=tt.tiny_encoder(), tokenize=tt.tokenize, phrase=phrase, images=tt.photos(),
                       encode_image=encode, denoiser=den, alphas_cumprod=tt.schedule(), prediction="eps",
                       settings=quick(), special=tt.special_tokens())
    assert not encoded and den.calls == 0


def test_bad_inputs_get_named_errors():
    with pytest.raises(TrainingInputError, match="no subject images"):
        run(quick(), images=[])
    with pytest.raises(TrainingInputError, match="image 1 is 1x1 px"):
        run(quick(), images=[torch.rand(1, 1, 3)])
    with pytest.raises(TrainingInputError, match="steps must be at least 1.*learning_rate must be positive"):
        run(quick(steps=0, learning_rate=0))
    with pytest.raises(TrainingInputError, match="must contain \\{\\} where the phrase goes"):
        run(quick(training_prompt="a photo"))
    with pytest.raises(TrainingInputError, match="training_prompt: the prompt 'a dog and a dog' holds the phrase 2"):
        run(quick(training_prompt="a {} and a {}"))
    with pytest.raises(TrainingInputError, match="prediction type 'x0' is not supported"):
        run(quick(), prediction="x0")
    with pytest.raises(TrainingInputError, match="train_layers must be 0"):
        run(quick(train_layers=9))


def test_the_trained_residual_makes_a_valid_residual_file(tmp_path):
    res = run(quick(steps=2))
    # the file format checks the width (1024 for SD2); a tiny 32-wide encoder is refused by design
    with pytest.raises(ValueError, match="32 wide"):
        make_residual(res.residual, subject="dog", token_ids=res.token_ids, training=res.metadata)
    padded = torch.nn.functional.pad(res.residual, (0, 1024 - 32))
    path = save_residual(make_residual(padded, subject="dog", token_ids=res.token_ids, training=res.metadata),
                         tmp_path / "dog.safetensors")
    back = load_residual(path)
    assert back.training["steps"] == 2 and back.subject == "dog"
    assert os.path.getsize(path) < 10_000


def test_the_residual_names_its_model_and_its_run_state_under_distinct_keys():
    res = run(quick(steps=1))
    info = residual_training_info(res, model_checkpoint="v2-1_512-ema-pruned.safetensors",
                                  training_checkpoint="dog_00001.cones2-train.safetensors")
    assert info["model_checkpoint"] == "v2-1_512-ema-pruned.safetensors"
    assert info["training_checkpoint"] == "dog_00001.cones2-train.safetensors"
    assert "checkpoint" not in info and info["steps"] == 1
    assert "model_checkpoint" not in residual_training_info(res) and "training_checkpoint" not in res.metadata


def test_huge_seeds_are_fine_and_draws_depend_on_seed_and_step_only():
    big = 2**64 - 1
    assert image_indices(big, 5, 2, 3) == image_indices(big, 5, 2, 3)
    a = torch.rand(3, generator=step_generator(big, 7))
    assert torch.equal(a, torch.rand(3, generator=step_generator(big, 7)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(big, 8)))
    # every photo once per epoch, as a shuffled data loader
    seen = [i for step in range(6) for i in image_indices(0, step, 1, 3)]
    assert sorted(seen[:3]) == [0, 1, 2] and sorted(seen[3:]) == [0, 1, 2]


# --- progress and cancel in the long phases around the steps (setup and Eq. 5 extraction) -------------


class PhaseLog:
    def __init__(self):
        self.calls = []

    def __call__(self, phase, done, total):
        self.calls.append((phase, done, total))

    def of(self, phase):
        return [(d, t) for p, d, t in self.calls if p == phase]


@pytest.mark.parametrize("settings, setup_total, extraction_total", [
    (quick(corpus_size=40), 1 + 40, 40),  # paper: the prompt + the corpus (shared by Eq. 3 and Eq. 5)
    (quick(corpus_size=40, residual_from="templates"), 1 + 40 + 27, 27),  # + the authors' 27 templates
    (quick(corpus_size=40, preservation="none"), 1 + 40, 40),  # Eq. 5 over the corpus, no Eq. 3
    (quick(preservation="official", residual_from="templates"), 1 + 27, 27),
])
def test_photos_setup_and_extraction_report_progress(settings, setup_total, extraction_total):
    log, steps = PhaseLog(), []
    run(settings, phase_progress=log, progress=lambda done, total, last: steps.append(done))
    setup, extraction = log.of("setup"), log.of("extraction")
    assert setup[0] == (0, setup_total) and setup[-1] == (setup_total, setup_total)
    assert extraction[0] == (0, extraction_total) and extraction[-1] == (extraction_total, extraction_total)
    for seq in (setup, extraction):
        done = [d for d, _ in seq]
        assert done == sorted(done) and all(0 < b - a <= 16 for a, b in zip(done, done[1:], strict=False))  # a chunk at a time
    n = len(tt.photos())
    assert log.of("photos") == [(k, n) for k in range(n + 1)]  # one report per photo
    phases = [p for p, _, _ in log.calls]  # photos, setup, (the steps), extraction
    assert phases == ["photos"] * (n + 1) + ["setup"] * len(setup) + ["extraction"] * len(extraction)
    assert steps == list(range(1, settings.steps + 1))


def test_an_interrupt_during_setup_stops_it_and_writes_nothing(tmp_path):
    class Cancel(Exception):
        pass

    log, den, checks = PhaseLog(), tt.TinyDenoiser(), []
    encoder = tt.tiny_encoder()

    def check():
        checks.append(len(log.calls))
        if log.of("setup") and log.of("setup")[-1][0] >= 17:  # the Cancel button, after the second chunk
            raise Cancel

    with pytest.raises(Cancel):
        run(quick(corpus_size=40, checkpoint_every=1), encoder=encoder, denoiser=den, check_interrupt=check,
            phase_progress=log, checkpoint_path=tmp_path / "run.cones2-train.safetensors")
    assert log.of("setup")[-1] == (17, 41)  # the prompt + 16, then the next chunk's first layer stopped
    assert len(log.of("setup")) == 3 and not log.of("extraction")
    assert den.calls == 0 and list(tmp_path.iterdir()) == []  # no step ran, nothing was written
    assert encoder.between_layers is None


def test_cancel_checks_run_after_every_encoder_layer_in_both_phases():
    encoder, log, counts = tt.tiny_encoder(), PhaseLog(), []
    run(quick(steps=2, corpus_size=20, preservation_weight=0.0), encoder=encoder, phase_progress=log,
        check_interrupt=lambda: counts.append(len(log.calls)))
    layers = len(encoder.layers)
    # setup: the prompt (1 chunk) + 20 corpus sentences for Eq. 5 (2 chunks); extraction: 2 chunks
    assert len(counts) >= (3 + 2) * layers
    assert encoder.between_layers is None  # steps run without the per-layer check
