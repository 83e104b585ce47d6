"""Layout guidance in a real ComfyUI server, driven through the HTTP API with the shipped workflows."""

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SIZE = 64


def workflow(name):
    return json.loads((WORKFLOWS / name).read_text())


def node(graph, class_type):
    (found,) = [n for n in graph.values() if n["class_type"] == class_type]
    return found


def shrink(graph, boxes, steps=2):
    """The shipped graph on the tiny checkpoint: a 64 px image, a few steps."""
    node(graph, "CheckpointLoaderSimple")["inputs"]["ckpt_name"] = "tiny-sd2.safetensors"
    node(graph, "EmptyLatentImage")["inputs"].update(width=SIZE, height=SIZE)
    node(graph, "Cones2LayoutBoxes")["inputs"].update(width=SIZE, height=SIZE, boxes=boxes)
    for n in graph.values():
        if "steps" in n["inputs"]:
            n["inputs"]["steps"] = steps
    return graph


TWO_BOXES = "mug: 4 16 24 32\ndog: 36 16 24 32"


@pytest.fixture(scope="module")
def layout_nodes(comfy_server):
    if "Cones2LayoutBoxes" not in comfy_server.get("/object_info"):
        pytest.skip("Cones2LayoutBoxes is not in this checkout (the layout-nodes branch adds it)")


@pytest.fixture(scope="module")
def subject_residuals(comfy_server):
    folder = comfy_server.base / "models" / "cones2_residuals"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for subject in ("mug", "dog", "cat"):
        if (folder / f"{subject}.safetensors").exists():  # another module's residual of that subject
            continue
        save_file({"residual": torch.randn(1, 1024, generator=g) * 0.05}, str(folder / f"{subject}.safetensors"),
                  metadata={"format": "cones2-residual", "format_version": "1", "subject": subject,
                            "base_model": "sd2"})
    return folder


def saved_image(server, outputs):
    (images,) = [o["images"] for o in outputs.values() if "images" in o]
    assert len(images) == 1
    img = Image.open(io.BytesIO(server.image_bytes(images[0])))
    assert img.size == (SIZE, SIZE)
    return img


def test_object_info_describes_the_guidance_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    guidance = info["Cones2LayoutGuidance"]
    assert guidance["display_name"] == "Cones2 Layout Guidance" and guidance["output"] == ["MODEL"]
    req = guidance["input"]["required"]
    assert list(req) == ["model", "layout", "weight", "suppression", "suppression_scope", "sigma_schedule",
                         "start_percent", "end_percent"]
    assert req["layout"][0] == "CONES2_LAYOUT"
    assert req["weight"][1]["default"] == 0.08 and req["suppression"][1]["default"] == -1e8
    assert req["suppression_scope"][1]["default"] == "outside own region (official)"
    assert req["sigma_schedule"][1]["default"] == "log(1+sigma^2)*std (official)"
    sampler = info["Cones2LayoutGuidedSampler"]
    assert sampler["output"] == ["LATENT"]
    sreq = sampler["input"]["required"]
    core = info["KSampler"]["input"]["required"]
    assert set(core) <= set(sreq)  # every KSampler input, under the same names
    assert sreq["sampler_name"][0] == core["sampler_name"][0] and sreq["scheduler"][0] == core["scheduler"][0]
    assert sreq["self_recurrence"][1]["default"] is False


def test_the_shipped_two_subject_graph_runs_headless(comfy_server, layout_nodes, subject_residuals):
    graph = shrink(workflow("cones2_two_subjects_api.json"), TWO_BOXES)
    img = saved_image(comfy_server, comfy_server.run(graph))
    assert img.mode == "RGB"


def test_the_shipped_guidance_plus_ksampler_graph_runs_headless(comfy_server, layout_nodes, subject_residuals):
    graph = shrink(workflow("cones2_two_subjects_guidance_ksampler_api.json"), TWO_BOXES)
    saved_image(comfy_server, comfy_server.run(graph))


def test_a_three_subject_graph_with_self_recurrence_runs_headless(comfy_server, layout_nodes, subject_residuals):
    graph = shrink(workflow("cones2_two_subjects_api.json"),
                   "mug: 0 24 20 32\ndog: 22 24 20 32\ncat: 44 24 20 32")
    graph["11"] = {"class_type": "Cones2LoadResidual", "inputs": {
        "residual_name": "cat.safetensors", "phrase": "cat", "occurrence": 1, "strength": 1.0, "bindings": ["3", 0]}}
    node(graph, "Cones2ApplyResidual")["inputs"].update(text="a mug, a dog and a cat on the beach",
                                                         bindings=["11", 0])
    node(graph, "Cones2LayoutGuidedSampler")["inputs"].update(self_recurrence=True, sampler_name="euler")
    saved_image(comfy_server, comfy_server.run(graph))


def execution_error(server, graph):
    entry = server.wait(server.queue(graph))
    err = server.execution_error(entry)
    assert err is not None, "the graph ran without an error"
    return err


def test_a_layout_phrase_missing_from_the_prompt_is_reported(comfy_server, layout_nodes, subject_residuals):
    graph = shrink(workflow("cones2_two_subjects_api.json"), "mug: 4 16 24 32\ncat: 36 16 24 32")
    err = execution_error(comfy_server, graph)
    assert err["node_type"] == "Cones2LayoutGuidedSampler"
    assert err["exception_message"].startswith(
        "Cones2LayoutGuidedSampler: layout subject 'cat': the phrase 'cat' is not in the prompt")


def test_a_plain_text_encode_positive_is_reported_by_the_sampler_that_runs_it(comfy_server, layout_nodes,
                                                                               subject_residuals):
    graph = shrink(workflow("cones2_two_subjects_guidance_ksampler_api.json"), TWO_BOXES)
    graph["4"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a mug and a dog"}}
    err = execution_error(comfy_server, graph)
    assert err["node_type"] == "KSampler"
    assert err["exception_message"].startswith(
        "Cones2LayoutGuidance: the positive prompt was not encoded by Cones2ApplyResidual")


def test_a_canvas_of_another_aspect_is_reported(comfy_server, layout_nodes, subject_residuals):
    graph = shrink(workflow("cones2_two_subjects_api.json"), TWO_BOXES)
    node(graph, "EmptyLatentImage")["inputs"].update(width=128, height=64)
    err = execution_error(comfy_server, graph)
    assert err["node_type"] == "Cones2LayoutGuidedSampler"
    assert "the layout canvas is 64x64" in err["exception_message"] and "128x64" in err["exception_message"]
