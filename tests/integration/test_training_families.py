"""Cones2TrainResidual on SD1.5 and SDXL (Segmind Vega) in the real ComfyUI, in process.

One 2-step run per family at 64 px, the encoders' last layer training, a one-sentence corpus:
SDXL's two text encoders (CLIP-L + OpenCLIP bigG, full size) are what costs time and memory.
The SD2.x runs are in test_training_nodes.py.
"""

import sys

import pytest
import torch
from cones2_test_support.float_noise import squared_error_bound
from cones2_test_support.memory import SDXL_TRAINING_GIB, require_free_memory

SMALL = dict(learning_rate=1e-4, batch_size=1, resolution=64, preservation_weight=1e-3, seed=3,
             corpus_size=1, sentences_per_step=1, train_layers=1, gradient_checkpointing=False)
FAMILIES = {"sd1": ("sd1", 768), "sdxl": ("sdxl", 2048)}  # fixture name: (family key, conditioning width)
DOG = 1929  # CLIP's BPE id of "dog" (CLIP-L, OpenCLIP-H and bigG share the vocabulary)
PROMPT = "a photo of a dog"


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def photos(n=3, h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, 3, generator=g)


def train(host, model, clip, vae, images=None, phrase="dog", steps=2, **kw):
    return host.run("Cones2TrainResidual", model=model, clip=clip, vae=vae,
                    images=photos() if images is None else images, phrase=phrase, steps=steps, **{**SMALL, **kw})


def relative_error(ours, theirs):
    return float((ours - theirs).norm() / theirs.norm())


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    """(fixture name, (MODEL, CLIP, VAE)) of each family's tiny checkpoint."""
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def trained(host, family):
    name, (model, clip, vae) = family
    if name == "sdxl":
        require_free_memory(SDXL_TRAINING_GIB, "training on the SDXL test checkpoint")
    images = photos()
    clip_before = clip.encode_from_tokens(clip.tokenize(PROMPT))
    # SDXL with the UNet's activation checkpoints (a low-memory option; also keeps this CPU test near 12 GB)
    residual, loss, _ = train(host, model, clip, vae, images=images, gradient_checkpointing=name == "sdxl")
    fingerprint = pack_module(host, "comfy_adapters.model_families").text_encoder_fingerprint(clip)
    return dict(name=name, residual=residual, loss=loss, images=images, clip_before=clip_before,
                clip_after=clip.encode_from_tokens(clip.tokenize(PROMPT)), fingerprint=fingerprint)


def test_the_residual_covers_the_familys_whole_row_and_records_its_family(trained):
    key, width = FAMILIES[trained["name"]]
    r = trained["residual"]
    assert r.tensor.shape == (1, width) and r.tensor.dtype == torch.float32
    assert torch.isfinite(r.tensor).all() and r.tensor.abs().max() > 0
    assert r.base_model == key and r.subject == "dog" and r.token_ids == (DOG,)
    assert r.text_encoders == trained["fingerprint"]  # what applying the residual compares with
    t = r.training
    assert t["steps"] == 2 and t["prediction"] == "eps" and t["resolution"] == 64 and t["train_layers"] == 1
    loss = trained["loss"]
    assert len(loss["loss"]) == 2 and all(torch.isfinite(torch.tensor(loss["loss"])))
    # the preservation term of step 1 compares the original encoder with itself (kernel noise only; SDXL's
    # rows are not layer-normed, so the noise scales with their size)
    rms = float(trained["clip_before"].pow(2).mean().sqrt())
    assert loss["preservation"][0] <= squared_error_bound(77 * width, rms=rms)
    assert loss["preservation"][1] > squared_error_bound(77 * width, rms=rms)  # and then the encoder moved
    # ComfyUI's CLIP is copied, never changed
    assert torch.equal(trained["clip_before"], trained["clip_after"])


def comfyui_conditioning(host, model, clip, x, text):
    """The model inputs of ``text`` as ComfyUI's sampler makes them: CLIPTextEncode, then the model's
    extra_conds at the latent's size (SDXL: y from the pooled vector and the size conditioning)."""
    import comfy.sampler_helpers
    import comfy.samplers

    (cond,) = host.run("CLIPTextEncode", clip=clip, text=text)
    conds = comfy.samplers.encode_model_conds(model.model.extra_conds, comfy.sampler_helpers.convert_cond(cond),
                                              x, torch.device("cpu"), "positive")
    return {k: v.cond for k, v in conds[0]["model_conds"].items()}


def test_the_first_step_loss_is_comfyuis_own_for_the_training_prompt(host, family, trained):
    """The UNet sees the rows and (SDXL) the ADM input y that inference would give for the training prompt."""
    import comfy.model_management

    _, (model, clip, vae) = family
    tc = pack_module(host, "comfy_adapters.training")
    tr = pack_module(host, "training.trainer")
    si = pack_module(host, "training.subject_images")
    comfy.model_management.load_models_gpu([model])
    seed = SMALL["seed"]
    with torch.inference_mode():
        bank = si.build_latent_bank(list(trained["images"]), tc.vae_encoder(vae, model), 64)
        g = tr.step_generator(seed, 0)
        x0 = bank.sample(tr.image_indices(seed, 0, 1, len(bank)), g)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (1,), generator=g)
        sigma = model.get_model_object("model_sampling").sigmas[t].float()
        x = x0 + sigma * noise
        inputs = comfyui_conditioning(host, model, clip, x, PROMPT)
        assert ("y" in inputs) == (trained["name"] == "sdxl")
        eps = (x - model.model.apply_model(x, sigma, **inputs)) / sigma
        want = float(((eps - noise) ** 2).mean())
    assert trained["loss"]["diffusion"][0] == pytest.approx(want, rel=2e-3)


def test_sd1_and_sd2_take_no_adm_input(host, sd1, sd2):
    tc = pack_module(host, "comfy_adapters.training")
    assert tc.adm_condition(sd1[0], torch.ones(1, 768), 64) is None
    assert tc.adm_condition(sd2[0], torch.ones(1, 1024), 64) is None


def test_sdxl_trains_with_the_frozen_pooled_vector_and_the_images_size(host, sdxl):
    model, clip, _ = sdxl
    tc = pack_module(host, "comfy_adapters.training")
    (cond,) = host.run("CLIPTextEncode", clip=clip, text=PROMPT)
    y = tc.adm_condition(model, cond[0][1]["pooled_output"], 64)
    with torch.inference_mode():
        want = comfyui_conditioning(host, model, clip, torch.zeros(1, 4, 8, 8), PROMPT)["y"]
        at_1024 = comfyui_conditioning(host, model, clip, torch.zeros(1, 4, 128, 128), PROMPT)["y"]
    assert y.shape == (1, 2816) and torch.equal(y, want.float())
    assert not torch.equal(y, at_1024.float())  # the size conditioning is the training size's


@pytest.mark.parametrize("name, layer, expect", [
    ("sd1", None, (-1, True)), ("sd1", -2, (-2, True)),  # SD1: the last layer, normed; CLIPSetLastLayer -2
    ("sdxl", None, (-2, False)), ("sdxl", -1, (-1, False)),  # SDXL: the penultimate, unnormed
    ("sd2", None, (-2, True)), ("sd2", -24, (-24, True)), ("sd2", -30, (-1, True)),
])
def test_the_copied_layer_and_norm_are_the_hosts_own_choice(host, request, name, layer, expect):
    model, clip, _ = request.getfixturevalue(name)
    tc = pack_module(host, "comfy_adapters.training")
    family = pack_module(host, "training.model_families").FAMILIES[name]
    for key in family.encoders:
        module = getattr(clip.cond_stage_model, f"clip_{key}")
        before = (module.layer, module.layer_idx)
        assert tc._output_layer(module, layer) == expect
        assert (module.layer, module.layer_idx) == before


def trainable_copy(host, clip, name):
    import comfy.model_management

    tc = pack_module(host, "comfy_adapters.training")
    family = pack_module(host, "training.model_families").FAMILIES[name]
    tokenize, special = tc.family_tokenizer(clip, family)
    encoder, pooled = tc.trainable_encoder(clip, family, tokenize, special, comfy.model_management.get_torch_device())
    return encoder, pooled, tokenize, special


@pytest.mark.parametrize("last_layer", [None, -2])
def test_the_trainable_copy_reproduces_comfyuis_sd1_encoding(host, sd1, last_layer):
    _, clip, _ = sd1
    if last_layer is not None:
        (clip,) = host.run("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=last_layer)
    encoder, _, tokenize, special = trainable_copy(host, clip, "sd1")
    assert len(encoder.layers) == (12 if last_layer is None else 11)
    for text in ("a photo of a dog on the beach", "a robot toy, a cat and a dog in the snow at night"):
        ids = [special.start, *tokenize(text), special.end]
        ids += [special.end] * (77 - len(ids))  # CLIP-L pads with the end token
        with torch.no_grad():
            ours = encoder(torch.tensor([ids]))
        assert relative_error(ours, clip.encode_from_tokens(clip.tokenize(text))) < 1e-4


def test_the_trainable_copy_reproduces_comfyuis_sdxl_encoding(host, sdxl):
    _, clip, _ = sdxl
    encoder, pooled, tokenize, special = trainable_copy(host, clip, "sdxl")
    (cond,) = host.run("CLIPTextEncode", clip=clip, text="a photo of a dog on the beach")  # the check's prompt
    assert torch.equal(pooled, cond[0][1]["pooled_output"].float())  # bigG's projected pooled vector, frozen
    assert [len(p.layers) for p in encoder.parts] == [11, 31] and encoder.widths == [768, 1280]
    assert encoder.pads == (special.end, 0)  # CLIP-L pads with the end token, bigG with 0
    assert encoder.first_trained_layer(1) == 30 and len(encoder.trainable_parameters(1)) == 2 * 16
    for text in ("a photo of a dog on the beach", "a robot toy, a cat and a dog in the snow at night"):
        ids = [special.start, *tokenize(text), special.end]
        ids += [special.pad] * (77 - len(ids))
        with torch.no_grad():
            ours = encoder(torch.tensor([ids]))
        theirs = clip.encode_from_tokens(clip.tokenize(text))
        assert ours.shape == theirs.shape == (1, 77, 2048)
        assert relative_error(ours[..., :768], theirs[..., :768]) < 1e-4  # CLIP-L
        assert relative_error(ours[..., 768:], theirs[..., 768:]) < 1e-4  # bigG


def test_a_model_and_clip_of_different_families_are_refused(host, sd1, sdxl):
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: the MODEL is SDXL but the CLIP is SD1.x's"):
        train(host, sdxl[0], sd1[1], sd1[2])


def test_a_variant_whose_unet_needs_more_than_text_is_refused(host, sd1):
    """An inpainting SD1.5 (9 input channels), detected by ComfyUI as SD15 with a mask and image input."""
    import comfy.sd
    from cones2.devtools.tiny_sd15 import tiny_sd15_checkpoint
    from safetensors.torch import load_file

    sd = load_file(str(tiny_sd15_checkpoint()))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    sd[key] = torch.zeros(sd[key].shape[0], 9, *sd[key].shape[2:], dtype=sd[key].dtype)
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True)
    assert type(model.model.model_config).__name__ == "SD15"
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: the MODEL is SD15, an SD1.x variant whose UNet "
                                         r"takes more than a text prompt .* load a plain SD1.x one \(e.g. "
                                         r"v1-5-pruned-emaonly.safetensors\)"):
        train(host, model, clip, vae)


@pytest.mark.parametrize("name, prediction, size", [("sd1", "eps", 512), ("sd2", "eps", 512), ("sd2", "v", 768)])
def test_resolution_0_trains_at_the_models_own_size(host, request, monkeypatch, name, prediction, size):
    """Checked where the adapter hands the settings to the core loop (nothing heavy runs after)."""
    from cones2.devtools.comfy_host import load_core_extras

    model, clip, vae = request.getfixturevalue(name)
    if prediction == "v":
        load_core_extras(host)
        (model,) = host.run("ModelSamplingDiscrete", model=model, sampling="v_prediction", zsnr=False)
    tc = pack_module(host, "comfy_adapters.training")
    seen = {}

    class Stop(Exception):
        pass

    def core(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(tc, "train_residual", core)
    with pytest.raises(Stop):
        train(host, model, clip, vae, resolution=0)
    assert seen["settings"].resolution == size and seen["prediction"] == prediction


def test_a_model_of_another_kind_is_refused_by_name(host, sd1):
    """A real (tiny, random) Flux MODEL built with ComfyUI's own classes: a DiT, not an SD UNet."""
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.Flux({
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 32,
        "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
        "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
        "guidance_embed": False})
    cpu = torch.device("cpu")
    flux = comfy.model_patcher.ModelPatcher(config.get_model({}, device=cpu), load_device=cpu, offload_device=cpu)
    with pytest.raises(ValueError, match=r"Cones2TrainResidual: the MODEL is Flux, which Cones 2 cannot use: it "
                                         r"needs an SD-style UNet"):
        train(host, flux, sd1[1], sd1[2])
