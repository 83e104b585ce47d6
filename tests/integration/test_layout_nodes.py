"""The layout nodes in the real ComfyUI, in process: boxes, masks, colour maps, the preview, and bad input."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

OFFICIAL_PNG = Path("/work/shared/official-example/layout_example.png")
OFFICIAL_CONFIG = OFFICIAL_PNG.with_name("guidance_config_example.json")
NODES = ("Cones2LayoutBoxes", "Cones2LayoutFromMask", "Cones2LayoutFromColorMap", "Cones2LayoutPreview")


def official_paths():
    import os

    folder = Path(os.environ.get("CONES2_OFFICIAL_EXAMPLE", OFFICIAL_PNG.parent))
    png, config = folder / OFFICIAL_PNG.name, folder / OFFICIAL_CONFIG.name
    if not png.is_file() or not config.is_file():
        pytest.skip(f"the authors' example is not at {folder} (it is not shipped in the repository)")
    return png, config


def boxes(host, text, width=512, height=512, gamma=2.5, layout=None):
    kwargs = {"layout": layout} if layout is not None else {}
    return host.run("Cones2LayoutBoxes", width=width, height=height, boxes=text, gamma=gamma, **kwargs)[0]


def test_the_nodes_are_registered_with_their_display_names(host):
    names = host.nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert {n: names[n] for n in NODES} == {
        "Cones2LayoutBoxes": "Cones2 Layout Boxes", "Cones2LayoutFromMask": "Cones2 Layout from Mask",
        "Cones2LayoutFromColorMap": "Cones2 Layout from Color Map", "Cones2LayoutPreview": "Cones2 Layout Preview"}
    for node_id in NODES[:3]:
        assert host.node(node_id).RETURN_TYPES == ("CONES2_LAYOUT",)
    assert host.node("Cones2LayoutPreview").RETURN_TYPES == ("IMAGE",)


def test_layout_boxes(host):
    layout = boxes(host, "# two dogs\ndog: 32 64 224 320\ndog #2: 288, 64, 224, 320, 2.0\n", gamma=3.0)
    assert (layout.width, layout.height) == (512, 512)
    assert [(s.phrase, s.occurrence, (s.box.x, s.box.y, s.box.width, s.box.height), s.gamma)
            for s in layout.subjects] == [("dog", 1, (32, 64, 224, 320), 3.0), ("dog", 2, (288, 64, 224, 320), 2.0)]
    masks = layout.region_masks(64, 64)
    assert masks[0, 8:48, 4:32].all() and not masks[0, :, 32:].any()


def test_layout_boxes_chain_and_an_empty_node_passes_the_layout_through(host):
    first = boxes(host, "dog: 0 0 64 64", width=768, height=512)
    second = boxes(host, "robot toy: 64 0 64 64 1.5", width=768, height=512, layout=first)
    assert [s.label for s in second.subjects] == ["dog", "robot toy"]
    assert [s.label for s in first.subjects] == ["dog"]
    empty = boxes(host, "", width=768, height=512)
    assert empty.subjects == () and (empty.width, empty.height) == (768, 512)
    assert boxes(host, "  \n# nothing\n", width=768, height=512, layout=second).subjects == second.subjects


@pytest.mark.parametrize("text,kwargs,message", [
    ("dog 32 64 224 320", {}, "Cones2LayoutBoxes: line 1 ('dog 32 64 224 320') has no ':'; write <phrase> "
                              "[#<occurrence>]: <x> <y> <width> <height> [<gamma>], e.g. 'dog: 32 64 224 320'"),
    ("cat: 0 0 8 8\ndog: 448 0 128 64", {}, "Cones2LayoutBoxes: line 2 ('dog'): the box reaches outside the 512x512 "
                                            "canvas: its right edge x+width=576 is past the canvas width 512. Move "
                                            "or shrink it, or enlarge the canvas"),
    ("dog: 0 0 0 64", {}, "Cones2LayoutBoxes: line 1 ('dog'): the box is 0x64, zero area"),
    ("dog: 0 0 8 8\ndog: 8 8 8 8", {}, "Cones2LayoutBoxes: line 2 ('dog'): this phrase occurrence already has a box, "
                                       "on line 1"),
    ("dog: 0 0 8 8", {"width": 768}, None),
])
def test_layout_boxes_errors_name_the_node_line_and_fix(host, text, kwargs, message):
    if message is None:  # a chained layout on another canvas
        base = boxes(host, "cat: 0 0 8 8")
        with pytest.raises(ValueError, match=r"^Cones2LayoutBoxes: the chained layout's canvas is 512x512 but this "
                                             r"one is 768x512; set width and height to 512x512"):
            boxes(host, text, layout=base, **kwargs)
        return
    with pytest.raises(ValueError) as err:
        boxes(host, text, **kwargs)
    assert str(err.value).startswith(message), str(err.value)


def test_layout_from_a_painted_mask_loaded_by_core_load_image(host):
    # An RGBA image whose transparent part is the region: LoadImage's MASK is 1 - alpha.
    rgba = np.zeros((96, 128, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[24:72, 16:64, 3] = 0
    input_dir = Path(host.folder_paths.get_input_directory())
    Image.fromarray(rgba, "RGBA").save(input_dir / "cones2_region.png")
    _, mask = host.run("LoadImage", image="cones2_region.png")
    assert mask.shape == (1, 96, 128)
    layout = host.run("Cones2LayoutFromMask", mask=mask, phrase=" robot toy ", occurrence=2, gamma=1.5)[0]
    assert (layout.width, layout.height) == (128, 96)
    (subject,) = layout.subjects
    assert (subject.phrase, subject.occurrence, subject.gamma, subject.box) == ("robot toy", 2, 1.5, None)
    expected = torch.zeros(96, 128)
    expected[24:72, 16:64] = 1
    assert torch.equal(subject.mask > 0.5, expected > 0.5)


def test_layout_from_mask_chains_and_rescales_a_same_aspect_mask(host):
    base = boxes(host, "dog: 0 0 256 512")
    mask = torch.zeros(1, 768, 768)
    mask[0, :, 384:] = 1  # the right half, at 768
    layout = host.run("Cones2LayoutFromMask", mask=mask, phrase="cat", occurrence=1, gamma=2.5, layout=base)[0]
    assert [s.label for s in layout.subjects] == ["dog", "cat"]
    cat = layout.subjects[1].mask
    assert cat.shape == (512, 512) and bool((cat[:, 256:] > 0.5).all()) and not bool((cat[:, :256] > 0.5).any())
    two_d = host.run("Cones2LayoutFromMask", mask=mask[0, :512, :512], phrase="cat", occurrence=1, gamma=2.5)[0]
    assert (two_d.width, two_d.height) == (512, 512)


@pytest.mark.parametrize("mask,chain,message", [
    (torch.zeros(1, 64, 64), False, "Cones2LayoutFromMask: the mask is empty (no value above 0.5); paint the region "
                                    "where 'dog' goes (LoadImage gives an empty 64x64 mask"),
    (torch.ones(2, 64, 64), False, "Cones2LayoutFromMask: the mask input holds a batch of 2 masks; give one mask"),
    (torch.ones(1, 480, 640), True, "Cones2LayoutFromMask: the mask is 640x480 but the canvas is 512x512, a different "
                                    "aspect ratio (1.333 vs 1.000); give it the canvas's shape"),
    (torch.ones(1, 4, 4), False, "Cones2LayoutFromMask: the canvas is 4x4; it must be at least 8x8 pixels"),
])
def test_layout_from_mask_errors(host, mask, chain, message):
    extra = {"layout": boxes(host, "cat: 0 0 8 8")} if chain else {}
    with pytest.raises(ValueError) as err:
        host.run("Cones2LayoutFromMask", mask=mask, phrase="dog", occurrence=1, gamma=2.5, **extra)
    assert str(err.value).startswith(message), str(err.value)


def test_layout_from_mask_refuses_a_second_region_for_one_occurrence(host):
    base = boxes(host, "dog: 0 0 8 8")
    with pytest.raises(ValueError, match=r"^Cones2LayoutFromMask: subject 'Dog' has two regions; .*'Dog #2'"):
        host.run("Cones2LayoutFromMask", mask=torch.ones(1, 512, 512), phrase="Dog", occurrence=1, gamma=2.5,
                 layout=base)


def test_layout_from_the_authors_colour_map_through_load_image(host):
    png, config = official_paths()
    input_dir = Path(host.folder_paths.get_input_directory())
    shutil.copyfile(png, input_dir / "official_layout.png")  # the host's temporary input folder, not the repo
    image, _ = host.run("LoadImage", image="official_layout.png")
    layout = host.run("Cones2LayoutFromColorMap", image=image, colors=config.read_text(), gamma=2.5,
                      tolerance=24.0, background="255,255,255")[0]
    assert (layout.width, layout.height) == (768, 768)
    assert [(s.phrase, s.gamma) for s in layout.subjects] == [("mug", 2.5), ("dog", 2.5)]
    rgb = np.array(Image.open(png).convert("RGB"))
    for subject, color in zip(layout.subjects, ((255, 192, 0), (255, 0, 0)), strict=True):
        exact = torch.from_numpy((rgb == color).all(-1))
        inside = subject.mask > 0.5
        assert bool(inside[exact].all()) and int(inside.sum()) > int(exact.sum()) + 300  # edges recovered
    lines = host.run("Cones2LayoutFromColorMap", image=image, colors="255,192,0: mug 2.5\n255,0,0: dog #2 3",
                     gamma=2.5, tolerance=0.0, background="#ffffff")[0]
    assert [(s.label, s.gamma) for s in lines.subjects] == [("mug", 2.5), ("dog #2", 3.0)]
    exact = torch.from_numpy((rgb == (255, 0, 0)).all(-1))
    assert torch.equal(lines.subjects[1].mask > 0.5, exact)  # tolerance 0 = the authors' exact match


@pytest.mark.parametrize("colors,background,message", [
    ("255,192,0: mug", "255,255,255", "Cones2LayoutFromColorMap: 25.0% of the image is in colours the mapping does "
                                      "not list: 255,0,0 (25.0%)"),
    ("255,192,0: mug\n255,0,0: dog\n0,0,255: cat", "255,255,255", "Cones2LayoutFromColorMap: the colour 0,0,255 "
                                                                  "('cat') is not in the image"),
    ("255,192,0 mug", "255,255,255", "Cones2LayoutFromColorMap: line 1 ('255,192,0 mug') has no ':'"),
    ("", "255,255,255", "Cones2LayoutFromColorMap: the colour mapping lists no colours"),
    ("255,192,0: mug\n255,0,0: dog", "white", "Cones2LayoutFromColorMap: background colour 1: 'white' is not a "
                                              "colour"),
])
def test_layout_from_colour_map_errors(host, colors, background, message):
    image = torch.ones(1, 40, 40, 3)
    image[0, :20, :20] = torch.tensor([1.0, 192 / 255, 0.0])
    image[0, 20:, 20:] = torch.tensor([1.0, 0.0, 0.0])
    with pytest.raises(ValueError) as err:
        host.run("Cones2LayoutFromColorMap", image=image, colors=colors, gamma=2.5, tolerance=24.0,
                 background=background)
    assert str(err.value).startswith(message), str(err.value)


def test_preview_draws_each_subject_in_its_colour(host):
    from cones2.guidance.layout_preview import PALETTE

    layout = boxes(host, "dog: 32 64 224 320\ndog #2: 288 64 192 320 2.0")
    image = torch.zeros(2, 256, 256, 3)
    (out,) = host.run("Cones2LayoutPreview", layout=layout, opacity=0.5, image=image)
    assert out.shape == (2, 256, 256, 3) and out.dtype == torch.float32
    for index, (cx, cy) in enumerate([(72, 112), (192, 112)]):  # box centres at half size
        assert torch.allclose(out[:, cy, cx], torch.tensor(PALETTE[index]) / 255 * 0.5, atol=1e-6)
    assert torch.equal(out[:, 240:, :], image[:, 240:, :])
    (blank,) = host.run("Cones2LayoutPreview", layout=layout, opacity=0.5)
    assert blank.shape == (1, 512, 512, 3)
    assert not torch.equal(image, out)  # the input image was not drawn on in place
    assert image.abs().sum() == 0
