"""Cones2TrainResidual / Cones2SaveResidual in the real ComfyUI (in process), on the tiny SD2 checkpoint.

Runs are kept to a few steps at 64 px with only the encoder's last layer training and a
tiny corpus: the 24-layer OpenCLIP-H encoder is what costs time on a CPU.
"""

import math
import sys

import pytest
import torch
from cones2.devtools.comfy_host import load_core_extras
from cones2_test_support.float_noise import squared_error_bound

SMALL = dict(learning_rate=1e-4, batch_size=1, resolution=64, preservation_weight=1e-3, seed=3,
             corpus_size=1, sentences_per_step=1, train_layers=1, gradient_checkpointing=False)


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def photos(n=3, h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, 3, generator=g)


class ProgressLog:
    """comfy.utils' global progress hook, recording (value, total); optionally interrupts at one (value, total)."""

    def __init__(self, interrupt_at=None):
        self.values, self.interrupt_at = [], interrupt_at

    def __enter__(self):
        import comfy.utils

        self._before = comfy.utils.PROGRESS_BAR_HOOK
        comfy.utils.set_progress_bar_global_hook(self.hook)
        return self

    def hook(self, value, total, preview, node_id=None, **_):
        import comfy.model_management

        self.values.append((value, total))
        if self.interrupt_at is not None and (value, total) == self.interrupt_at:
            comfy.model_management.interrupt_current_processing(True)  # what the Cancel button does

    def __exit__(self, *exc):
        import comfy.utils

        comfy.utils.set_progress_bar_global_hook(self._before)


def train(host, model, clip, vae, images=None, phrase="dog", steps=2, **kw):
    inputs = {**SMALL, **kw}
    return host.run("Cones2TrainResidual", model=model, clip=clip, vae=vae,
                    images=photos() if images is None else images, phrase=phrase, steps=steps, **inputs)


def first_step_loss_through_comfyui(host, model, clip, vae, images, seed, prompt):
    """The step-0 diffusion loss recomputed independently: ComfyUI's own apply_model and sampling maths.

    Returns (loss with the model's own target, loss had the output been read as eps).
    """
    import comfy.model_management
    import comfy.model_sampling

    tc = pack_module(host, "comfy_adapters.training")
    tr = pack_module(host, "training.trainer")
    si = pack_module(host, "training.subject_images")
    comfy.model_management.load_models_gpu([model])  # applies object patches (ModelSamplingDiscrete)
    with torch.inference_mode():
        bank = si.build_latent_bank(list(images), tc.vae_encoder(vae, model), 64)
        g = tr.step_generator(seed, 0)
        x0 = bank.sample(tr.image_indices(seed, 0, 1, len(bank)), g)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (1,), generator=g)
        ms = model.get_model_object("model_sampling")
        sigma = ms.sigmas[t].float()
        x = x0 + sigma * noise  # k-diffusion form of x_t
        context = clip.encode_from_tokens(clip.tokenize(prompt))
        denoised = model.model.apply_model(x, sigma, c_crossattn=context)
        eps_out = (x - denoised) / sigma
        eps_loss = float(((eps_out - noise) ** 2).mean())
        if isinstance(ms, comfy.model_sampling.V_PREDICTION):
            # ComfyUI: denoised = x / (s^2 + 1) - v * s / sqrt(s^2 + 1)
            v_out = (x / (sigma**2 + 1) - denoised) * (sigma**2 + 1).sqrt() / sigma
            a = 1 / (1 + sigma**2)
            v_target = a.sqrt() * noise - (1 - a).sqrt() * x0
            return float(((v_out - v_target) ** 2).mean()), eps_loss
        return eps_loss, eps_loss


def sample(host, model, clip):
    (pos,) = host.run("CLIPTextEncode", clip=clip, text="a dog")
    (neg,) = host.run("CLIPTextEncode", clip=clip, text="")
    (latent,) = host.run("EmptyLatentImage", width=64, height=64, batch_size=1)
    (out,) = host.run("KSampler", model=model, seed=1, steps=1, cfg=5.0, sampler_name="euler",
                      scheduler="normal", positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    return out["samples"]


@pytest.fixture(scope="module")
def trained(host, sd2):
    """One 2-step run (UNet gradient checkpointing on, a checkpoint after each step); records what must not change."""
    model, clip, vae = sd2
    tokens = clip.tokenize("a photo of a dog on the beach")
    clip_before = clip.encode_from_tokens(tokens)
    unet = model.model.diffusion_model
    unet_before = {k: v.clone() for k, v in list(unet.state_dict().items())[::25]}
    sample_before = sample(host, model, clip)
    fingerprint = pack_module(host, "comfy_adapters.model_families").text_encoder_fingerprint(clip)
    images = photos()
    with ProgressLog() as progress:
        residual, loss, plot = train(host, model, clip, vae, images=images, checkpoint_every=1,
                                     gradient_checkpointing=True)
    return dict(residual=residual, loss=loss, plot=plot, progress=progress.values, images=images, fingerprint=fingerprint,
                clip_before=clip_before, clip_after=clip.encode_from_tokens(tokens), tokens=tokens,
                unet_before=unet_before, unet_after={k: unet.state_dict()[k] for k in unet_before},
                sample_before=sample_before, sample_after=sample(host, model, clip))


def test_training_returns_a_residual_a_loss_map_and_a_plot(trained):
    r = trained["residual"]
    assert r.tensor.shape == (1, 1024) and r.tensor.dtype == torch.float32
    assert torch.isfinite(r.tensor).all() and r.tensor.abs().max() > 0
    assert r.subject == "dog" and r.token_ids == (1929,)  # SD2's id of "dog"
    assert r.base_model == "sd2" and r.text_encoders == trained["fingerprint"]
    t = r.training
    assert t["steps"] == 2 and t["prediction"] == "eps" and t["preservation"] == "paper"
    assert t["residual_from"] == "corpus" and t["corpus_size"] == 1 and t["train_layers"] == 1
    assert t["training_prompt"] == "a photo of a dog" and t["training_checkpoint"].endswith(".cones2-train.safetensors")
    assert "checkpoint" not in t and "model_checkpoint" not in t  # the node does not know the model's file
    loss = trained["loss"]
    assert set(loss) >= {"loss"} and len(loss["loss"]) == 2 and all(math.isfinite(v) for v in loss["loss"])
    # step 1 starts from the original encoder; the targets were encoded in a batch of another shape, so
    # only kernel noise remains: 1 sentence x 77 rows x 1024 final-LayerNorm values of size ~1
    assert loss["preservation"][0] <= squared_error_bound(77 * 1024)
    plot = trained["plot"]
    assert plot.shape == (1, 360, 640, 3) and 0 <= float(plot.min()) and float(plot.max()) <= 1
    assert (plot < 0.99).any()  # something is drawn
    # the bar fills for the 3 photos, the setup (the prompt + 1 corpus sentence), the 2 steps, the Eq. 5
    # extraction (1 sentence)
    assert trained["progress"] == [(0, 3), (1, 3), (2, 3), (3, 3), (0, 2), (1, 2), (2, 2), (1, 2), (2, 2), (0, 1),
                                   (1, 1)]


def test_comfyui_clip_and_unet_are_unchanged_by_training(trained):
    assert torch.equal(trained["clip_before"], trained["clip_after"])
    for k, v in trained["unet_before"].items():
        assert torch.equal(v, trained["unet_after"][k]), k


def test_the_original_model_samples_exactly_as_before_training(host, sd2, trained):
    assert torch.equal(trained["sample_before"], trained["sample_after"])
    unet = sd2[0].model.diffusion_model
    assert not any("forward" in m.__dict__ for m in unet.modules())  # checkpoint wrappers removed


def test_the_eps_loss_matches_comfyuis_own_sampling_maths(host, sd2, trained):
    model, clip, vae = sd2
    want, _ = first_step_loss_through_comfyui(host, model, clip, vae, trained["images"], SMALL["seed"],
                                              "a photo of a dog")
    assert trained["loss"]["diffusion"][0] == pytest.approx(want, rel=2e-3)


def test_v_prediction_trains_with_the_v_target(host, sd2):
    model, clip, vae = sd2
    load_core_extras(host)
    (vmodel,) = host.run("ModelSamplingDiscrete", model=model, sampling="v_prediction", zsnr=False)
    images = photos(seed=4)
    residual, loss, _ = train(host, vmodel, clip, vae, images=images, steps=1, preservation="none")
    assert residual.training["prediction"] == "v"
    want_v, as_eps = first_step_loss_through_comfyui(host, vmodel, clip, vae, images, SMALL["seed"],
                                                     "a photo of a dog")
    assert loss["diffusion"][0] == pytest.approx(want_v, rel=2e-3)
    assert loss["diffusion"][0] != pytest.approx(as_eps, rel=1e-2)  # an eps target would give another loss


def test_a_run_resumes_from_the_node_checkpoint(host, sd2, trained):
    model, clip, vae = sd2
    name = trained["residual"].training["training_checkpoint"]
    residual, loss, _ = train(host, model, clip, vae, images=trained["images"], steps=3, checkpoint_every=1,
                              resume_from=name)
    assert residual.training["steps"] == 3 and len(loss["loss"]) == 3
    assert loss["loss"][:2] == pytest.approx(trained["loss"]["loss"])


def test_resuming_with_other_settings_is_refused(host, sd2, trained):
    model, clip, vae = sd2
    name = trained["residual"].training["training_checkpoint"]
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: cannot resume from .*learning_rate"):
        train(host, model, clip, vae, images=trained["images"], steps=3, resume_from=name, learning_rate=2e-4)


def test_cancel_stops_within_one_step_and_leaves_no_partial_file(host, sd2):
    import comfy.model_management

    model, clip, vae = sd2
    tn = pack_module(host, "comfy_adapters.folders")
    before = set(tn.checkpoint_names())
    with ProgressLog(interrupt_at=(1, 20)) as progress, \
            pytest.raises(comfy.model_management.InterruptProcessingException):
        train(host, model, clip, vae, phrase="robot toy", steps=20, checkpoint_every=1)
    assert progress.values[7:] == [(1, 20)]  # after the photos' and the setup's reports; step 2 never ran
    new = set(tn.checkpoint_names()) - before
    assert len(new) == 1
    state = pack_module(host, "training.train_checkpoint").load_state(tn.checkpoint_dir() / new.pop())
    assert state.step == 1
    assert not [p for p in tn.checkpoint_dir().iterdir() if p.name.startswith(".")]  # no temp files


def test_cancel_during_the_setup_stops_it_and_writes_nothing(host, sd2):
    import comfy.model_management

    model, clip, vae = sd2
    folders = pack_module(host, "comfy_adapters.folders")
    before = set(folders.checkpoint_names())
    with ProgressLog(interrupt_at=(1, 41)) as progress, \
            pytest.raises(comfy.model_management.InterruptProcessingException):
        train(host, model, clip, vae, phrase="teddy bear", steps=20, checkpoint_every=1, corpus_size=40)
    # the photos, the prompt, then the cancel: no corpus chunk, no step
    assert progress.values == [(0, 3), (1, 3), (2, 3), (3, 3), (0, 41), (1, 41)]
    assert set(folders.checkpoint_names()) == before
    assert not [p for p in folders.checkpoint_dir().iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("images, message", [
    (torch.zeros(0, 64, 64, 3), "no subject images. Connect 3-5 photos"),
    (torch.rand(2, 1, 1, 3), "image 1 is 1x1 px; subject photos must be at least 64 px"),
])
def test_bad_images_are_refused_with_a_clear_message(host, sd2, images, message):
    model, clip, vae = sd2
    with pytest.raises(ValueError, match=f"Cones2TrainResidual: {message}"):
        train(host, model, clip, vae, images=images)


@pytest.mark.parametrize("phrase", ["", "   "])
def test_a_phrase_of_zero_tokens_is_refused(host, sd2, phrase):
    model, clip, vae = sd2
    with pytest.raises(ValueError, match="Cones2TrainResidual: the phrase .* has no tokens. Type the subject's class"):
        train(host, model, clip, vae, phrase=phrase)


def test_a_weighted_phrase_is_refused(host, sd2):
    model, clip, vae = sd2
    with pytest.raises(ValueError, match="has prompt weights like"):
        train(host, model, clip, vae, phrase="(dog:1.3)")


def test_a_model_and_clip_of_different_families_are_refused(host, sd2, sd1):
    model, clip, vae = sd2
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: the MODEL is SD2.x but the CLIP is SD1.x's \(CLIP-L\)"):
        train(host, model, sd1[1], vae)
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: the MODEL is SD1.x but the CLIP is SD2.x's"):
        train(host, sd1[0], clip, vae)


def test_missing_inputs_are_named(host, sd2):
    model, clip, vae = sd2
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: the clip, vae input is None; load an SD1.x, SD2.x "
                                         r"or SDXL checkpoint"):
        train(host, model, None, None)


def test_an_unsupported_sampling_type_is_refused(host, sd2):
    model, clip, vae = sd2
    load_core_extras(host)
    (x0model,) = host.run("ModelSamplingDiscrete", model=model, sampling="x0", zsnr=False)
    with pytest.raises(ValueError, match="Cones 2 trains eps or v-prediction models on their discrete"):
        train(host, x0model, clip, vae)


def test_save_writes_atomically_and_never_overwrites(host, trained):
    rf = pack_module(host, "training.residual_file")
    folder = host.models_dir("cones2_residuals")
    for stale in folder.glob("trained_dog*.safetensors"):
        stale.unlink()
    first = host.run("Cones2SaveResidual", residual=trained["residual"], filename="trained_dog")
    second = host.run("Cones2SaveResidual", residual=trained["residual"], filename="trained_dog.safetensors")
    assert first["result"] == ("trained_dog.safetensors",) and second["result"] == ("trained_dog_2.safetensors",)
    assert first["ui"]["text"] == ["trained_dog.safetensors"]
    back = rf.load_residual(folder / "trained_dog_2.safetensors")
    assert torch.equal(back.tensor, trained["residual"].tensor)
    assert back.subject == "dog" and back.token_ids == (1929,) and back.training["steps"] == 2
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    default = host.run("Cones2SaveResidual", residual=trained["residual"], filename="")
    assert default["result"][0].startswith("dog")
    with pytest.raises(ValueError, match="is not a plain file name"):
        host.run("Cones2SaveResidual", residual=trained["residual"], filename="../escape")
    # Cones2LoadResidual reads it back, binding to the recorded subject
    (bindings,) = host.run("Cones2LoadResidual", residual_name="trained_dog.safetensors", phrase="", occurrence=1,
                           strength=1.0)
    assert bindings[0].phrase == "dog" and torch.equal(bindings[0].residual, trained["residual"].tensor)


def test_the_inputs_are_the_declared_settings_in_their_order(host):
    settings = pack_module(host, "training.train_settings").options()
    types = host.node("Cones2TrainResidual").INPUT_TYPES()
    assert list(types["required"]) == ["model", "clip", "vae", "images", "phrase",
                                       *[s.name for s in settings if not s.option.advanced]]
    assert list(types["optional"]) == [*[s.name for s in settings if s.option.advanced], "resume_from"]
    for s in settings:
        kind, widget = {**types["required"], **types["optional"]}[s.name]
        assert widget["default"] == s.default and widget["tooltip"].startswith(s.help)
        assert (widget.get("min"), widget.get("max"), widget.get("step")) == (s.option.min, s.option.max, s.option.step)
        if s.option.choices is not None:
            assert kind == [c.value for c in s.option.choices]


def test_the_settings_reach_the_trainer_as_their_types(host, monkeypatch):
    node = host.node("Cones2TrainResidual")
    seen = {}

    def fake_train(model, clip, vae, photos, phrase, settings, **kw):
        seen["settings"] = settings
        raise pack_module(host, "training.errors").TrainingInputError("stop here")

    monkeypatch.setattr(pack_module(host, "nodes.training_nodes"), "train_with_comfy", fake_train)
    with pytest.raises(ValueError, match="Cones2TrainResidual: stop here"):
        node().train(None, None, None, None, "dog", steps=7.0, learning_rate=2e-6, seed=2**64 - 1, flip=1,
                     training_prompt="{} here")
    s = seen["settings"]
    assert (s.steps, s.learning_rate, s.seed, s.flip, s.training_prompt) == (7, 2e-6, (2**64 - 1) % 2**63, True,
                                                                            "{} here")
    assert s.corpus_size == 1000 and isinstance(s.steps, int)
