"""The workflows shipped in workflows/, each described once (``make_workflows.py`` writes both forms).

A new workflow is one function that builds a ``Graph``, decorated with ``@workflow`` (its name
is the file name, its docstring's first line the summary); nothing else needs to change.

Placeholders (the README explains them): checkpoints are the Stability AI file names
(``v2-1_512-ema-pruned.safetensors`` for SD2.1-base, ``v2-1_768-ema-pruned.safetensors`` for
SD2.1 768 v); residuals are named after their subject (``dog.safetensors``); layout images are
ours, in workflows/images/. Widgets not given here take the node's default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..training.model_families import SD1, SDXL, ModelFamily
from .workflow_builder import Graph

SD21_BASE = "v2-1_512-ema-pruned.safetensors"
SD21_768 = "v2-1_768-ema-pruned.safetensors"
RUNNER = "python scripts/run_workflow.py"  # run from the pack folder (custom_nodes/comfyui-cones2)


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], Graph]
    summary: str


SPECS: dict[str, Spec] = {}


def workflow(build: Callable[[], Graph]) -> Callable[[], Graph]:
    """Register ``build`` as the spec of ``workflows/<its name>.json``."""
    SPECS[build.__name__] = Spec(build.__name__, build, (build.__doc__ or "").strip().split("\n")[0])
    return build


def _model(g: Graph, ckpt: str = SD21_BASE):
    node = g.node("CheckpointLoaderSimple", col=0, title="Load SD2.1 checkpoint", ckpt_name=ckpt)
    note = g.note(f"""\
**Checkpoint**: an SD2.x checkpoint in `models/checkpoints`. `{ckpt}` is a placeholder name:
pick yours in the list. SD2.1-base (512 px) and SD2.1 768 (v-prediction) both work.""",
                  col=0, title="Model")
    g.group("Model", [node, note])
    return node


def _family_model(g: Graph, family: ModelFamily, detail: str):
    node = g.node("CheckpointLoaderSimple", col=0, title=f"Load {family.label} checkpoint", ckpt_name=family.checkpoint)
    note = g.note(f"""\
**Checkpoint**: an {family.label} checkpoint in `models/checkpoints`. `{family.checkpoint}` is a
placeholder name: pick yours in the list. {detail} The residuals must be trained on {family.label}
(a residual of another family is refused, naming both).""", col=0, title="Model")
    g.group("Model", [node, note])
    return node


def _residual_note(g: Graph, files: str) -> object:
    return g.note(f"""\
**Subjects**: each Load Residual binds one trained subject to one occurrence of a word of the
prompt. {files} are placeholders: put your residuals in `models/cones2_residuals` (train one
with the training workflow, or convert the authors' `.pt` with `scripts/convert_residual.py`)
and pick them in the lists.""", col=1, title="Subjects")


def _sample_and_save(g: Graph, model, positive, negative, layout, size: int, prefix: str, *,
                     guided_sampler: bool, col: int = 3, **sampler):
    latent = g.node("EmptyLatentImage", col=col, width=size, height=size, batch_size=1)
    if guided_sampler:
        sample = g.node("Cones2LayoutGuidedSampler", col=col, model=model[0], positive=positive[0],
                        negative=negative[0], layout=layout[0], latent_image=latent[0], **sampler)
    else:
        guided = g.node("Cones2LayoutGuidance", col=col, model=model[0], layout=layout[0])
        sample = g.node("KSampler", col=col, model=guided[0], positive=positive[0], negative=negative[0],
                        latent_image=latent[0], **sampler)
    decode = g.node("VAEDecode", col=col + 1, samples=sample[0], vae=model[2])
    save = g.node("SaveImage", col=col + 1, images=decode[0], filename_prefix=f"cones2/{prefix}")
    preview = g.node("Cones2LayoutPreview", col=col + 1, layout=layout[0], image=decode[0])
    show = g.node("PreviewImage", col=col + 1, title="Layout over the image", images=preview[0])
    g.group("Sample", [latent, sample] if guided_sampler else [latent, guided, sample])
    g.group("Result", [decode, save, preview, show])
    return sample


@workflow
def first_guided_image() -> Graph:
    """A first image with no residual: layout guidance alone puts "dog" and "cat" in their boxes."""
    g = Graph("first_guided_image")
    g.note(f"""\
## A first guided image (no residual needed)

No trained subject here: the prompt's plain class words ("dog", "cat") are the subjects, and
Layout Guidance pulls each word's attention into its box while KSampler samples. Pick your
SD2.x checkpoint and queue. Then move the boxes (drag them in the box editor) and queue again.

Next: train your own subject (the `train_residual` template) and add a Cones2 Load Residual on
the prompt's `bindings` input, as in `two_subjects_boxes`.

Headless, from the pack folder: `{RUNNER} workflows/api/first_guided_image.json -o out/`""",
           col=0, title="Read me", ui_size=(420, None))
    model = _model(g)
    pos = g.node("Cones2ApplyResidual", col=1, title="Positive prompt", clip=model[1],
                 text="a photo of a dog and a cat")
    neg = g.node("CLIPTextEncode", col=1, title="Negative prompt", clip=model[1], text="")
    prompt_note = g.note("""\
**Prompt**: Cones2 Apply Residual encodes like CLIP Text Encode and records where each word is,
which layout guidance needs. With nothing on `bindings` it adds no residual.""", col=1, title="Prompt")
    g.group("Prompt", [pos, neg, prompt_note])
    # tall enough for the box editor under the text, so the note below does not cover it
    boxes = g.node("Cones2LayoutBoxes", col=2, title="Where each subject goes", width=512, height=512,
                   boxes="dog: 16 128 240 352\ncat: 272 160 224 320", ui_size=(420, 720))
    layout_note = g.note("""\
**Boxes**: one line per subject, `phrase: x y width height` in pixels from the top-left corner
of a canvas of the image's size. Each phrase must be a word of the positive prompt.""", col=2, title="Layout")
    g.group("Layout", [boxes, layout_note])
    _sample_and_save(g, model, pos, neg, boxes, 512, "first_guided_image", guided_sampler=False,
                     seed=0, steps=30, cfg=7.5, sampler_name="euler", scheduler="normal")
    return g


@workflow
def two_subjects_boxes() -> Graph:
    """(a) Two subjects placed with boxes; Layout Guidance on the MODEL, core KSampler."""
    return _two_subjects_boxes("two_subjects_boxes", _model, 512, "two_subjects",
                               seed=0, steps=50, cfg=7.5, sampler_name="lms", scheduler="normal")


@workflow
def two_subjects_boxes_sd15() -> Graph:
    """(a) on SD1.5: two subjects placed with boxes; Layout Guidance on the MODEL, core KSampler."""
    return _two_subjects_boxes(
        "two_subjects_boxes_sd15",
        lambda g: _family_model(g, SD1, "Any SD1.x checkpoint (512 px) works, fine-tunes included."),
        512, "two_subjects_sd15", seed=0, steps=50, cfg=7.5, sampler_name="lms", scheduler="normal")


@workflow
def two_subjects_boxes_sdxl() -> Graph:
    """(a) on SDXL: two subjects placed with boxes; Layout Guidance on the MODEL, core KSampler."""
    return _two_subjects_boxes(
        "two_subjects_boxes_sdxl",
        lambda g: _family_model(g, SDXL, "SDXL base and its distilled shapes (SSD-1B, Segmind Vega, KOALA) "
                                         "work; the refiner does not (it has no CLIP-L)."),
        1024, "two_subjects_sdxl", seed=0, steps=30, cfg=7.0, sampler_name="euler", scheduler="normal")


def _two_subjects_boxes(name: str, model_stanza, size: int, prefix: str, **sampler) -> Graph:
    g = Graph(name)
    g.note(f"""\
## Two subjects, placed with boxes

Each subject's residual goes on its word in the prompt; Layout Guidance pulls each word's
attention into its box while KSampler samples. Any sampler node works after Layout Guidance.

Headless, from the pack folder: `{RUNNER} workflows/api/{name}.json --residual dog=my_dog.safetensors
--residual flower=my_flower.safetensors --seed 0-3`""", col=0, title="Read me", ui_size=(420, None))
    model = model_stanza(g)
    dog = g.node("Cones2LoadResidual", col=1, title="Subject 1: dog", residual_name="dog.safetensors",
                 phrase="dog", occurrence=1)
    flower = g.node("Cones2LoadResidual", col=1, title="Subject 2: flower", residual_name="flower.safetensors",
                    phrase="flower", occurrence=1, bindings=dog[0])
    note = _residual_note(g, "`dog.safetensors` and `flower.safetensors`")
    g.group("Subjects", [dog, flower, note])
    pos = g.node("Cones2ApplyResidual", col=2, title="Positive prompt", clip=model[1], bindings=flower[0],
                 text="a photo of a dog and a flower in the garden")
    neg = g.node("CLIPTextEncode", col=2, title="Negative prompt", clip=model[1], text="")
    k = size // 512  # the boxes of the 512 px canvas, scaled
    boxes = g.node("Cones2LayoutBoxes", col=2, title="Where each subject goes", width=size, height=size,
                   boxes=f"dog: {16 * k} {160 * k} {240 * k} {320 * k}\nflower: {288 * k} {224 * k} {208 * k} {256 * k}")
    layout_note = g.note("""\
**Boxes**: one line per subject, `phrase: x y width height` in pixels from the top-left corner
of a canvas of the image's size (or any size of the same aspect). A phrase must be a word of
the positive prompt; `dog #2:` is its second occurrence.""", col=2, title="Layout")
    g.group("Prompt and layout", [pos, neg, boxes, layout_note])
    _sample_and_save(g, model, pos, neg, boxes, size, prefix, guided_sampler=False, **sampler)
    return g


@workflow
def three_subjects_same_class() -> Graph:
    """(b) Three subjects, two of the same class: "a dog and a dog" bound by occurrence."""
    g = Graph("three_subjects_same_class")
    g.note(f"""\
## Three subjects, two of them dogs

"a dog and a dog": the first Load Residual binds occurrence 1 of "dog", the second binds
occurrence 2, and each occurrence has its own box (`dog #2:`). The Layout Guided Sampler is
KSampler with layout guidance built in.

Headless, from the pack folder: `{RUNNER} workflows/api/three_subjects_same_class.json --residual dog#1=my_dog.safetensors
--residual dog#2=other_dog.safetensors --residual barn=my_barn.safetensors --seed 0-3`""",
           col=0, title="Read me", ui_size=(420, None))
    model = _model(g)
    dog1 = g.node("Cones2LoadResidual", col=1, title="Subject 1: first dog", residual_name="dog1.safetensors",
                  phrase="dog", occurrence=1)
    dog2 = g.node("Cones2LoadResidual", col=1, title="Subject 2: second dog", residual_name="dog2.safetensors",
                  phrase="dog", occurrence=2, bindings=dog1[0])
    barn = g.node("Cones2LoadResidual", col=1, title="Subject 3: barn", residual_name="barn.safetensors",
                  phrase="barn", occurrence=1, bindings=dog2[0])
    note = _residual_note(g, "`dog1.safetensors`, `dog2.safetensors` and `barn.safetensors`")
    g.group("Subjects", [dog1, dog2, barn, note])
    pos = g.node("Cones2ApplyResidual", col=2, title="Positive prompt", clip=model[1], bindings=barn[0],
                 text="a photo of a dog and a dog in front of a barn")
    neg = g.node("CLIPTextEncode", col=2, title="Negative prompt", clip=model[1], text="")
    boxes = g.node("Cones2LayoutBoxes", col=2, title="Where each subject goes", width=512, height=512,
                   boxes="dog: 16 256 224 240\ndog #2: 272 256 224 240\nbarn: 96 16 320 208")
    g.group("Prompt and layout", [pos, neg, boxes])
    _sample_and_save(g, model, pos, neg, boxes, 512, "three_subjects", guided_sampler=True,
                     seed=0, steps=50, cfg=7.5, sampler_name="lms", scheduler="normal")
    return g


@workflow
def colour_map_layout() -> Graph:
    """(c) A layout from a colour-coded image (colour -> phrase), as the authors' format."""
    g = Graph("colour_map_layout")
    g.note(f"""\
## A layout from a colour map

Paint one flat colour per subject on a white background (any paint program) and say which
colour is which word. `colour_layout_512.png` is in `workflows/images/`: copy it to ComfyUI's
`input` folder, or upload it in Load Image. For a free-form region from a MASK (e.g. painted in
the mask editor) use Cones2 Layout from Mask instead, chained per subject.

Headless, from the pack folder (the runner uploads the image from workflows/images/):
`{RUNNER} workflows/api/colour_map_layout.json --residual mug=my_mug.safetensors
--residual flower=my_flower.safetensors`""", col=0, title="Read me", ui_size=(420, None))
    model = _model(g)
    mug = g.node("Cones2LoadResidual", col=1, title="Subject 1: mug", residual_name="mug.safetensors",
                 phrase="mug", occurrence=1)
    flower = g.node("Cones2LoadResidual", col=1, title="Subject 2: flower", residual_name="flower.safetensors",
                    phrase="flower", occurrence=1, bindings=mug[0])
    note = _residual_note(g, "`mug.safetensors` and `flower.safetensors`")
    g.group("Subjects", [mug, flower, note])
    pos = g.node("Cones2ApplyResidual", col=2, title="Positive prompt", clip=model[1], bindings=flower[0],
                 text="a photo of a mug and a flower on a wooden table")
    neg = g.node("CLIPTextEncode", col=2, title="Negative prompt", clip=model[1], text="")
    image = g.node("LoadImage", col=2, title="Colour layout", image="colour_layout_512.png")
    colors = g.node("Cones2LayoutFromColorMap", col=2, title="Which colour is which subject", image=image[0],
                    colors="255,192,0: mug\n0,112,192: flower")
    g.group("Prompt and layout", [pos, neg, image, colors])
    _sample_and_save(g, model, pos, neg, colors, 512, "colour_map", guided_sampler=False,
                     seed=0, steps=50, cfg=7.5, sampler_name="lms", scheduler="normal")
    return g


def _training(name: str, ckpt: str, model_title: str, model_note: str, **settings) -> Graph:
    """The training graph on one model family: photos -> Cones2TrainResidual -> saved residual + loss curve."""
    g = Graph(name)
    # Nodes first, notes after: node ids 1-5 are those of the training helper's first API graph.
    model = g.node("CheckpointLoaderSimple", col=0, title=model_title, ckpt_name=ckpt)
    photos = g.node("LoadImageSetFromFolderNode", col=1, title="Subject photos (a folder under ComfyUI/input)",
                    folder="cones2_subject", resize_method="None")
    train = g.node("Cones2TrainResidual", col=2, model=model[0], clip=model[1], vae=model[2], images=photos[0],
                   phrase="dog", checkpoint_every=500, **settings)
    save = g.node("Cones2SaveResidual", col=3, title="Save to models/cones2_residuals", residual=train[0],
                  filename="my_dog")
    plot = g.node("SaveImage", col=3, title="Loss curve", images=train[2], filename_prefix="cones2_loss")
    g.note(f"""\
## Train a subject

Put 3-5 photos of the subject, all of one size (e.g. cropped square), in a folder
under ComfyUI's `input` folder (here `input/cones2_subject/`; pick yours in the list, or set
`resize_method` to stretch them to the first one's size), type its class word (`dog`,
`robot toy`) in `phrase`, and queue. The residual is saved in `models/cones2_residuals/` under
the file name given (a new name if it exists): use it with Load Residual on the same kind of
checkpoint (it records its model family). The progress bar counts steps; Cancel stops within
one step; `checkpoint_every` saves a state that `resume_from` continues.

Headless, from the pack folder: `{RUNNER} workflows/api/{name}.json
--set "Subject photos (a folder under ComfyUI/input).folder=my_cat" --set Cones2TrainResidual.phrase=cat
--set Cones2SaveResidual.filename=my_cat`""", col=0, row=-1, title="Read me", ui_size=(420, None))
    note = g.note(model_note, col=0, title="Model")
    g.group("Model", [model, note])
    g.group("Photos", [photos])
    g.group("Train", [train])
    g.group("Result", [save, plot])
    return g


@workflow
def train_residual() -> Graph:
    """(d) Train a residual from a folder of photos and save it (SD2.x)."""
    return _training("train_residual", SD21_BASE, "SD2.1 checkpoint (512 base: eps; 768: v-prediction)", f"""\
**Checkpoint**: `{SD21_BASE}` is a placeholder for an SD2.x checkpoint in `models/checkpoints`:
pick yours. `resolution` 0 trains at the model's own size: 512 on SD2.1-base, 768 on SD2.1 768
(v-prediction).""")


@workflow
def train_residual_sd15() -> Graph:
    """(d) Train a residual on an SD1.5 checkpoint (CLIP-L, 768-wide rows)."""
    return _training("train_residual_sd15", SD1.checkpoint, "SD1.5 checkpoint", f"""\
**Checkpoint**: `{SD1.checkpoint}` is a placeholder for an SD1.x checkpoint in
`models/checkpoints` (fine-tunes included): pick yours. `resolution` 0 trains at {SD1.resolution} px. The residual
is {SD1.width} wide and works with SD1.x checkpoints only.""")


@workflow
def train_residual_sdxl() -> Graph:
    """(d) Train a residual on an SDXL checkpoint (CLIP-L + OpenCLIP bigG, both trained; 2048-wide rows)."""
    return _training("train_residual_sdxl", SDXL.checkpoint, "SDXL checkpoint", f"""\
**Checkpoint**: `{SDXL.checkpoint}` is a placeholder for an SDXL-family checkpoint in
`models/checkpoints` (SSD-1B, Segmind Vega and KOALA too): pick yours. Both text encoders train;
the pooled vector stays the frozen encoder's. `resolution` 0 trains at {SDXL.resolution} px; `train_layers`
8 trains the last 8 layers of each encoder (a low-memory setting; 0 = both whole, as the paper
trains SD2's one encoder). The residual is {SDXL.width} wide and works with SDXL checkpoints only.""",
                     train_layers=8)


@workflow
def official_example() -> Graph:
    """(e) The authors' inference example (our own layout image); the converter's template."""
    # The authors' sampler: diffusers' LMS at order 1 (= Euler), 50 steps, CFG 7.5, 768x768, seeds 0-3.
    # devtools/convert_official_config.py fills this graph's API form with a config's values.
    prompt, weight, suppression = "a mug and a dog on the beach", 0.08, -1e8
    steps, cfg, size, sampler, scheduler = 50, 7.5, 768, "euler", "normal"
    g = Graph("official_example")
    g.note(f"""\
## The authors' inference example

Converted from the authors' config by `devtools/convert_official_config.py`: their prompt,
residuals bound to the token positions of their `subject_list`, their colour layout and
γ+, guidance weight {weight:g} and suppression {suppression:g}, and
their sampler: {steps} steps of {sampler} ({scheduler}), CFG {cfg}, {size}x{size}, self-recurrence on guided
steps. They used diffusers' LMS scheduler, but with order 1, which is Euler's step.
They ran seeds 0 to 3: `python scripts/run_workflow.py <this API workflow> --seed 0-3`.""",
           col=0, title="Read me", ui_size=(420, None))
    model = g.node("CheckpointLoaderSimple", col=0, title="Load SD2.1 checkpoint", ckpt_name=SD21_768)
    note = g.note(f"""\
**Checkpoint**: `{SD21_768}` is a placeholder for the SD2.1 768 (v-prediction) model the
authors used; pick yours in the list.""", col=0, title="Model")
    g.group("Model", [model, note])
    mug = g.node("Cones2LoadResidual", col=1, title="Subject: mug", residual_name="mug.safetensors",
                 phrase="mug", occurrence=1, strength=1.0)
    dog = g.node("Cones2LoadResidual", col=1, title="Subject: dog", residual_name="dog.safetensors",
                 phrase="dog", occurrence=1, strength=1.0, bindings=mug[0])
    residuals = g.note("""\
**Residuals**: the authors' `.pt` files, converted to `.safetensors` in `models/cones2_residuals`
(the converter does it; `scripts/convert_residual.py` too). The `.pt` files load directly as well.""",
                       col=1, title="Subjects")
    g.group("Subjects", [mug, dog, residuals])
    pos = g.node("Cones2ApplyResidual", col=2, title="Positive prompt", clip=model[1], text=prompt, bindings=dog[0])
    neg = g.node("CLIPTextEncode", col=2, title="Negative prompt", clip=model[1], text="")
    image = g.node("LoadImage", col=2, title="Colour layout", image="official_layout_768.png")
    layout = g.node("Cones2LayoutFromColorMap", col=2, title="Which colour is which subject", image=image[0],
                    colors="255,192,0: mug 2.5\n255,0,0: dog 2.5", gamma=2.5, tolerance=0.0,
                    background="255,255,255")
    g.group("Prompt and layout", [pos, neg, image, layout])
    latent = g.node("EmptyLatentImage", col=3, width=size, height=size, batch_size=1)
    sample = g.node("Cones2LayoutGuidedSampler", col=3, title="Layout guided sampler (the authors' settings)",
                    model=model[0], positive=pos[0], negative=neg[0], layout=layout[0], latent_image=latent[0],
                    seed=0, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=1.0,
                    weight=weight, suppression=suppression, start_percent=0.0, end_percent=1.0,
                    self_recurrence=True)
    g.group("Sample", [latent, sample])
    decode = g.node("VAEDecode", col=4, samples=sample[0], vae=model[2])
    save = g.node("SaveImage", col=4, images=decode[0], filename_prefix="cones2/official_example")
    preview = g.node("Cones2LayoutPreview", col=4, layout=layout[0], image=decode[0])
    show = g.node("PreviewImage", col=4, title="Layout over the image", images=preview[0])
    g.group("Result", [decode, save, preview, show])
    return g


CLIP_VISION_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"  # OpenCLIP ViT-H/14: SD2's text encoder's image tower


@workflow
def score_and_pick_best() -> Graph:
    """(f) Generate a batch, score each subject against its photos and for mixing, keep the best two."""
    g = Graph("score_and_pick_best")
    g.note(f"""\
## Score a batch and keep the best seeds

KSampler makes 8 images from one seed. Cones2 Score Subjects crops each subject's box from
every image and compares it with every subject's reference photos (CLIP-I), scores identity
mixing (MuDI's own-minus-best-other, summed: higher = better separated) and CLIP-T against
the prompt. Cones2 Pick Best keeps the 2 best by the chosen score and prints their batch
indices: image *i* is regenerated alone by the same seed on Latent From Batch (batch_index *i*).
Keep `sampler_seed` equal to the KSampler seed, and the scoring prompt equal to the prompt
(class words, not residual names).

Headless, from the pack folder: `{RUNNER} workflows/api/score_and_pick_best.json --residual dog=my_dog.safetensors
--residual flower=my_flower.safetensors`""", col=0, title="Read me", ui_size=(420, None))
    model = _model(g)
    dog = g.node("Cones2LoadResidual", col=1, title="Subject 1: dog", residual_name="dog.safetensors",
                 phrase="dog", occurrence=1)
    flower = g.node("Cones2LoadResidual", col=1, title="Subject 2: flower", residual_name="flower.safetensors",
                    phrase="flower", occurrence=1, bindings=dog[0])
    g.group("Subjects", [dog, flower, _residual_note(g, "`dog.safetensors` and `flower.safetensors`")])
    prompt = "a photo of a dog and a flower in the garden"
    pos = g.node("Cones2ApplyResidual", col=2, title="Positive prompt", clip=model[1], bindings=flower[0],
                 text=prompt)
    neg = g.node("CLIPTextEncode", col=2, title="Negative prompt", clip=model[1], text="")
    boxes = g.node("Cones2LayoutBoxes", col=2, title="Where each subject goes", width=512, height=512,
                   boxes="dog: 16 160 240 320\nflower: 288 224 208 256")
    g.group("Prompt and layout", [pos, neg, boxes])
    latent = g.node("EmptyLatentImage", col=3, width=512, height=512, batch_size=8)
    guided = g.node("Cones2LayoutGuidance", col=3, model=model[0], layout=boxes[0])
    sample = g.node("KSampler", col=3, model=guided[0], positive=pos[0], negative=neg[0], latent_image=latent[0],
                    seed=0, steps=50, cfg=7.5, sampler_name="lms", scheduler="normal")
    decode = g.node("VAEDecode", col=3, samples=sample[0], vae=model[2])
    g.group("Sample 8", [latent, guided, sample, decode])
    dog_photos = g.node("LoadImageSetFromFolderNode", col=4, title="Dog photos (a folder under ComfyUI/input)",
                        folder="cones2_dog", resize_method="None")
    flower_photos = g.node("LoadImageSetFromFolderNode", col=4,
                           title="Flower photos (a folder under ComfyUI/input)", folder="cones2_flower",
                           resize_method="None")
    dog_ref = g.node("Cones2SubjectReference", col=4, images=dog_photos[0], phrase="dog", occurrence=1)
    flower_ref = g.node("Cones2SubjectReference", col=4, images=flower_photos[0], phrase="flower", occurrence=1,
                        references=dog_ref[0])
    encoder = g.node("CLIPVisionLoader", col=4, title="Image encoder (models/clip_vision)", clip_name=CLIP_VISION_H)
    ref_note = g.note(f"""\
**References**: the photos each residual was trained on, one folder per subject under ComfyUI's
`input` folder (`cones2_dog`, `cones2_flower` are placeholders). **Image encoder**: `{CLIP_VISION_H}`
(the OpenCLIP ViT-H/14 image tower IPAdapter users have) in `models/clip_vision`; with SD2's CLIP it
gives CLIP-T too. For MuDI's DINO variant, add Cones2 Load DINOv2 (a DINOv2 folder in
`models/dinov2/`) on the `dinov2` input.""", col=4, title="References and encoder")
    g.group("References", [dog_photos, flower_photos, dog_ref, flower_ref, encoder, ref_note])
    scores = g.node("Cones2ScoreSubjects", col=5, images=decode[0], layout=boxes[0], references=flower_ref[0],
                    clip_vision=encoder[0], clip=model[1], prompt=prompt)
    heat = g.node("PreviewImage", col=5, title="Similarity heat-map", images=scores[3])
    pick = g.node("Cones2PickBest", col=5, images=decode[0], scores=scores[0], score="separation (CLIP)", keep=2,
                  sampler_seed=0)
    save = g.node("SaveImage", col=6, title="The best 2", images=pick[0], filename_prefix="cones2/best")
    g.group("Score and pick", [scores, heat, pick, save])
    return g


@workflow
def init_latent_from_photos() -> Graph:
    """(f) MuDI's initial noise: the subjects' photos, cut out and placed in their boxes, start the sampling."""
    g = Graph("init_latent_from_photos")
    g.note(f"""\
## Start from the subjects' photos (MuDI's initial noise)

Each subject's photo is cut out by its mask, fitted into its box and VAE-encoded; sampling then
starts from noise whose mean is that composite (MuDI, Eq. 3) instead of pure noise. It helps
every subject appear, where its box is, looking like its photo. `gamma` sets how strongly
(higher: closer to the photos, less variety; 0: plain noise). Sample at full denoise.

`dog_photo.png` and `flower_photo.png` (in `workflows/images/`) are placeholder cut-outs with a
transparent background: Load Image's mask of such a PNG marks the background, hence
`mask_is = background`. For your own photo, paint the subject in Load Image's mask editor and
set `mask_is = subject` (or take the mask from a segmentation node).

Headless, from the pack folder: `{RUNNER} workflows/api/init_latent_from_photos.json
--residual dog=my_dog.safetensors --residual flower=my_flower.safetensors
--image "Photo of the dog=my_dog.png" --image "Photo of the flower=my_flower.png"`""",
           col=0, title="Read me", ui_size=(420, None))
    model = _model(g)

    dog = g.node("Cones2LoadResidual", col=1, title="Subject 1: dog", residual_name="dog.safetensors",
                 phrase="dog", occurrence=1)
    flower = g.node("Cones2LoadResidual", col=1, title="Subject 2: flower", residual_name="flower.safetensors",
                    phrase="flower", occurrence=1, bindings=dog[0])
    g.group("Subjects", [dog, flower])
    pos = g.node("Cones2ApplyResidual", col=2, title="Positive prompt", clip=model[1], bindings=flower[0],
                 text="a photo of a dog and a flower in the garden")
    neg = g.node("CLIPTextEncode", col=2, title="Negative prompt", clip=model[1], text="")
    boxes = g.node("Cones2LayoutBoxes", col=2, title="Where each subject goes", width=512, height=512,
                   boxes="dog: 16 160 240 320\nflower: 288 224 208 256")
    g.group("Prompt and layout", [pos, neg, boxes])

    dog_photo = g.node("LoadImage", col=1, title="Photo of the dog", image="dog_photo.png")
    dog_subject = g.node("Cones2SubjectPhoto", col=1, title="Dog photo -> subject 'dog'", image=dog_photo[0],
                         mask=dog_photo[1], phrase="dog", occurrence=1, mask_is="background")
    flower_photo = g.node("LoadImage", col=1, title="Photo of the flower", image="flower_photo.png")
    flower_subject = g.node("Cones2SubjectPhoto", col=1, title="Flower photo -> subject 'flower'",
                            image=flower_photo[0], mask=flower_photo[1], phrase="flower", occurrence=1,
                            mask_is="background", subject_photos=dog_subject[0])
    g.group("Subject photos", [dog_photo, dog_subject, flower_photo, flower_subject])

    latent = g.node("EmptyLatentImage", col=3, width=512, height=512, batch_size=1)
    init = g.node("Cones2LayoutInitLatent", col=3, layout=boxes[0], subject_photos=flower_subject[0], vae=model[2],
                  gamma=1.0, latent=latent[0], model=model[0])
    guided = g.node("Cones2LayoutGuidance", col=3, model=model[0], layout=boxes[0])
    sample = g.node("KSampler", col=3, model=guided[0], positive=pos[0], negative=neg[0], latent_image=init[0],
                    seed=0, steps=50, cfg=7.5, sampler_name="lms", scheduler="normal", denoise=1.0)
    g.group("Sample", [latent, init, guided, sample])

    decode = g.node("VAEDecode", col=4, samples=sample[0], vae=model[2])
    save = g.node("SaveImage", col=4, images=decode[0], filename_prefix="cones2/init_latent")
    composite = g.node("PreviewImage", col=4, title="The composite (what the mean is made of)", images=init[1])
    shift = g.node("PreviewImage", col=4, title="The mean shift, decoded", images=init[2])
    g.group("Result", [decode, save, composite, shift])
    return g
