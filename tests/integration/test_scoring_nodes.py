"""The scoring nodes in the real ComfyUI, in process, on random-weight encoders of real architectures.

Random weights say nothing about what a subject looks like, but identical pixels give identical
embeddings: an image whose region holds exactly a subject's photo has cosine 1 with it. The
cases below are built that way (a region crop is pixel-identical to a reference photo).
"""

import json

import pytest
import torch
from cones2.devtools.tiny_encoders import clip_vision_checkpoint, write_dinov2_folder

CLIP_VISION = "tiny-vitl.safetensors"


@pytest.fixture(scope="module")
def clip_vision(host):
    folder = host.models_dir("clip_vision")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / CLIP_VISION).exists():
        (folder / CLIP_VISION).symlink_to(clip_vision_checkpoint())
    return host.run("CLIPVisionLoader", clip_name=CLIP_VISION)[0]


@pytest.fixture(scope="module")
def dinov2(host):
    folder = host.models_dir("dinov2") / "dinov2-small-random"
    if not folder.exists():
        write_dinov2_folder(folder)
    assert host.node("Cones2LoadDINOv2").VALIDATE_INPUTS("dinov2-small-random") is True
    return host.run("Cones2LoadDINOv2", model_name="dinov2-small-random")[0]


def photo(seed, h, w):
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


A, B = photo(1, 24, 40), photo(2, 32, 16)  # subject A's and B's photos, of different aspects
BOXES = "cat: 4 8 40 24\ndog: 44 0 16 32"  # on a 64x48 canvas: A's photo fits the cat box, B's the dog box


def canvas(cat_photo, dog_photo, scale=1):
    img = torch.full((48, 64, 3), 0.3)
    img[8:32, 4:44] = cat_photo
    img[0:32, 44:60] = dog_photo
    if scale > 1:  # a bigger image of the same aspect, pixels repeated: the crop scales with it
        img = img.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return img


def references(host, scale=1):
    def up(x):
        return x.repeat_interleave(scale, 0).repeat_interleave(scale, 1)[None]
    refs = host.run("Cones2SubjectReference", images=up(A), phrase="cat", occurrence=1)[0]
    return host.run("Cones2SubjectReference", images=up(B), phrase="dog", occurrence=1, references=refs)[0]


def layout(host, width=64, height=48):
    return host.run("Cones2LayoutBoxes", width=width, height=height, boxes=BOXES, gamma=2.5)[0]


def score(host, images, refs, lay, **encoders):
    out = host.run("Cones2ScoreSubjects", images=images, layout=lay, references=refs, fit="pad", **encoders)
    assert set(out) == {"ui", "result"}
    return out["result"]


@pytest.mark.parametrize("encoder", ["clip_vision", "dinov2"])
def test_own_photo_scores_one_and_a_swap_turns_the_mixing_score_negative(host, request, encoder):
    enc = request.getfixturevalue(encoder)
    name = "clip" if encoder == "clip_vision" else "dinov2"
    right = canvas(A, B)
    report, table, data, heat = score(host, right[None], references(host), layout(host), **{encoder: enc})
    s = report.images[0][name]
    assert s.similarity[0][0] == pytest.approx(1.0, abs=1e-3) and s.similarity[1][1] == pytest.approx(1.0, abs=1e-3)
    assert s.similarity[0][1] < 0.999 and s.mixing[0] > 0 and s.mixing[1] > 0
    assert s.separation == pytest.approx(s.mudi_dc)
    # the same image with the layout's phrases exchanged: each region now holds the other subject's photo
    swapped_layout = host.run("Cones2LayoutBoxes", width=64, height=48, boxes="dog: 4 8 40 24\ncat: 44 0 16 32",
                              gamma=2.5)[0]
    swapped = score(host, right[None], references(host), swapped_layout, **{encoder: enc})[0].images[0][name]
    assert swapped.similarity[0] == pytest.approx(s.similarity[0][::-1])  # row 0: the dog, whose box shows A
    assert swapped.mixing[0] < 0 and swapped.mixing[1] < 0  # the layout-aware score sees the swap
    assert swapped.separation == pytest.approx(-s.separation, abs=1e-6)
    assert swapped.mudi_dc == pytest.approx(s.mudi_dc, abs=1e-6)  # MuDI's Algorithm 3 does not
    assert json.loads(data)["images"][0][name]["mixing"] == pytest.approx(list(s.mixing))
    assert "cat: own 1.000" in table
    assert heat.shape == (1, 34 + 28 * 2, 120 + 56 * 2, 3)


def test_crops_follow_the_layout_at_another_image_size(host, clip_vision):
    """A 2x image and 2x photos against the 64x48 layout: the crops are the photos again."""
    big = canvas(A, B, scale=2)
    s = score(host, big[None], references(host, scale=2), layout(host), clip_vision=clip_vision)[0].images[0]["clip"]
    assert s.own == pytest.approx((1.0, 1.0), abs=1e-3)
    with pytest.raises(ValueError, match="Cones2ScoreSubjects: the images are 64x64 but the layout canvas is 64x48"):
        score(host, torch.rand(1, 64, 64, 3), references(host), layout(host), clip_vision=clip_vision)


def test_both_encoders_at_once_and_picking_the_best(host, clip_vision, dinov2):
    right = canvas(A, B)
    half = canvas(A, photo(9, 32, 16))  # the dog region shows a stranger
    wrong = canvas(photo(8, 24, 40), photo(9, 32, 16))
    images = torch.stack([half, right, wrong])
    report = score(host, images, references(host), layout(host), clip_vision=clip_vision, dinov2=dinov2)[0]
    assert report.encoders == ("clip", "dinov2")
    for name in ("clip", "dinov2"):
        fidelity = report.values(f"fidelity ({'CLIP-I' if name == 'clip' else 'DINOv2'})")
        assert fidelity[1] == pytest.approx(1.0, abs=1e-3) and fidelity[1] > fidelity[0] and fidelity[1] > fidelity[2]
    out = host.run("Cones2PickBest", images=images, scores=report, score="fidelity (DINOv2)", keep=2, sampler_seed=42)
    picked, table, data = out["result"]
    order = sorted(range(3), key=lambda i: -report.values("fidelity (DINOv2)")[i])[:2]
    assert order[0] == 1 and torch.equal(picked, images[order])
    assert json.loads(data)["picks"][0] == {"rank": 1, "batch_index": 1, "seed": 42,
                                          "score": report.values("fidelity (DINOv2)")[1]}
    assert table.splitlines()[1].startswith("1. batch index 1 (seed 42): ")
    assert out["ui"]["cones2_picks"][0]["picks"][1]["batch_index"] == order[1]
    with pytest.raises(ValueError, match="Cones2PickBest: 2 images but scores of 3"):
        host.run("Cones2PickBest", images=images[:2], scores=report, score="CLIP-T", keep=1, sampler_seed=0)
    with pytest.raises(ValueError, match="Cones2PickBest: CLIP-T was not computed"):
        host.run("Cones2PickBest", images=images, scores=report, score="CLIP-T", keep=1, sampler_seed=0)


def test_clip_t_with_the_sd2_text_encoder_needs_the_matching_image_tower(host, sd2, clip_vision):
    """SD2's CLIP is OpenCLIP-H (1024 wide); a ViT-L image tower (768) is another CLIP: CLIP-T is explained, not faked."""
    _, clip, _ = sd2
    report, table, _, _ = score(host, canvas(A, B)[None], references(host), layout(host), clip_vision=clip_vision,
                                clip=clip, prompt="a photo of a cat and a dog")
    assert report.clip_t is None
    assert "CLIP-T not computed: the text embedding is 1024 wide but the image encoder's is 768" in table
    assert "OpenCLIP ViT-H/14" in report.notes[0]


def test_clip_t_is_the_cosine_of_comfyuis_own_embeddings(host, sd2):
    """With ComfyUI's ViT-H/14 config (the image tower of SD2's text encoder), CLIP-T is computed."""
    import comfy.clip_vision
    from safetensors.torch import load_file

    _, clip, _ = sd2
    vision = comfy.clip_vision.load_clipvision_from_sd(load_file(str(clip_vision_checkpoint("clip_vision_config_h.json"))))
    image = canvas(A, B)[None]
    report = score(host, image, references(host), layout(host), clip_vision=vision, clip=clip, prompt="a cat and a dog")[0]
    with torch.inference_mode():
        text = clip.encode_from_tokens(clip.tokenize("a cat and a dog"), return_pooled=True)[1][0]
    square = torch.full((64, 64, 3), 0.5)
    square[8:56] = image[0]
    pixels = torch.nn.functional.interpolate(square.movedim(-1, 0)[None], size=(224, 224), mode="bicubic",
                                             antialias=True).clamp(0, 1).movedim(1, -1)
    with torch.inference_mode():
        emb = vision.encode_image(pixels, crop=False)["image_embeds"][0]
    assert report.clip_t[0] == pytest.approx(float(torch.nn.functional.cosine_similarity(emb.double(), text.double(),
                                                                                          dim=0)), abs=1e-4)


def test_bad_input_messages(host, clip_vision):
    refs = references(host)
    with pytest.raises(ValueError, match="Cones2ScoreSubjects: no image encoder"):
        score(host, canvas(A, B)[None], refs, layout(host))
    bird = host.run("Cones2SubjectReference", images=A[None], phrase="bird", occurrence=1, references=refs)[0]
    with pytest.raises(ValueError, match="reference photos for 'bird', which the layout does not have"):
        score(host, canvas(A, B)[None], bird, layout(host), clip_vision=clip_vision)
    with pytest.raises(ValueError, match="Cones2SubjectReference: the mask is 8x8 but the photos of 'cat' are 40x24"):
        host.run("Cones2SubjectReference", images=A[None], phrase="cat", occurrence=1, mask=torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="mask of photo 1 of 'cat' is empty"):
        host.run("Cones2SubjectReference", images=A[None], phrase="cat", occurrence=1, mask=torch.zeros(1, 24, 40))
    message = host.node("Cones2LoadDINOv2").VALIDATE_INPUTS("dinov2-base")
    assert "no DINOv2 folder 'dinov2-base'" in message and "models/dinov2/<name>/" in message
    empty = host.models_dir("dinov2") / "no-weights"
    empty.mkdir(parents=True, exist_ok=True)
    (empty / "config.json").write_text('{"model_type": "dinov2"}')
    with pytest.raises(ValueError, match="models/dinov2/no-weights has a config.json but no model.safetensors"):
        host.run("Cones2LoadDINOv2", model_name="no-weights")


def test_a_reference_mask_cuts_the_photo_to_the_subject(host, clip_vision):
    """A's photo inside a bigger frame, with its mask, equals A's photo as a reference."""
    framed = torch.zeros(1, 40, 60, 3)
    framed[0, 10:34, 10:50] = A
    mask = torch.zeros(1, 40, 60)
    mask[0, 10:34, 10:50] = 1
    refs = host.run("Cones2SubjectReference", images=framed, phrase="cat", occurrence=1, mask=mask)[0]
    s = score(host, canvas(A, B)[None], refs, layout(host), clip_vision=clip_vision)[0].images[0]["clip"]
    assert s.own == pytest.approx((1.0,), abs=1e-3) and s.mixing is None


def test_a_dinov2_from_load_clip_vision_scores_as_dino_and_gives_no_clip_t(host, sd2, tmp_path):
    """Core Load CLIP Vision also loads DINOv2 files: its scores are DINO ones, and CLIP-T is refused (no text tower)."""
    import comfy.clip_vision
    from cones2.devtools.tiny_checkpoints import randomize

    config = json.loads((host.path / "comfy" / "image_encoders" / "dino2_large.json").read_text())
    config.update(hidden_size=384, num_hidden_layers=2, num_attention_heads=6)  # ComfyUI's DINOv2 class, small
    (tmp_path / "dino.json").write_text(json.dumps(config))
    vision = comfy.clip_vision.ClipVisionModel(str(tmp_path / "dino.json"))
    vision.load_sd(randomize(vision.get_sd(), torch.Generator().manual_seed(5)))
    _, clip, _ = sd2
    report, table, _, _ = score(host, canvas(A, B)[None], references(host), layout(host), clip_vision=vision,
                                clip=clip, prompt="a cat and a dog")
    assert report.encoders == ("dinov2",) and report.clip_t is None
    assert report.images[0]["dinov2"].own == pytest.approx((1.0, 1.0), abs=1e-3)
    assert "CLIP-T not computed: the clip_vision model is DINOv2, which has no text tower" in table


def small_clip_vision(host, tmp_path, config_name):
    """ComfyUI's CLIP vision class with one of its configs made small (2 layers, 128 wide), projection kept."""
    import comfy.clip_vision
    from cones2.devtools.tiny_checkpoints import randomize

    config = json.loads((host.path / "comfy" / config_name).read_text())
    config.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
    (tmp_path / config_name).write_text(json.dumps(config))
    vision = comfy.clip_vision.ClipVisionModel(str(tmp_path / config_name))
    vision.load_sd(randomize(vision.get_sd(), torch.Generator().manual_seed(7)))
    return vision


def test_clip_t_on_sdxl_is_bigGs_projected_pooled_vector_against_a_bigG_tower(host, sdxl, tmp_path):
    """SDXL's pooled vector is bigG's projected one (1280): with a ViT-bigG-shaped tower, CLIP-T is its cosine."""
    _, clip, _ = sdxl
    vision = small_clip_vision(host, tmp_path, "clip_vision_config_g.json")
    image = canvas(A, B)[None]
    report = score(host, image, references(host), layout(host), clip_vision=vision, clip=clip, prompt="a cat and a dog")[0]
    with torch.inference_mode():
        text = clip.encode_from_tokens(clip.tokenize("a cat and a dog"), return_pooled=True)[1][0]
    square = torch.full((64, 64, 3), 0.5)
    square[8:56] = image[0]
    pixels = torch.nn.functional.interpolate(square.movedim(-1, 0)[None], size=(224, 224), mode="bicubic",
                                             antialias=True).clamp(0, 1).movedim(1, -1)
    with torch.inference_mode():
        emb = vision.encode_image(pixels, crop=False)["image_embeds"][0]
    assert text.shape == emb.shape == (1280,) and not report.notes
    assert report.clip_t[0] == pytest.approx(float(torch.nn.functional.cosine_similarity(emb.double(), text.double(),
                                                                                          dim=0)), abs=1e-4)


def test_clip_t_on_sd1_is_explained_not_faked(host, sd1, clip_vision):
    """SD1.5 checkpoints carry no text projection; ComfyUI's SD1 CLIP pools unprojected: CLIP-T is refused with why."""
    _, clip, _ = sd1
    report, table, _, _ = score(host, canvas(A, B)[None], references(host), layout(host), clip_vision=clip_vision,
                                clip=clip, prompt="a photo of a cat and a dog")
    assert report.clip_t is None and report.encoders == ("clip",)
    assert "CLIP-T not computed: SD1.x checkpoints carry no text projection" in table
    assert report.images[0]["clip"].own == pytest.approx((1.0, 1.0), abs=1e-3)  # CLIP-I still scores
