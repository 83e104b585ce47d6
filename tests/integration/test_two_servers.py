"""Subjects that travel with the workflow, between two real ComfyUI servers (issue 21).

Server A (the session's) trains a subject; the residual comes back through the API (the prompt's
history) and the runner saves it. Server B (its own base directory, nothing shared, no residual
files) samples with it carried inline in the workflow. Tiny checkpoint, 2 training steps, 64x64.
"""

import base64
import json
import re
import subprocess
import sys

import pytest
import torch
from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint
from cones2_test_support.scripts import SCRIPTS, WORKFLOWS
from PIL import Image
from safetensors.torch import load_file

CHECKPOINT = "tiny-sd2.safetensors"
PHOTOS = "cones2_fleet_subject"
# lr 1e-2: two steps move the residual far above float noise, so B's output shows whether it was applied
TRAINING = {"steps": 2, "resolution": 64, "learning_rate": 1e-2, "corpus_size": 1, "sentences_per_step": 1,
            "train_layers": 1, "gradient_checkpointing": False, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def server_b():
    """A second ComfyUI: its own base directory and port, the checkpoint only, no residual folder or file."""
    from cones2_test_support.server import ComfyServer

    server = ComfyServer(models={"checkpoints": {CHECKPOINT: tiny_sd2_checkpoint()}}).start()
    yield server
    server.stop()


def runner(server, workflow, *args):
    return subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), str(workflow), "--server", server.url,
                           *args], capture_output=True, text=True, timeout=900)


def sampling_graph(bindings: bool) -> dict:
    """A residual bound to 'dog' (a Load Residual the runner may turn inline), the sampler's latent saved."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "res": {"class_type": "Cones2LoadResidual",
                "inputs": {"residual_name": "dog.safetensors", "phrase": "", "occurrence": 1, "strength": 1.0}},
        "pos": {"class_type": "Cones2ApplyResidual",
                "inputs": {"clip": ["ckpt", 1], "text": "a dog on the beach", "bindings": ["res", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 3, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "fleet"}},
    }
    if not bindings:
        del g["res"], g["pos"]["inputs"]["bindings"]
    return g


def residual_files(server) -> list:
    return sorted(p.relative_to(server.base) for p in (server.base / "models").rglob("*") if p.suffix in (".pt", ".safetensors")
                  and "checkpoints" not in p.parts)


def test_train_on_a_sample_on_b_with_the_residual_inline(comfy_server, server_b, tmp_path):
    photos = comfy_server.base / "input" / PHOTOS
    photos.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(200, 80, 40), (60, 160, 90), (30, 60, 200)]):
        img = Image.new("RGB", (80, 64), colour)
        img.paste((250, 250, 250), (10 + 10 * i, 10, 40 + 10 * i, 50))
        img.save(photos / f"photo_{i}.png")

    # A: the shipped training workflow through the runner; the residual comes back in the history
    train = json.loads((WORKFLOWS / "api" / "train_residual.json").read_text())
    (save_id,) = [k for k, n in train.items() if n["class_type"] == "Cones2SaveResidual"]
    (train_id,) = [k for k, n in train.items() if n["class_type"] == "Cones2TrainResidual"]
    sets = [a for k, v in TRAINING.items() for a in ("--set", f"{train_id}.{k}={v}")]
    out_a = tmp_path / "from_a"
    result = runner(comfy_server, WORKFLOWS / "api" / "train_residual.json", "--checkpoint", CHECKPOINT, *sets,
                    "--set", f"class:LoadImageSetFromFolderNode.folder={PHOTOS}", "--set", f"{save_id}.filename=fleet_dog",
                    "-o", str(out_a))
    assert result.returncode == 0, result.stderr[-3000:]
    returned = out_a / f"node{save_id}_residual.safetensors"
    assert str(returned) in result.stdout.splitlines()  # the runner prints its path
    saved_on_a = comfy_server.base / "models" / "cones2_residuals" / "fleet_dog.safetensors"
    assert returned.read_bytes() == saved_on_a.read_bytes()  # the very file A saved, byte for byte
    from cones2.training import residual_file as rf

    residual = rf.load_residual(returned)
    assert residual.subject == "dog" and residual.training["steps"] == 2
    assert float(residual.tensor.abs().max()) > 1e-3  # trained: far from zero

    # B: never saw a residual file; the workflow carries the subject
    assert residual_files(server_b) == []
    assert server_b.get("/object_info/Cones2LoadResidual")["Cones2LoadResidual"]["input"]["required"][
        "residual_name"][0] == []
    workflow = tmp_path / "sample.json"
    workflow.write_text(json.dumps(sampling_graph(bindings=True)))
    out_b = tmp_path / "from_b"
    result = runner(server_b, workflow, "--residual", f"dog=@{returned}", "-o", str(out_b))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(was Cones2LoadResidual) input 'residual_base64'" in result.stderr
    (guided,) = [load_file(p)["latent_tensor"] for p in out_b.glob("*.latent")]
    plain_out = server_b.run(sampling_graph(bindings=False))
    (plain_file,) = plain_out["save"]["latents"]
    plain = load_file(server_b.base / "output" / plain_file["subfolder"] / plain_file["filename"])["latent_tensor"]
    assert guided.shape == plain.shape == (1, 4, 8, 8)
    # the same graph on the same server: only the dog row differs, so any change is the residual's
    difference = float((guided - plain).abs().max())
    assert difference > 1e-3 * float(plain.abs().max()), difference
    assert residual_files(server_b) == []  # nothing was written to B's model folders


def inline_graph(value) -> dict:
    g = sampling_graph(bindings=True)
    g["res"] = {"class_type": "Cones2InlineResidual",
                "inputs": {"residual_base64": value, "phrase": "dog", "occurrence": 1, "strength": 1.0}}
    return g


@pytest.mark.parametrize("value, said", [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"PK\x03\x04 a zip: a torch .pt file").decode(), r"a torch \(.pt\) file, not safetensors"),
    (base64.b64encode(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"residual\":").decode(), "not a readable safetensors file"),
    ("A" * 3_000_000, "characters is too long for a residual; the cap is 1 MiB"),
])
def test_bad_inline_values_are_refused_by_the_server_at_that_input(server_b, value, said):
    status, body = server_b.post("/prompt", {"prompt": inline_graph(value), "client_id": "cones2-tests"})
    assert status == 400, body
    errors = body["node_errors"]["res"]["errors"]
    # ComfyUI files a VALIDATE_INPUTS answer under every input that function reads (here also the float check's
    # 'strength'), each time with the same text, which names the input
    assert "residual_base64" in {e["extra_info"]["input_name"] for e in errors}
    (text,) = {e["details"].split(" - ", 1)[1] for e in errors}
    assert text.startswith("Cones2InlineResidual: residual_base64: ")
    assert re.search(said, text), text
    assert server_b.get("/system_stats")["system"]  # still up
    assert residual_files(server_b) == []


def test_a_wrong_width_inline_residual_is_refused_naming_node_and_input(server_b):
    from safetensors.torch import save

    value = base64.b64encode(save({"residual": torch.zeros(1, 1000)})).decode()
    status, body = server_b.post("/prompt", {"prompt": inline_graph(value), "client_id": "cones2-tests"})
    assert status == 400
    (text,) = {e["details"].split(" - ", 1)[1] for e in body["node_errors"]["res"]["errors"]}
    assert text.startswith("Cones2InlineResidual: residual_base64: the residual is 1000 wide")
