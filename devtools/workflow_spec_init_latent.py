"""The shipped workflow ``init_latent_from_photos`` (MuDI's initial noise) and its two placeholder photos.

Self-contained: ``init_latent_from_photos()`` builds the graph with ``workflow_builder.Graph``;
``PHOTOS`` maps each placeholder photo's file name (in workflows/images/) to its PNG bytes maker.
Standard library only.
"""

from __future__ import annotations

import struct
import zlib

from .workflow_builder import Graph

CHECKPOINT = "v2-1_512-ema-pruned.safetensors"
RUNNER = "python scripts/run_workflow.py"


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
    model = g.node("CheckpointLoaderSimple", col=0, title="Load SD2.1 checkpoint", ckpt_name=CHECKPOINT)
    model_note = g.note(f"""\
**Checkpoint**: an SD2.x checkpoint in `models/checkpoints`. `{CHECKPOINT}` is a placeholder name:
pick yours in the list. SD2.1-base (512 px) and SD2.1 768 (v-prediction) both work.""", col=0, title="Model")
    g.group("Model", [model, model_note])

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


# --- the placeholder photos: flat shapes on a transparent background ------------------------------

def _dog(x: int, y: int):
    """A brown 'dog': body, head, ear, legs (ellipses and rectangles) on 320x256."""
    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
    if ellipse(214, 92, 20, 34) and x > 200:
        return (90, 55, 30)  # ear
    if ellipse(236, 100, 46, 42):
        return (150, 100, 55)  # head
    if ellipse(150, 150, 92, 50) or any(lx <= x < lx + 22 and 170 <= y < 236 for lx in (84, 118, 176, 206)):
        return (175, 120, 70)  # body and legs
    return None


def _flower(x: int, y: int):
    """A red 'flower' with a yellow heart on a green stem, on 192x320."""
    r2 = (x - 96) ** 2 + (y - 90) ** 2
    if r2 <= 22 ** 2:
        return (240, 200, 40)
    if r2 <= 70 ** 2:
        return (210, 40, 50)
    if 88 <= x < 104 and 150 <= y < 310 or ((x - 124) / 26) ** 2 + ((y - 220) / 12) ** 2 <= 1:
        return (50, 140, 60)
    return None


def rgba_png(width: int, height: int, paint) -> bytes:
    """An RGBA PNG: ``paint(x, y)`` gives a colour (opaque) or None (transparent); zlib alone."""
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            c = paint(x, y)
            row += bytes((*c, 255)) if c else b"\x00\x00\x00\x00"
        rows.append(b"\x00" + bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


PHOTOS = {
    "dog_photo.png": lambda: rgba_png(320, 256, _dog),
    "flower_photo.png": lambda: rgba_png(192, 320, _flower),
}
