"""The shipped training graph in a real ComfyUI server, driven through the HTTP API as a user's script would."""

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from cones2_test_support.memory import SDXL_TRAINING_GIB, require_free_memory
from PIL import Image

API = Path(__file__).resolve().parents[2] / "workflows" / "api"
WORKFLOW = API / "train_residual.json"
SMALL = {"steps": 2, "resolution": 64, "learning_rate": 1e-4, "corpus_size": 1, "sentences_per_step": 1,
         "train_layers": 1, "gradient_checkpointing": False, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def subject_folder(comfy_server):
    folder = comfy_server.base / "input" / "cones2_subject"
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(200, 80, 40), (60, 160, 90), (30, 60, 200)]):
        img = Image.new("RGB", (80, 64), colour)
        img.paste((250, 250, 250), (10 + 10 * i, 10, 40 + 10 * i, 50))
        img.save(folder / f"photo_{i}.png")
    return folder.name


def training_graph(filename, **overrides):
    graph = json.loads(WORKFLOW.read_text())
    graph["1"]["inputs"]["ckpt_name"] = "tiny-sd2.safetensors"
    graph["3"]["inputs"].update({**SMALL, **overrides})
    graph["4"]["inputs"]["filename"] = filename
    graph["6"] = {"class_type": "LossGraphNode", "inputs": {"loss": ["3", 1], "filename_prefix": "cones2_loss_map"}}
    return graph


def test_object_info_describes_the_training_nodes(comfy_server):
    info = comfy_server.get("/object_info/Cones2TrainResidual")["Cones2TrainResidual"]
    assert info["output"] == ["CONES2_RESIDUAL", "LOSS_MAP", "IMAGE"]
    assert info["output_name"] == ["residual", "loss", "loss_plot"]
    req = info["input"]["required"]
    assert list(req)[:5] == ["model", "clip", "vae", "images", "phrase"]
    assert req["steps"][1]["default"] == 3000 and req["learning_rate"][1]["default"] == 1e-6
    assert req["resolution"][1]["default"] == 0 and req["batch_size"][1]["default"] == 1  # 0: the model's own size
    opt = info["input"]["optional"]
    assert opt["preservation"][0] == ["paper", "official", "none"]
    assert opt["residual_from"][0] == ["corpus", "templates"]
    save = comfy_server.get("/object_info/Cones2SaveResidual")["Cones2SaveResidual"]
    assert save["input"]["required"]["residual"][0] == "CONES2_RESIDUAL" and save["output_node"] is True


def test_the_shipped_graph_trains_saves_and_the_residual_loads_for_sampling(comfy_server, subject_folder):
    graph = training_graph("server_dog")
    assert graph["2"]["inputs"]["folder"] == subject_folder
    outputs = comfy_server.run(graph)
    saved = outputs["4"]["text"][0]
    assert saved == "server_dog.safetensors"
    path = comfy_server.base / "models" / "cones2_residuals" / saved
    assert path.is_file()
    plot = Image.open(io.BytesIO(comfy_server.image_bytes(outputs["5"]["images"][0])))
    assert plot.size == (640, 360)
    assert outputs["6"]["images"][0]["type"] == "temp"  # core Plot Loss Graph read our LOSS_MAP

    # saving under the same name again (training is cached by ComfyUI): a new name, never an overwrite
    again = comfy_server.run(training_graph("server_dog.safetensors"))
    assert again["4"]["text"][0] == "server_dog_2.safetensors"
    from cones2.training.residual_file import load_residual

    first, second = load_residual(path), load_residual(path.parent / "server_dog_2.safetensors")
    assert torch.equal(first.tensor, second.tensor) and first.training == second.training
    assert first.subject == "dog" and first.training["steps"] == 2

    sample = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd2.safetensors"}},
        "res": {"class_type": "Cones2LoadResidual",
                "inputs": {"residual_name": saved, "phrase": "", "occurrence": 1, "strength": 1.0}},
        "pos": {"class_type": "Cones2ApplyResidual",
                "inputs": {"clip": ["ckpt", 1], "text": "a dog on the beach", "bindings": ["res", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 7, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "cones2_trained"}},
    }
    out = comfy_server.run(sample)
    assert len(out["save"]["images"]) == 1


def test_a_bad_input_reaches_the_user_as_a_named_error_and_writes_nothing(comfy_server, subject_folder):
    graph = training_graph("never_written", phrase="  ")
    entry = comfy_server.wait(comfy_server.queue(copy.deepcopy(graph)))
    err = comfy_server.execution_error(entry)
    assert err is not None and err["node_type"] == "Cones2TrainResidual"
    assert "has no tokens. Type the subject's class word" in err["exception_message"]
    assert not list((comfy_server.base / "models").rglob("never_written*"))


def tiny_sd15():
    from cones2.devtools.tiny_sd15 import tiny_sd15_checkpoint

    return tiny_sd15_checkpoint()


def tiny_sdxl():
    from cones2.devtools.tiny_sdxl import tiny_sdxl_checkpoint

    return tiny_sdxl_checkpoint()


# the family's shipped workflow: (its tiny checkpoint, family key, conditioning width)
FAMILY_WORKFLOWS = {"train_residual_sd15": (tiny_sd15, "sd1", 768), "train_residual_sdxl": (tiny_sdxl, "sdxl", 2048)}


@pytest.mark.parametrize("name", list(FAMILY_WORKFLOWS))
def test_each_familys_shipped_graph_trains_a_residual_of_its_family(comfy_server, subject_folder, name):
    from cones2.training.residual_file import load_residual

    build, key, width = FAMILY_WORKFLOWS[name]
    if key == "sdxl":
        require_free_memory(SDXL_TRAINING_GIB, "training on the SDXL test checkpoint in the server")
    checkpoints = comfy_server.base / "models" / "checkpoints"
    link = checkpoints / f"tiny-{key}.safetensors"
    if not link.exists():
        link.symlink_to(build())
    graph = json.loads((API / f"{name}.json").read_text())
    graph["1"]["inputs"]["ckpt_name"] = link.name
    graph["3"]["inputs"].update(SMALL)
    graph["4"]["inputs"]["filename"] = f"server_{key}_dog"
    try:
        outputs = comfy_server.run(graph)
    finally:  # the session's server would hold SDXL (about 9 GB) for every later test
        comfy_server.post("/free", {"unload_models": True, "free_memory": True})
    path = comfy_server.base / "models" / "cones2_residuals" / outputs["4"]["text"][0]
    residual = load_residual(path)
    assert residual.tensor.shape == (1, width) and residual.base_model == key
    assert torch.isfinite(residual.tensor).all() and residual.tensor.abs().max() > 0
    assert residual.subject == "dog" and residual.training["steps"] == 2 and residual.training["resolution"] == 64
