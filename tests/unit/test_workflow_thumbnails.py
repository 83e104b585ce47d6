"""The template thumbnails (workflows/<name>.jpg) and the integer JPEG encoder that writes them."""

import io

import pytest
from cones2.devtools import jpeg_file, make_workflows, workflow_specs, workflow_thumbnails
from cones2.guidance.layout_preview import PALETTE
from cones2_test_support.scripts import WORKFLOWS
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

UI_NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixel_error(a: Image.Image, b: Image.Image) -> tuple[int, float]:
    """(max, mean) absolute difference over every channel of two RGB images of one size."""
    diffs = [abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True)]
    return max(diffs), sum(diffs) / len(diffs)


@pytest.mark.parametrize("name", UI_NAMES)
def test_every_ui_workflow_has_a_jpeg_thumbnail_beside_it(name):
    # Frontends 1.27 and 1.58 ask for <template>.jpg (mediaSubtype "jpg") beside the workflow.
    image = decode((WORKFLOWS / f"{name}.jpg").read_bytes())
    assert image.format == "JPEG" and image.mode == "RGB"
    assert image.size == (workflow_thumbnails.WIDTH, workflow_thumbnails.WIDTH)  # every shipped layout is square


def test_the_thumbnail_palette_is_the_layout_previews():
    assert workflow_thumbnails.preview_palette() == PALETTE


def test_the_first_workflows_thumbnail_shows_its_boxes_in_the_preview_colours():
    graph = workflow_specs.SPECS["first_guided_image"].build()
    image = decode(workflow_thumbnails.thumbnail(graph, make_workflows.IMAGES)).convert("RGB")
    boxes = {"dog": (16, 128, 240, 352), "cat": (272, 160, 224, 320)}  # the spec's box lines, on 512x512
    grey = workflow_thumbnails.GREY
    for index, (x, y, w, h) in enumerate(boxes.values()):
        centre = image.getpixel(((x + w // 2) // 2, (y + h // 2) // 2))
        expected = [(3 * g + 2 * c) / 5 for g, c in zip(grey, PALETTE[index], strict=True)]  # opacity 0.4
        assert all(abs(a - b) <= 3 for a, b in zip(centre, expected, strict=True)), (centre, expected)
    assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel((250, 4)), grey, strict=True))  # outside: canvas


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_the_encoder_is_as_faithful_as_libjpeg_at_the_same_quality(width, height, seed):
    import random
    rnd = random.Random(seed)
    pixels = [(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) if rnd.random() < 0.3 else (200, 60, 30)
              for _ in range(width * height)]
    source = Image.new("RGB", (width, height))
    source.frombytes(bytes(v for p in pixels for v in p))
    ours = decode(jpeg_file.jpeg_file(width, height, pixels, quality=90))
    assert ours.size == (width, height)
    buffer = io.BytesIO()
    source.save(buffer, "JPEG", quality=90, subsampling=0)
    theirs = decode(buffer.getvalue())
    # same tables and transform; libjpeg's fixed-point DCT rounds differently, so errors agree only roughly
    (ours_max, ours_mean), (their_max, their_mean) = pixel_error(ours, source), pixel_error(theirs, source)
    assert ours_mean <= 1.25 * their_mean + 0.5 and ours_max <= their_max + 16


def test_flat_colours_come_back_exactly():
    for colour in [(0, 0, 0), (255, 255, 255), (128, 128, 128), (31, 119, 180)]:
        image = decode(jpeg_file.jpeg_file(24, 16, [colour] * 24 * 16)).convert("RGB")
        assert pixel_error(image, Image.new("RGB", (24, 16), colour))[0] <= 1
