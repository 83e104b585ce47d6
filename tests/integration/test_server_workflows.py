"""The shipped workflows, the runner and the converter against a real ComfyUI server (main.py --cpu).

The server has the tiny SD2 checkpoint under the workflows' placeholder names, random residuals
under theirs, and every API workflow runs headless through scripts/run_workflow.py (64x64, 2
steps, for time).
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cones2.devtools import make_workflows
from cones2.devtools import node_schemas as wf
from cones2.devtools.comfy_host import PACK_DIR_NAME
from cones2.devtools.tiny_encoders import clip_vision_checkpoint
from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint
from cones2_test_support.scripts import ROOT, SCRIPTS, WORKFLOWS, official_example_dir
from PIL import Image
from safetensors.torch import save_file

RUNNER = SCRIPTS / "run_workflow.py"
FAST_CHECKPOINT = "v2-1_512-ema-pruned.safetensors"
SMALL_TRAINING = {"steps": 2, "resolution": 64, "learning_rate": 1e-4, "corpus_size": 1, "sentences_per_step": 1,
                  "train_layers": 1, "gradient_checkpointing": False, "checkpoint_every": 0}
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
NAMES = [p.stem for p in API_FILES]
RUN_ELSEWHERE = {
    "score_and_pick_best",  # needs an image encoder and photo folders: test_server_scoring.py
    # another family's checkpoint and residuals, not this server's tiny SD2: test_server_families.py and
    # test_server_training.py run them on their own family's test checkpoint
    "two_subjects_boxes_sd15", "two_subjects_boxes_sdxl", "train_residual_sd15", "train_residual_sdxl",
}


def load(name, api=True):
    return json.loads(((WORKFLOWS / "api") if api else WORKFLOWS).joinpath(f"{name}.json").read_text())


@pytest.fixture(scope="module")
def server(comfy_server):
    """The session's server, with the placeholders of every shipped workflow present."""
    base = comfy_server.base / "models"
    (base / "checkpoints").mkdir(exist_ok=True)
    (base / "cones2_residuals").mkdir(exist_ok=True)
    for name in NAMES:
        for node in load(name).values():
            inputs = node["inputs"]
            if "ckpt_name" in inputs and not (base / "checkpoints" / inputs["ckpt_name"]).exists():
                (base / "checkpoints" / inputs["ckpt_name"]).symlink_to(tiny_sd2_checkpoint())
            if "clip_name" in inputs and node["class_type"] == "CLIPVisionLoader":
                path = base / "clip_vision" / inputs["clip_name"]
                path.parent.mkdir(exist_ok=True)
                if not path.exists():
                    path.symlink_to(clip_vision_checkpoint())
            if node["class_type"] == "LoadImageSetFromFolderNode" and inputs["folder"] != "cones2_subject":
                folder = comfy_server.base / "input" / inputs["folder"]  # reference photos (scoring)
                folder.mkdir(parents=True, exist_ok=True)
                # photo_0.png: test_server_scoring writes photo_0/photo_1 into the same folder of this server
                Image.new("RGB", (48, 64), (90, 30, 200)).save(folder / "photo_0.png")
            if node["class_type"] == "Cones2LoadResidual":
                path = base / "cones2_residuals" / inputs["residual_name"]
                if not path.exists():
                    save_file({"residual": torch.randn(1, 1024) * 0.05}, str(path),
                              metadata={"format": "cones2-residual", "format_version": "1",
                                        "subject": inputs["phrase"], "base_model": "sd2"})
    photos = comfy_server.base / "input" / "cones2_subject"  # the training workflow's folder
    photos.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(200, 80, 40), (60, 160, 90), (30, 60, 200)]):
        img = Image.new("RGB", (80, 64), colour)
        img.paste((250, 250, 250), (10 + 10 * i, 10, 40 + 10 * i, 50))
        img.save(photos / f"workflow_photo_{i}.png")
    for image in (WORKFLOWS / "images").glob("*.png"):
        target = comfy_server.base / "input" / image.name
        if not target.exists():
            target.write_bytes(image.read_bytes())
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


# The runner in a Python without websocket-client (its optional extra): `import websocket` fails.
WITHOUT_WEBSOCKET = ("import runpy, sys; sys.modules['websocket'] = None; sys.argv = sys.argv[1:];"
                     "runpy.run_path(sys.argv[0], run_name='__main__')")


def run(server, workflow, *args, timeout=600, websocket=True):
    python = [sys.executable] if websocket else [sys.executable, "-c", WITHOUT_WEBSOCKET]
    return subprocess.run([*python, str(RUNNER), str(workflow), "--server", server.url, *args],
                          capture_output=True, text=True, timeout=timeout)


def fast(api, out):
    """Overrides that make a shipped workflow quick on the CPU: 64x64 latent, 2 steps, one checkpoint name
    for all (the same tiny file under every placeholder; one name is loaded once)."""
    args = ["--checkpoint", FAST_CHECKPOINT, "-o", str(out)]
    for node_id, node in api.items():
        if node["class_type"] == "EmptyLatentImage":
            args += ["--set", f"{node_id}.width=64", "--set", f"{node_id}.height=64"]
        elif node["class_type"] == "Cones2TrainResidual":
            args += [a for k, v in SMALL_TRAINING.items() for a in ("--set", f"{node_id}.{k}={v}")]
        elif "steps" in node["inputs"]:
            args += ["--set", f"{node_id}.steps=2"]
    return args


def png_prompt(path):
    """The API prompt ComfyUI's SaveImage embeds in the PNG: what the server actually ran."""
    return json.loads(Image.open(path).text["prompt"])


# --- the files against the live /object_info -------------------------------------------------

def normalized(schema):
    """Inputs, their order, types and options, and outputs; combo option lists left out."""
    out = {}
    for inp in wf.ordered_inputs(schema):
        opts = {k: v for k, v in inp.options.items() if k not in ("tooltip", "options")}
        out[inp.name] = (inp.type_name, inp.optional, json.dumps(opts, sort_keys=True))
    return list(out.items()), wf.output_types(schema), wf.output_names(schema)


def test_the_schema_snapshot_matches_the_server(object_info):
    snapshot = make_workflows.load_schemas()
    stale = [cls for cls in snapshot if cls not in object_info or normalized(snapshot[cls]) != normalized(object_info[cls])]
    assert not stale, f"devtools/workflow_schemas.json is stale for {stale}: run python -m devtools.make_workflows --server URL"


@pytest.mark.parametrize("name", NAMES)
def test_api_workflows_are_valid_for_the_server(name, object_info):
    problems = wf.validate_api(load(name), object_info)
    assert [str(p) for p in problems] == []


def test_the_template_browser_lists_the_ui_workflows_only(server):
    templates = server.get("/workflow_templates")
    assert sorted(templates[PACK_DIR_NAME]) == NAMES
    served = server.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{NAMES[0]}.json")
    assert served == load(NAMES[0], api=False)


# --- headless runs through the runner ---------------------------------------------------------

def printed_files(result) -> list[Path]:
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("name", [n for n in NAMES if n not in RUN_ELSEWHERE])
def test_each_api_workflow_runs_headless_through_the_runner(name, server, tmp_path):
    api = load(name)
    result = run(server, WORKFLOWS / "api" / f"{name}.json", *fast(api, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    files = printed_files(result)
    assert all(f.parent == tmp_path and f.is_file() for f in files)
    residuals = [f for f in files if f.suffix == ".safetensors"]  # trained residuals, from the history
    saved = [f for f in files if not f.name.startswith("ComfyUI_temp") and f not in residuals]
    previews = [f for f in files if f.name.startswith("ComfyUI_temp")]  # the layout drawn over the image
    classes = [n["class_type"] for n in api.values()]
    assert [f.name for f in residuals] == [f"node{k}_residual.safetensors" for k, n in api.items()
                                           if n["class_type"] == "Cones2SaveResidual"]
    assert len(saved) == classes.count("SaveImage") == 1 and len(previews) == classes.count("PreviewImage"), result.stdout
    expected = copy.deepcopy(api)
    for node in expected.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        elif node["class_type"] == "Cones2TrainResidual":
            node["inputs"].update(SMALL_TRAINING)
        elif "steps" in node["inputs"]:
            node["inputs"]["steps"] = 2
        if "ckpt_name" in node["inputs"]:
            node["inputs"]["ckpt_name"] = FAST_CHECKPOINT
    assert wf.diff_api(png_prompt(saved[0]), expected) == []  # the server ran exactly the workflow
    assert f"[{len(api)}/{len(api)}]" in result.stderr and "step 2/2" in result.stderr  # progress was shown
    if "Cones2TrainResidual" in classes:
        assert "Cones2SaveResidual, 'Save to models/cones2_residuals'):\nmy_dog" in result.stderr  # its text, whole
        assert Image.open(saved[0]).size == (640, 360)  # the loss curve
    else:
        assert Image.open(saved[0]).size == Image.open(previews[0]).size == (64, 64)


def test_runner_overrides_reach_the_server(server, tmp_path):
    base = server.base / "models" / "cones2_residuals"
    save_file({"residual": torch.randn(1, 1024) * 0.05}, str(base / "rex.safetensors"),
              metadata={"format": "cones2-residual", "subject": "dog"})
    api = load("two_subjects_boxes")
    result = run(server, WORKFLOWS / "api" / "two_subjects_boxes.json", *fast(api, tmp_path),
                 "--seed", "11-12", "--prompt", "a dog and a flower on the moon",
                 "--residual", "dog=rex.safetensors", "--box", "dog: 0 0 256 512", "--box", "flower: 256 0 256 512")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = sorted(p for p in printed_files(result) if "two_subjects" in p.name)
    assert len(saved) == 2
    for seed, path in zip((11, 12), saved, strict=True):
        ran = png_prompt(path)
        assert ran["13"]["inputs"]["seed"] == seed
        assert ran["7"]["inputs"]["text"] == "a dog and a flower on the moon"
        assert ran["4"]["inputs"]["residual_name"] == "rex.safetensors"
        assert ran["9"]["inputs"]["boxes"] == "dog: 0 0 256 512\nflower: 256 0 256 512"
    assert "cached:" in result.stderr  # the second seed reused the first run's encodings


def test_without_websocket_client_the_run_is_followed_through_history(server, tmp_path):
    api = load("two_subjects_boxes")
    result = run(server, WORKFLOWS / "api" / "two_subjects_boxes.json", *fast(api, tmp_path), "--seed", "5",
                 websocket=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "websocket-client is not installed: no live progress" in result.stderr
    assert "step 2/2" not in result.stderr and f"/{len(api)}]" not in result.stderr  # no live progress
    saved = [p for p in printed_files(result) if not p.name.startswith("ComfyUI_temp")]
    assert len(saved) == 1 and saved[0].parent == tmp_path
    assert png_prompt(saved[0])["13"]["inputs"]["seed"] == 5 and Image.open(saved[0]).size == (64, 64)


def test_without_websocket_client_a_node_failure_is_still_named(server, tmp_path):
    api = load("two_subjects_boxes")
    result = run(server, WORKFLOWS / "api" / "two_subjects_boxes.json", *fast(api, tmp_path),
                 "--prompt", "a cat on a sofa", websocket=False)
    assert result.returncode == 1
    assert "error: node 7 (Cones2ApplyResidual, 'Positive prompt') failed: ValueError" in result.stderr


def test_a_ui_format_workflow_is_refused_with_how_to_export_it(server, tmp_path):
    result = run(server, WORKFLOWS / "three_subjects_same_class.json", "-o", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert "is a UI-format workflow (as the frontend saves it); the runner takes the API format: open it in " \
           "ComfyUI and use Workflow > Export (API)" in result.stderr
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_refused_graphs_are_printed_per_node(server, tmp_path):
    result = run(server, WORKFLOWS / "api" / "two_subjects_boxes.json", "--residual", "dog=nope.safetensors",
                 "--set", "KSampler.steps=0", "-o", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "error: Prompt outputs failed validation" in lines
    assert any(line.startswith("  node 4 (Cones2LoadResidual, 'Subject 1: dog') input 'residual_name': "
                               "Value not in list: 'nope.safetensors' not in") for line in lines)
    assert "  node 13 (KSampler) input 'steps': Value 0 smaller than min of 1" in lines
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_node_failures_name_the_node_and_the_message(server, tmp_path):
    api = load("two_subjects_boxes")
    result = run(server, WORKFLOWS / "api" / "two_subjects_boxes.json", *fast(api, tmp_path),
                 "--prompt", "a cat on a sofa")
    assert result.returncode == 1
    assert ("error: node 7 (Cones2ApplyResidual, 'Positive prompt') failed: ValueError: Cones2ApplyResidual: "
            "the phrase 'dog' is not in the prompt") in result.stderr
    assert "Traceback" not in result.stderr


# --- the converter, end to end ----------------------------------------------------------------

def test_the_authors_example_converts_validates_and_runs(server, object_info, tmp_path):
    example = official_example_dir()
    if example is None:
        pytest.skip("the authors' example is not on this machine (it is never copied into the repository)")
    residuals = tmp_path / "authors_residuals"
    residuals.mkdir()
    for name in ("dog", "mug"):  # stand-in weights in the authors' .pt format
        torch.save(torch.randn(1024) * 0.05, residuals / f"{name}.pt")
    out = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "devtools.convert_official_config", str(example / "guidance_config_example.json"),
         "-o", str(out), "--residuals-dir", str(residuals), "--comfyui", os.environ["COMFYUI_PATH"],
         "--residuals-out", str(server.base / "models" / "cones2_residuals"), "--force",
         "--layout", str(example / "layout_example.png")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "tokenizer: CLIP's (from ComfyUI)" in result.stdout
    assert "subject 'mug' at token 2 -> phrase 'mug', occurrence 1" in result.stdout
    api_path = out / "api" / "guidance_config_example.json"
    api = json.loads(api_path.read_text())
    assert [str(p) for p in wf.validate_api(api, object_info, skip_combo_check={"ckpt_name", "image"})] == []
    # the runner uploads the authors' layout from OUT/images; the tiny checkpoint stands in for SD2.1 768
    run_out = tmp_path / "run"
    result = run(server, api_path, *fast(api, run_out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "uploaded" in result.stderr and "layout_example.png" in result.stderr
    saved = [p for p in printed_files(result) if "guidance_config_example" in p.name]
    ran = png_prompt(saved[0])
    sampler = next(n["inputs"] for n in ran.values() if n["class_type"] == "Cones2LayoutGuidedSampler")
    assert sampler["self_recurrence"] is True and sampler["sampler_name"] == "euler"
    assert Image.open(saved[0]).size == (64, 64)


# --- the quick start's workflow: layout guidance alone, no residual file ---------------------

def test_the_first_guided_image_needs_no_residual_and_guidance_changes_it(server, tmp_path):
    name = "first_guided_image"
    api = load(name)
    classes = {n["class_type"] for n in api.values()}
    assert not classes & {"Cones2LoadResidual", "Cones2BindResidual"}  # nothing to download or train first
    assert "bindings" not in next(n for n in api.values() if n["class_type"] == "Cones2ApplyResidual")["inputs"]
    images = {}
    for label, extra in (("guided", []), ("unguided", ["--set", "Cones2LayoutGuidance.weight=0"])):
        out = tmp_path / label
        result = run(server, WORKFLOWS / "api" / f"{name}.json", *fast(api, out), *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        saved = [p for p in printed_files(result) if p.name.startswith(name)]
        assert len(saved) == 1
        ran = png_prompt(saved[0])
        assert next(n for n in ran.values() if n["class_type"] == "Cones2LayoutGuidance")["inputs"]["weight"] == (
            0 if extra else 0.08)
        images[label] = torch.tensor(list(Image.open(saved[0]).convert("RGB").tobytes()), dtype=torch.float32)
        assert Image.open(saved[0]).size == (64, 64)
    # same seed, same prompt: only the layout bias differs, and it changes the picture
    assert (images["guided"] - images["unguided"]).abs().mean() > 0.5



def test_the_quick_starts_headless_command_sends_the_shipped_graph():
    """README's quick start command, word for word, from the pack folder: it sends exactly the shipped
    graph (--print-prompt shows it without a server). Running that graph headless is the test above
    (at 64x64 and 2 steps: the shipped 512x512, 30 steps take half an hour on a shared CPU)."""
    command = "python scripts/run_workflow.py workflows/api/first_guided_image.json -o out/"
    assert command in (ROOT / "README.md").read_text()
    result = subprocess.run([sys.executable, *command.split()[1:], "--print-prompt"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == load("first_guided_image")
