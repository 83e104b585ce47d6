"""The layout nodes in a real ComfyUI server, driven through the HTTP API as a user's script would."""

import io

import numpy as np
import pytest
from PIL import Image

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]  # guidance.layout_preview.PALETTE[:3]


def test_object_info_lists_the_layout_nodes_and_their_inputs(comfy_server):
    info = comfy_server.get("/object_info")
    boxes = info["Cones2LayoutBoxes"]
    assert boxes["display_name"] == "Cones2 Layout Boxes" and boxes["category"] == "cones2/layout"
    assert list(boxes["input"]["required"]) == ["width", "height", "boxes", "gamma"]
    assert boxes["input"]["required"]["width"] == ["INT", {**boxes["input"]["required"]["width"][1],
                                                           "default": 512, "min": 64, "step": 8}]
    assert boxes["input"]["required"]["boxes"][0] == "STRING"
    assert boxes["input"]["required"]["boxes"][1]["multiline"] is True
    assert boxes["input"]["required"]["gamma"][1]["default"] == 2.5
    assert boxes["input"]["optional"]["layout"][0] == "CONES2_LAYOUT"
    assert boxes["output"] == ["CONES2_LAYOUT"] and boxes["output_name"] == ["layout"]

    mask = info["Cones2LayoutFromMask"]
    assert list(mask["input"]["required"]) == ["mask", "phrase", "occurrence", "gamma"]
    assert mask["input"]["required"]["mask"][0] == "MASK" and mask["output"] == ["CONES2_LAYOUT"]

    cmap = info["Cones2LayoutFromColorMap"]
    assert list(cmap["input"]["required"]) == ["image", "colors", "gamma", "tolerance", "background"]
    assert cmap["input"]["required"]["image"][0] == "IMAGE" and cmap["output"] == ["CONES2_LAYOUT"]
    assert cmap["input"]["required"]["background"][1]["default"] == "255,255,255"

    preview = info["Cones2LayoutPreview"]
    assert list(preview["input"]["required"]) == ["layout", "opacity"]
    assert preview["input"]["optional"]["image"][0] == "IMAGE" and preview["output"] == ["IMAGE"]


def test_headless_layout_from_colour_map_boxes_and_mask_previewed_and_saved(comfy_server):
    # Our own colour map (the authors' files are not shipped): a mug region with anti-aliased edges.
    cmap = np.full((256, 384, 3), 255, dtype=np.uint8)
    cmap[128:224, 32:160] = (255, 192, 0)
    cmap[127, 32:160] = (255, 224, 128)
    Image.fromarray(cmap).save(comfy_server.base / "input" / "cones2_colormap.png")
    rgba = np.zeros((256, 384, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[16:96, 256:368, 3] = 0  # the painted region (LoadImage's mask = 1 - alpha)
    Image.fromarray(rgba, "RGBA").save(comfy_server.base / "input" / "cones2_mask.png")

    graph = {
        "map": {"class_type": "LoadImage", "inputs": {"image": "cones2_colormap.png"}},
        "paint": {"class_type": "LoadImage", "inputs": {"image": "cones2_mask.png"}},
        "colors": {"class_type": "Cones2LayoutFromColorMap", "inputs": {
            "image": ["map", 0], "colors": "255,192,0: mug 2.5", "gamma": 2.5, "tolerance": 24.0,
            "background": "255,255,255"}},
        "boxes": {"class_type": "Cones2LayoutBoxes", "inputs": {
            "width": 384, "height": 256, "boxes": "dog: 192 128 160 96 2.0", "gamma": 2.5, "layout": ["colors", 0]}},
        "mask": {"class_type": "Cones2LayoutFromMask", "inputs": {
            "mask": ["paint", 1], "phrase": "sun", "occurrence": 1, "gamma": 2.5, "layout": ["boxes", 0]}},
        "preview": {"class_type": "Cones2LayoutPreview", "inputs": {"layout": ["mask", 0], "opacity": 0.5}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["preview", 0], "filename_prefix": "cones2_layout"}},
    }
    outputs = comfy_server.run(graph)
    (saved,) = outputs["save"]["images"]
    png = np.array(Image.open(io.BytesIO(comfy_server.image_bytes(saved))).convert("RGB")).astype(int)
    assert png.shape == (256, 384, 3)
    grey = 0.5 * 255
    for index, (x, y) in enumerate([(96, 200), (272, 200), (312, 70)]):  # mug, dog, sun: inside, clear of labels
        expected = np.array(PALETTE[index]) * 0.5 + grey * 0.5
        assert np.abs(png[y, x] - expected).max() <= 1, (index, png[y, x], expected)
    assert np.abs(png[5, 5] - grey).max() <= 1  # outside every region


def test_a_bad_box_fails_the_prompt_with_the_nodes_message(comfy_server):
    graph = {
        "boxes": {"class_type": "Cones2LayoutBoxes", "inputs": {
            "width": 512, "height": 512, "boxes": "cat: 0 0 64 64\ndog: 448 0 128 64", "gamma": 2.5}},
        "preview": {"class_type": "Cones2LayoutPreview", "inputs": {"layout": ["boxes", 0], "opacity": 0.4}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["preview", 0], "filename_prefix": "bad"}},
    }
    entry = comfy_server.wait(comfy_server.queue(graph))
    err = comfy_server.execution_error(entry)
    assert err is not None and err["node_type"] == "Cones2LayoutBoxes"
    assert err["exception_message"].startswith(
        "Cones2LayoutBoxes: line 2 ('dog'): the box reaches outside the 512x512 canvas: its right edge "
        "x+width=576 is past the canvas width 512")


@pytest.mark.parametrize("wrong", [{"boxes": 3}, {"width": 4}])
def test_invalid_widget_values_are_refused_at_submission(comfy_server, wrong):
    graph = {"boxes": {"class_type": "Cones2LayoutBoxes", "inputs": {
                 "width": 512, "height": 512, "boxes": "dog: 0 0 8 8", "gamma": 2.5, **wrong}},
             "preview": {"class_type": "Cones2LayoutPreview", "inputs": {"layout": ["boxes", 0], "opacity": 0.4}},
             "save": {"class_type": "SaveImage", "inputs": {"images": ["preview", 0], "filename_prefix": "bad"}}}
    status, body = comfy_server.post("/prompt", {"prompt": graph, "client_id": "cones2-tests"})
    if "width" in wrong:
        assert status == 400 and "boxes" in body["node_errors"]
    else:  # a number for a STRING widget is converted by ComfyUI, and then is not a box line
        entry = comfy_server.wait(body["prompt_id"])
        assert comfy_server.execution_error(entry)["exception_message"].startswith(
            "Cones2LayoutBoxes: line 1 ('3') has no ':'")
