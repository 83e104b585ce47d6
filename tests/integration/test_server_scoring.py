"""The shipped score-and-pick workflow on a real ComfyUI server (main.py --cpu): generate, score, keep 2.

Placeholders: the tiny SD2 checkpoint, random residuals, two photo folders under input/, and a
random-weight ViT-L/14 image tower (ComfyUI's config) under the ViT-H/14 file name. ViT-L is
another CLIP than SD2's text encoder (768 vs 1024 wide), so CLIP-T comes back explained, not faked.
"""

import copy
import json

import pytest
import torch
from cones2.devtools.tiny_encoders import clip_vision_checkpoint
from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint
from cones2_test_support.scripts import WORKFLOWS
from PIL import Image
from safetensors.torch import save_file

NAME = "score_and_pick_best"


@pytest.fixture(scope="module")
def server(comfy_server):
    api = json.loads((WORKFLOWS / "api" / f"{NAME}.json").read_text())
    models = comfy_server.base / "models"
    for node in api.values():
        inputs, cls = node["inputs"], node["class_type"]
        if cls == "CheckpointLoaderSimple":
            path = models / "checkpoints" / inputs["ckpt_name"]
            target = tiny_sd2_checkpoint()
        elif cls == "CLIPVisionLoader":
            path = models / "clip_vision" / inputs["clip_name"]
            target = clip_vision_checkpoint()
        elif cls == "Cones2LoadResidual":
            path = models / "cones2_residuals" / inputs["residual_name"]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"residual": torch.randn(1, 1024) * 0.05}, str(path),
                          metadata={"format": "cones2-residual", "format_version": "1",
                                    "subject": inputs["phrase"], "base_model": "sd2"})
            continue
        elif cls == "LoadImageSetFromFolderNode":
            folder = comfy_server.base / "input" / inputs["folder"]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (48, 64), (40 * i + 100, 30, 200 - 60 * i)).save(folder / f"photo_{i}.png")
            continue
        else:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.symlink_to(target)
    return comfy_server, api


def test_the_workflow_generates_scores_and_keeps_the_best_two(server):
    server, api = server
    prompt = copy.deepcopy(api)
    by_class = {node["class_type"]: node_id for node_id, node in prompt.items()}
    prompt[by_class["EmptyLatentImage"]]["inputs"].update(width=64, height=64, batch_size=4)
    prompt[by_class["KSampler"]]["inputs"].update(steps=2, seed=7)
    prompt[by_class["Cones2PickBest"]]["inputs"]["sampler_seed"] = 7
    outputs = server.run(prompt, timeout=900)

    scores = outputs[by_class["Cones2ScoreSubjects"]]["cones2_scores"][0]
    assert scores["subjects"] == ["dog", "flower"] and scores["reference_counts"] == [2, 2]
    assert len(scores["images"]) == 4 and scores["encoders"] == ["clip"]
    for image in scores["images"]:
        s = image["clip"]
        assert len(s["similarity"]) == 2 and all(-1 <= v <= 1 for row in s["similarity"] for v in row)
        assert s["mixing"] == pytest.approx([s["similarity"][0][0] - s["similarity"][0][1],
                                             s["similarity"][1][1] - s["similarity"][1][0]])
        assert image["clip_t"] is None
    assert "CLIP-T not computed: the text embedding is 1024 wide but the image encoder's is 768" in scores["notes"][0]
    table = outputs[by_class["Cones2ScoreSubjects"]]["text"][0]
    assert table.splitlines()[0] == "subjects: dog (2 photos), flower (2 photos)"

    picks = outputs[by_class["Cones2PickBest"]]["cones2_picks"][0]
    separation = [sum(image["clip"]["mixing"]) for image in scores["images"]]
    best = sorted(range(4), key=lambda i: (-separation[i], i))[:2]
    assert [p["batch_index"] for p in picks["picks"]] == best
    assert [p["seed"] for p in picks["picks"]] == [7, 7]
    assert [p["score"] for p in picks["picks"]] == pytest.approx([separation[i] for i in best])
    saved = outputs[by_class["SaveImage"]]["images"]
    assert len(saved) == 2
    heat = outputs[by_class["PreviewImage"]]["images"]
    assert len(heat) == 4  # one heat-map per generated image


def test_a_missing_dinov2_folder_is_refused_with_where_to_put_it(server):
    server, _ = server
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "Cones2LayoutBoxes", "inputs": {"width": 64, "height": 64, "boxes": "dog: 0 0 32 32",
                                                             "gamma": 2.5}},
        "3": {"class_type": "Cones2SubjectReference", "inputs": {"images": ["1", 0], "phrase": "dog",
                                                                  "occurrence": 1}},
        "4": {"class_type": "Cones2LoadDINOv2", "inputs": {"model_name": "dinov2-base"}},
        "5": {"class_type": "Cones2ScoreSubjects", "inputs": {"images": ["1", 0], "layout": ["2", 0],
                                                               "references": ["3", 0], "fit": "pad",
                                                               "dinov2": ["4", 0]}},
    }
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400
    errors = body["node_errors"]["4"]["errors"]
    assert "no DINOv2 folder 'dinov2-base'" in errors[0]["details"] and "models/dinov2/<name>/" in errors[0]["details"]


def test_the_headless_runner_prints_the_score_table_and_saves_the_reports(server, tmp_path):
    import subprocess
    import sys

    from cones2_test_support.scripts import SCRIPTS

    server, api = server
    by_class = {node["class_type"]: node_id for node_id, node in api.items()}
    latent, sampler = by_class["EmptyLatentImage"], by_class["KSampler"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "run_workflow.py"), str(WORKFLOWS / "api" / f"{NAME}.json"),
         "--server", server.url, "--seed", "5", "-o", str(tmp_path),
         "--set", f"{latent}.width=64", "--set", f"{latent}.height=64", "--set", f"{latent}.batch_size=3",
         "--set", f"{sampler}.steps=2"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "subjects: dog (2 photos), flower (2 photos)" in proc.stderr  # the table, in full
    picks = json.loads((tmp_path / f"node{by_class['Cones2PickBest']}_picks.json").read_text())
    assert [p["seed"] for p in picks["picks"]] == [5, 5]  # --seed reached Pick Best's sampler_seed too
    scores = json.loads((tmp_path / f"node{by_class['Cones2ScoreSubjects']}_scores.json").read_text())
    assert len(scores["images"]) == 3 and scores["subjects"] == ["dog", "flower"]
    saved = [line for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert len(saved) == 2 + 3  # the best 2, and one heat-map per image
