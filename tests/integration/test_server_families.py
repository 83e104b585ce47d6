"""SD1.5 and SDXL (Segmind Vega) in a real ComfyUI server: the shipped family workflows, init latent,
long weighted prompts, and the cross-family refusals, through the HTTP API (64 px, 1-2 steps)."""

import io
import json
from pathlib import Path

import pytest
import torch
from cones2.devtools.tiny_sd15 import tiny_sd15_checkpoint
from cones2.devtools.tiny_sdxl import tiny_sdxl_checkpoint
from cones2.training.model_families import SD1, SD2, SDXL
from PIL import Image
from safetensors.torch import save_file

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SIZE = 64
FAMILY = {"sd1": SD1, "sdxl": SDXL}
TINY = {"sd1": "tiny-sd15.safetensors", "sdxl": "tiny-sdxl.safetensors"}
WORKFLOW = {"sd1": "two_subjects_boxes_sd15", "sdxl": "two_subjects_boxes_sdxl"}
BOXES = "dog: 4 16 24 32\nflower: 36 16 24 32"
LONG = " ".join(["a very detailed scene with many objects"] * 12) + ", a (dog:1.3) and a (flower:0.8) in the garden"


@pytest.fixture(scope="module")
def server():
    from cones2_test_support.server import ComfyServer

    srv = ComfyServer(models={"checkpoints": {TINY["sd1"]: tiny_sd15_checkpoint(), TINY["sdxl"]: tiny_sdxl_checkpoint()}})
    folder = srv.base / "models" / "cones2_residuals"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for family in (SD1, SD2, SDXL):
        for subject in ("dog", "flower"):
            save_file({"residual": torch.randn(1, family.width, generator=g) * 0.05},
                      str(folder / f"{family.key}_{subject}.safetensors"),
                      metadata={"format": "cones2-residual", "format_version": "1", "subject": subject,
                                "base_model": family.key})
    for image in (WORKFLOWS / "images").glob("*_photo.png"):
        (srv.base / "input" / image.name).write_bytes(image.read_bytes())
    srv.start()
    yield srv
    srv.stop()


def find(graph, class_type):
    return [k for k, n in graph.items() if n["class_type"] == class_type]


def family_graph(name, family, residuals=None, text=None, steps=1):
    """A shipped workflow on the family's tiny checkpoint: 64 px, ``steps`` steps, the family's residuals."""
    graph = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for n in graph.values():
        inputs = n["inputs"]
        if "ckpt_name" in inputs:
            inputs["ckpt_name"] = TINY[family]
        if n["class_type"] == "EmptyLatentImage":
            inputs.update(width=SIZE, height=SIZE)
        if n["class_type"] == "Cones2LayoutBoxes":
            inputs.update(width=SIZE, height=SIZE, boxes=BOXES)
        if n["class_type"] == "Cones2LoadResidual":
            inputs["residual_name"] = f"{residuals or family}_{inputs['phrase']}.safetensors"
        if n["class_type"] == "Cones2ApplyResidual" and text:
            inputs["text"] = text
        if "steps" in inputs:
            inputs["steps"] = steps
    return graph


def saved(server, graph, outputs):
    (image,) = outputs[find(graph, "SaveImage")[0]]["images"]
    return Image.open(io.BytesIO(server.image_bytes(image)))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_the_family_workflow_runs_with_a_long_weighted_prompt(server, family):
    shipped = json.loads((WORKFLOWS / "api" / f"{WORKFLOW[family]}.json").read_text())
    (loader,) = find(shipped, "CheckpointLoaderSimple")
    assert shipped[loader]["inputs"]["ckpt_name"] == FAMILY[family].checkpoint  # the family's usual file name
    graph = family_graph(WORKFLOW[family], family, text=LONG)
    img = saved(server, graph, server.run(graph))
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_init_latent_from_photos_runs_on_the_family(server, family):
    graph = family_graph("init_latent_from_photos", family)
    (init,) = find(graph, "Cones2LayoutInitLatent")
    assert graph[init]["inputs"]["model"][0] == find(graph, "CheckpointLoaderSimple")[0]  # its latent scale is read
    assert saved(server, graph, server.run(graph)).size == (SIZE, SIZE)


def test_self_recurrence_runs_on_sdxl(server):
    graph = family_graph(WORKFLOW["sdxl"], "sdxl", steps=2)
    (guidance,) = find(graph, "Cones2LayoutGuidance")
    (ksampler,) = find(graph, "KSampler")
    k = graph.pop(ksampler)["inputs"]
    g = graph.pop(guidance)["inputs"]
    graph[ksampler] = {"class_type": "Cones2LayoutGuidedSampler", "inputs": {
        **{key: v for key, v in g.items() if key != "model"}, **k, "model": g["model"], "self_recurrence": True,
        "sampler_name": "euler"}}
    assert saved(server, graph, server.run(graph)).size == (SIZE, SIZE)


@pytest.mark.parametrize(("family", "residuals"), [("sd1", "sd2"), ("sd1", "sdxl"), ("sdxl", "sd1"), ("sdxl", "sd2")])
def test_a_residual_of_another_family_is_refused_naming_both(server, family, residuals):
    graph = family_graph(WORKFLOW[family], family, residuals=residuals)
    entry = server.wait(server.queue(graph))
    err = server.execution_error(entry)
    assert err is not None and err["node_type"] == "Cones2ApplyResidual"
    msg = err["exception_message"]
    theirs, ours = FAMILY.get(residuals, SD2), FAMILY[family]
    assert f"residual '{residuals}_dog.safetensors' is an {theirs.label} residual ({theirs.width} wide" in msg
    assert f"the model is {ours.label} ({ours.width} wide" in msg and "train this subject again" in msg
