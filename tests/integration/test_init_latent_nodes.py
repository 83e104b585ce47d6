"""MuDI's initial latent in the real ComfyUI: Eq. 3 at the UNet's first input, for every core sampler.

The UNet's input is read by a forward pre-hook on the tiny SD2 checkpoint's diffusion model
(what ComfyUI actually feeds it, after its noise scaling and c_in); the expected value is built
from ComfyUI's own pieces: the seed's noise (comfy.sample.prepare_noise), core VAEEncode of the
node's composite, and the SD latent scale 0.18215.
"""

import sys

import numpy as np
import pytest
import torch
from cones2.devtools.comfy_host import load_core_extras
from PIL import Image

SIZE = 64  # an 8x8 latent: fast on the CPU
SEED = 7
SD_SCALE = 0.18215  # SD1/SD2 latent format: model space = VAE latent * 0.18215


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def layout_of(host, width=SIZE, height=SIZE):
    L = pack_module(host, "guidance.layout")
    return L.Layout(width, height, (
        L.LayoutSubject("dog", 1, box=L.Box(0, 8 * height // SIZE, width // 2, height // 2)),
        L.LayoutSubject("flower", 1, box=L.Box(width // 2 + 8, 0, width // 2 - 8, height)),
    ))


def photo(colour, width, height, subject):
    """IMAGE [1, H, W, 3]: grey with a coloured rectangle; MASK [1, H, W] of the rectangle."""
    x, y, w, h = subject
    image = torch.full((1, height, width, 3), 0.5)
    image[0, y:y + h, x:x + w] = torch.tensor(colour)
    mask = torch.zeros(1, height, width)
    mask[0, y:y + h, x:x + w] = 1.0
    return image, mask


@pytest.fixture(scope="module")
def photos(host):
    (dog,) = host.run("Cones2SubjectPhoto", image=photo((0.9, 0.2, 0.1), 50, 40, (5, 5, 30, 20))[0],
                      mask=photo((0.9, 0.2, 0.1), 50, 40, (5, 5, 30, 20))[1], phrase="dog", occurrence=1,
                      mask_is="subject", index=0)
    image, mask = photo((0.1, 0.3, 0.9), 30, 90, (5, 10, 20, 70))
    (both,) = host.run("Cones2SubjectPhoto", image=image, mask=mask, phrase="flower", occurrence=1,
                       mask_is="subject", index=0, subject_photos=dog)
    return both


@pytest.fixture(scope="module")
def prompts(host, sd2):
    _model, clip, _vae = sd2
    (pos,) = host.run("Cones2ApplyResidual", clip=clip, text="a dog and a flower")
    (neg,) = host.run("CLIPTextEncode", clip=clip, text="")
    return pos, neg


class FirstUNetInput:
    """The first (x, timesteps) the UNet's forward receives while active."""

    def __init__(self, model):
        self.unet = model.model.diffusion_model
        self.x = self.t = None

    def __enter__(self):
        def hook(_module, args, kwargs):
            if self.x is None:
                self.x = args[0].detach().clone()
                self.t = (args[1] if len(args) > 1 else kwargs["timesteps"]).detach().clone()
        self.handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def sample(host, kind, model, latent, prompts, layout=None, seed=SEED):
    pos, neg = prompts
    if kind == "KSampler":
        (out,) = host.run("KSampler", model=model, seed=seed, steps=1, cfg=7.5, sampler_name="euler",
                          scheduler="normal", positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    elif kind == "KSamplerAdvanced":
        (out,) = host.run("KSamplerAdvanced", model=model, add_noise="enable", noise_seed=seed, steps=1, cfg=7.5,
                          sampler_name="euler", scheduler="normal", positive=pos, negative=neg, latent_image=latent,
                          start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")
    elif kind.startswith("Cones2LayoutGuidedSampler"):
        (out,) = host.run("Cones2LayoutGuidedSampler", model=model, seed=seed, steps=1, cfg=7.5, sampler_name="euler",
                          scheduler="normal", positive=pos, negative=neg, layout=layout, latent_image=latent,
                          denoise=1.0, weight=0.08, suppression=-1e8, suppression_scope="outside own region (official)",
                          sigma_schedule="log(1+sigma^2)*std (official)", start_percent=0.0, end_percent=1.0,
                          self_recurrence=kind.endswith("self_recurrence"))
    else:
        load_core_extras(host)
        (sigmas,) = host.run("BasicScheduler", model=model, scheduler="normal", steps=1, denoise=1.0)
        (sampler,) = host.run("KSamplerSelect", sampler_name="euler")
        if kind == "SamplerCustom":
            out, _ = host.run("SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=7.5, positive=pos,
                              negative=neg, sampler=sampler, sigmas=sigmas, latent_image=latent)
        else:
            (noise,) = host.run("RandomNoise", noise_seed=seed)
            (guider,) = host.run("CFGGuider", model=model, positive=pos, negative=neg, cfg=7.5)
            out, _ = host.run("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                              latent_image=latent)
    return out["samples"]


def expected_mean_shift(host, vae, composite, gamma):
    """γ·E(x_init)⊙Resize(M_init) in the model's space, from core VAEEncode and the composite's pixels:
    a latent cell is the subject's when more than half of its 8x8 pixels are."""
    (encoded,) = host.run("VAEEncode", pixels=composite, vae=vae)
    h, w = composite.shape[1] // 8, composite.shape[2] // 8
    subject = (composite[0].amax(dim=-1) > 0).float()  # the test photos have no black subject pixels
    cells = subject.view(h, 8, w, 8).sum(dim=(1, 3)) > 32
    return gamma * SD_SCALE * encoded["samples"] * cells


SAMPLERS = ["KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "Cones2LayoutGuidedSampler",
            "Cones2LayoutGuidedSampler+self_recurrence"]


@pytest.mark.parametrize("kind", SAMPLERS)
def test_eq3_holds_at_the_unets_first_input_for_every_sampler(host, sd2, photos, prompts, kind):
    model, _clip, vae = sd2
    layout = layout_of(host)
    latent, composite, _shown = host.run("Cones2LayoutInitLatent", layout=layout, subject_photos=photos, vae=vae,
                                         gamma=1.0)
    import comfy.sample

    with FirstUNetInput(model) as seen:
        sample(host, kind, model, latent, prompts, layout)
    eps = comfy.sample.prepare_noise(latent["samples"], SEED)
    want = eps + expected_mean_shift(host, vae, composite, 1.0)
    assert seen.x.shape[0] == 2  # positive and negative in one batch, both start from z_T
    for z in seen.x:
        torch.testing.assert_close(z[None], want, rtol=0, atol=2e-5)
    assert float(seen.t[0]) == 999.0  # t = T: full denoise


@pytest.mark.parametrize(("sampling", "zsnr", "connect_model"), [
    ("eps", False, False), ("v_prediction", False, False), ("v_prediction", False, True), ("eps", True, True)])
def test_eq3_holds_for_eps_and_v_prediction(host, sd2, photos, prompts, sampling, zsnr, connect_model):
    load_core_extras(host)
    base, _clip, vae = sd2
    (model,) = host.run("ModelSamplingDiscrete", model=base, sampling=sampling, zsnr=zsnr)
    layout = layout_of(host)
    latent, composite, _ = host.run("Cones2LayoutInitLatent", layout=layout, subject_photos=photos, vae=vae,
                                    gamma=2.5, model=model if connect_model else None)
    import comfy.sample

    with FirstUNetInput(model) as seen:
        sample(host, "KSampler", model, latent, prompts)
    want = comfy.sample.prepare_noise(latent["samples"], SEED) + expected_mean_shift(host, vae, composite, 2.5)
    torch.testing.assert_close(seen.x[:1], want, rtol=0, atol=5e-5)


def test_the_scale_follows_a_connected_models_schedule(host, sd2, photos):
    """zsnr moves σ_max from 14.6 to ~4500: the LATENT must scale with it (hence the model input)."""
    load_core_extras(host)
    base, _clip, vae = sd2
    (zsnr,) = host.run("ModelSamplingDiscrete", model=base, sampling="v_prediction", zsnr=True)
    plain, composite, _ = host.run("Cones2LayoutInitLatent", layout=layout_of(host), subject_photos=photos, vae=vae,
                                   gamma=1.0)
    scaled, _, _ = host.run("Cones2LayoutInitLatent", layout=layout_of(host), subject_photos=photos, vae=vae,
                            gamma=1.0, model=zsnr)
    sigma_max = float(zsnr.get_model_object("model_sampling").sigma_max)
    shift = expected_mean_shift(host, vae, composite, 1.0) / SD_SCALE
    torch.testing.assert_close(plain["samples"], shift * (1 + 14.614642 ** 2) ** 0.5, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scaled["samples"], shift * (1 + sigma_max ** 2) ** 0.5, rtol=1e-5, atol=1e-3)
    assert sigma_max > 1000


@pytest.mark.parametrize("kind", ["KSampler", "Cones2LayoutGuidedSampler"])
def test_gamma_zero_is_plain_sampling_bit_for_bit(host, sd2, photos, prompts, kind):
    model, _clip, vae = sd2
    layout = layout_of(host)
    latent, _, _ = host.run("Cones2LayoutInitLatent", layout=layout, subject_photos=photos, vae=vae, gamma=0.0)
    (empty,) = host.run("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    assert torch.equal(latent["samples"], empty["samples"])
    with_init = sample(host, kind, model, latent, prompts, layout)
    plain = sample(host, kind, model, empty, prompts, layout)
    assert torch.equal(with_init, plain)


def test_previews_show_the_composite_and_the_decoded_mean_shift(host, sd2, photos):
    _model, _clip, vae = sd2
    latent, composite, shown = host.run("Cones2LayoutInitLatent", layout=layout_of(host), subject_photos=photos,
                                        vae=vae, gamma=1.5)
    assert composite.shape == shown.shape == (1, SIZE, SIZE, 3)
    red = (composite[0] - torch.tensor([0.9, 0.2, 0.1])).abs().amax(dim=-1) < 1e-3
    blue = (composite[0] - torch.tensor([0.1, 0.3, 0.9])).abs().amax(dim=-1) < 1e-3
    assert bool(red[8:40, 0:32].any()) and not bool(red[:, 32:].any()) and not bool(red[:8].any())
    assert bool(blue[:, 40:].any()) and not bool(blue[:, :40].any())
    (decoded,) = host.run("VAEDecode", vae=vae, samples={"samples": expected_mean_shift(host, vae, composite, 1.5)
                                                         / SD_SCALE})
    torch.testing.assert_close(shown, decoded.clamp(0, 1), rtol=0, atol=1e-4)


def test_a_latent_input_sets_size_and_batch(host, sd2, photos):
    _model, _clip, vae = sd2
    layout = layout_of(host, 48, 32)  # a 3:2 canvas for a 96x64 image (12x8 latent)
    (empty,) = host.run("EmptyLatentImage", width=96, height=64, batch_size=3)
    empty = dict(empty, batch_index=[4, 5, 6])
    latent, composite, shown = host.run("Cones2LayoutInitLatent", layout=layout, subject_photos=photos, vae=vae,
                                        gamma=1.0, latent=empty)
    assert latent["samples"].shape == (3, 4, 8, 12) and latent["batch_index"] == [4, 5, 6]
    assert composite.shape == (1, 64, 96, 3) and shown.shape == (1, 64, 96, 3)
    assert torch.equal(latent["samples"][0], latent["samples"][2])
    torch.testing.assert_close(latent["samples"][:1], expected_mean_shift(host, vae, composite, 1.0) / SD_SCALE
                               * (1 + 14.614642 ** 2) ** 0.5, rtol=1e-5, atol=1e-5)


def test_load_image_alpha_of_a_cut_out_png(host, sd2):
    """Core LoadImage gives MASK = 1 - alpha: a cut-out PNG (transparent background) needs mask_is='background'."""
    _model, _clip, vae = sd2
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., :3] = (20, 200, 40)
    rgba[10:30, 15:45, 3] = 255  # the subject is opaque, the rest transparent
    Image.fromarray(rgba, "RGBA").save(f"{host.folder_paths.get_input_directory()}/cones2_cutout.png")
    image, mask = host.run("LoadImage", image="cones2_cutout.png")
    assert float(mask[0, 0, 0]) == 1.0 and float(mask[0, 20, 30]) == 0.0  # ComfyUI's convention
    (photos,) = host.run("Cones2SubjectPhoto", image=image, mask=mask, phrase="dog", occurrence=1,
                         mask_is="background", index=0)
    _, composite, _ = host.run("Cones2LayoutInitLatent", layout=layout_of(host), subject_photos=photos, vae=vae,
                               gamma=1.0)
    green = composite[0].amax(dim=-1) > 0
    ys, xs = torch.nonzero(green, as_tuple=True)
    assert (int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1) == (0, 32, 13, 34)  # 30x20 -> 32x21
    with pytest.raises(ValueError, match=r"Cones2SubjectPhoto: subject 'dog': the mask covers the photo's whole "
                                         r"border, as Load Image's MASK of a cut-out PNG .*; set mask_is to "
                                         r"'background'"):
        host.run("Cones2SubjectPhoto", image=image, mask=mask, phrase="dog", occurrence=1, mask_is="subject", index=0)


def test_node_errors_name_the_node_the_subject_and_the_fix(host, sd2, photos):
    _model, _clip, vae = sd2
    L = pack_module(host, "guidance.layout")
    only_dog = L.Layout(SIZE, SIZE, (L.LayoutSubject("dog", 1, box=L.Box(0, 0, 32, 32)),))
    with pytest.raises(ValueError, match=r"^Cones2LayoutInitLatent: there is a photo for 'flower' but the layout has "
                                         r"no such subject \(its subjects: 'dog'\)"):
        host.run("Cones2LayoutInitLatent", layout=only_dog, subject_photos=photos, vae=vae, gamma=1.0)
    (wide,) = host.run("EmptyLatentImage", width=128, height=64, batch_size=1)
    with pytest.raises(ValueError, match=r"^Cones2LayoutInitLatent: the layout canvas is 64x64 \(aspect 1.000\) but "
                                         r"the latent is for a 128x64 image"):
        host.run("Cones2LayoutInitLatent", layout=layout_of(host), subject_photos=photos, vae=vae, gamma=1.0,
                 latent=wide)
    with pytest.raises(ValueError, match=r"^Cones2SubjectPhoto: subject 'dog #2': the mask is 64x64 but the photo is "
                                         r"50x40"):
        host.run("Cones2SubjectPhoto", image=torch.rand(1, 40, 50, 3), mask=torch.zeros(1, 64, 64), phrase="dog",
                 occurrence=2, mask_is="subject", index=0)


def test_the_nodes_are_registered_with_their_names_and_sockets(host):
    names = host.nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert names["Cones2SubjectPhoto"] == "Cones2 Subject Photo"
    assert names["Cones2LayoutInitLatent"] == "Cones2 Layout Init Latent"
    photo, init = host.node("Cones2SubjectPhoto"), host.node("Cones2LayoutInitLatent")
    assert photo.RETURN_TYPES == ("CONES2_SUBJECT_PHOTOS",) and photo.CATEGORY == init.CATEGORY == "cones2/latent"
    assert init.RETURN_TYPES == ("LATENT", "IMAGE", "IMAGE")
    assert init.RETURN_NAMES == ("latent", "composite", "mean_shift")
    assert init.INPUT_TYPES()["required"]["gamma"][0] == "FLOAT"  # a plain FLOAT spec (the shared float checks)


_FAMILY_PROMPTS = {}


@pytest.mark.parametrize("kind", ["KSampler", "Cones2LayoutGuidedSampler+self_recurrence"])
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_eq3_holds_on_sd1_and_sdxl_with_each_familys_latent_scale(host, request, photos, family, kind):
    """The LATENT is read from the connected MODEL: SD1.5's scale 0.18215, SDXL's 0.13025 (Segmind Vega here)."""
    model, clip, vae = request.getfixturevalue(family)
    if family not in _FAMILY_PROMPTS:
        (pos,) = host.run("Cones2ApplyResidual", clip=clip, text="a dog and a flower")
        (neg,) = host.run("CLIPTextEncode", clip=clip, text="")
        _FAMILY_PROMPTS[family] = pos, neg
    scale = {"sd1": SD_SCALE, "sdxl": 0.13025}[family]
    assert model.model.latent_format.scale_factor == scale
    layout = layout_of(host)
    latent, composite, _ = host.run("Cones2LayoutInitLatent", layout=layout, subject_photos=photos, vae=vae,
                                    gamma=1.0, model=model)
    import comfy.sample

    with FirstUNetInput(model) as seen:
        sample(host, kind, model, latent, _FAMILY_PROMPTS[family], layout)
    shift = expected_mean_shift(host, vae, composite, 1.0) / SD_SCALE * scale
    want = comfy.sample.prepare_noise(latent["samples"], SEED) + shift
    for z in seen.x:
        torch.testing.assert_close(z[None], want, rtol=0, atol=5e-5)
    sigma_max = float(model.get_model_object("model_sampling").sigma_max)
    torch.testing.assert_close(latent["samples"], shift / scale * (1 + sigma_max ** 2) ** 0.5, rtol=1e-5, atol=1e-4)
