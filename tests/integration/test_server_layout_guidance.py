"""Layout guidance in a real ComfyUI server, driven through the HTTP API with the shipped workflows."""

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
SIZE = 64


def workflow(name):
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def node(graph, class_type):
    (found,) = [n for n in graph.values() if n["class_type"] == class_type]
    return found


def node_id(graph, class_type):
    (found,) = [k for k, n in graph.items() if n["class_type"] == class_type]
    return found


def shrink(graph, boxes, steps=2):
    """A shipped graph on the tiny checkpoint: a 64 px image, a few steps."""
    node(graph, "CheckpointLoaderSimple")["inputs"]["ckpt_name"] = "tiny-sd2.safetensors"
    node(graph, "EmptyLatentImage")["inputs"].update(width=SIZE, height=SIZE)
    node(graph, "Cones2LayoutBoxes")["inputs"].update(width=SIZE, height=SIZE, boxes=boxes)
    for n in graph.values():
        if "steps" in n["inputs"]:
            n["inputs"]["steps"] = steps
    return graph


TWO_BOXES = "dog: 4 16 24 32\nflower: 36 16 24 32"  # workflows/api/two_subjects_boxes.json (Guidance + KSampler)
THREE_BOXES = "dog: 0 24 20 32\ndog #2: 22 24 20 32\nbarn: 44 24 20 32"  # three_subjects_same_class (the sampler)


@pytest.fixture(scope="module")
def subject_residuals(comfy_server):
    folder = comfy_server.base / "models" / "cones2_residuals"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for name, subject in (("dog", "dog"), ("flower", "flower"), ("dog1", "dog"), ("dog2", "dog"), ("barn", "barn")):
        if (folder / f"{name}.safetensors").exists():  # another module's residual of that name
            continue
        save_file({"residual": torch.randn(1, 1024, generator=g) * 0.05}, str(folder / f"{name}.safetensors"),
                  metadata={"format": "cones2-residual", "format_version": "1", "subject": subject,
                            "base_model": "sd2"})
    return folder


def saved_image(server, graph, outputs):
    images = outputs[node_id(graph, "SaveImage")]["images"]
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


def test_a_three_subject_graph_with_self_recurrence_runs_headless(comfy_server, subject_residuals):
    graph = shrink(workflow("three_subjects_same_class"), THREE_BOXES)
    node(graph, "Cones2LayoutGuidedSampler")["inputs"].update(self_recurrence=True, sampler_name="euler")
    assert saved_image(comfy_server, graph, comfy_server.run(graph)).mode == "RGB"


def execution_error(server, graph):
    entry = server.wait(server.queue(graph))
    err = server.execution_error(entry)
    assert err is not None, "the graph ran without an error"
    return err


def test_a_layout_phrase_missing_from_the_prompt_is_reported(comfy_server, subject_residuals):
    graph = shrink(workflow("three_subjects_same_class"), "dog: 4 16 24 32\ncat: 36 16 24 32")
    err = execution_error(comfy_server, graph)
    assert err["node_type"] == "Cones2LayoutGuidedSampler"
    assert err["exception_message"].startswith(
        "Cones2LayoutGuidedSampler: layout subject 'cat': the phrase 'cat' is not in the prompt")


def test_a_plain_text_encode_positive_is_reported_by_the_sampler_that_runs_it(comfy_server, subject_residuals):
    graph = shrink(workflow("two_subjects_boxes"), TWO_BOXES)
    clip = node(graph, "Cones2ApplyResidual")["inputs"]["clip"]
    graph[node_id(graph, "Cones2ApplyResidual")] = {"class_type": "CLIPTextEncode",
                                                    "inputs": {"clip": clip, "text": "a dog and a flower"}}
    err = execution_error(comfy_server, graph)
    assert err["node_type"] == "KSampler"
    assert err["exception_message"].startswith(
        "Cones2LayoutGuidance: the positive prompt was not encoded by Cones2ApplyResidual")


def test_a_canvas_of_another_aspect_is_reported(comfy_server, subject_residuals):
    graph = shrink(workflow("three_subjects_same_class"), THREE_BOXES)
    node(graph, "EmptyLatentImage")["inputs"].update(width=128, height=64)
    err = execution_error(comfy_server, graph)
    assert err["node_type"] == "Cones2LayoutGuidedSampler"
    assert "the layout canvas is 64x64" in err["exception_message"] and "128x64" in err["exception_message"]
