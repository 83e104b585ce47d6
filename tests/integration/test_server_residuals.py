"""The pack in a real ComfyUI server, driven through the HTTP API as a user's script would."""

import io

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file


def residual_graph(residual_name, phrase, text, *, extra_binding=None, size=64, steps=2):
    """CheckpointLoaderSimple -> Cones2LoadResidual (-> another) -> Cones2ApplyResidual -> KSampler -> save."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd2.safetensors"}},
        "res1": {"class_type": "Cones2LoadResidual",
                 "inputs": {"residual_name": residual_name, "phrase": phrase, "occurrence": 1, "strength": 1.0}},
        "pos": {"class_type": "Cones2ApplyResidual",
                "inputs": {"clip": ["ckpt", 1], "text": text, "bindings": ["res1", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 7, "steps": steps, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "cones2_test"}},
    }
    if extra_binding:
        name, ph = extra_binding
        g["res2"] = {"class_type": "Cones2LoadResidual", "inputs": {
            "residual_name": name, "phrase": ph, "occurrence": 1, "strength": 1.0, "bindings": ["res1", 0]}}
        g["pos"]["inputs"]["bindings"] = ["res2", 0]
    return g


@pytest.fixture(scope="module")
def residual_files(comfy_server):
    folder = comfy_server.base / "models" / "cones2_residuals"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(torch.randn(1024) * 0.05, folder / "official_dog.pt")  # the authors' format
    save_file({"residual": torch.randn(1, 1024) * 0.05}, str(folder / "mug.safetensors"),
              metadata={"format": "cones2-residual", "format_version": "1", "subject": "mug",
                        "token_ids": "[17845]", "base_model": "sd2"})
    save_file({"residual": torch.randn(1, 768)}, str(folder / "sd15_cat.safetensors"),
              metadata={"format": "cones2-residual", "subject": "cat"})
    save_file({"residual": torch.randn(1, 1024) * 0.05}, str(comfy_server.extra_residuals / "yaml_dog.safetensors"),
              metadata={"format": "cones2-residual", "subject": "dog"})
    return folder


def test_object_info_lists_the_nodes_and_every_residual_folder(comfy_server, residual_files):
    info = comfy_server.get("/object_info/Cones2LoadResidual")["Cones2LoadResidual"]
    assert info["display_name"] == "Cones2 Load Residual"
    assert info["output"] == ["CONES2_BINDINGS"]
    names = info["input"]["required"]["residual_name"][0]
    assert {"official_dog.pt", "mug.safetensors", "sd15_cat.safetensors", "yaml_dog.safetensors"} <= set(names)
    apply = comfy_server.get("/object_info/Cones2ApplyResidual")["Cones2ApplyResidual"]
    assert set(apply["input"]["required"]) == {"clip", "text"}
    assert apply["input"]["optional"]["bindings"][0] == "CONES2_BINDINGS"
    assert apply["output"] == ["CONDITIONING"]


def test_headless_graph_with_an_official_pt_and_a_safetensors_residual(comfy_server, residual_files):
    graph = residual_graph("official_dog.pt", "dog", "a mug and a dog on the beach",
                           extra_binding=("mug.safetensors", ""))
    outputs = comfy_server.run(graph)
    images = outputs["save"]["images"]
    assert len(images) == 1
    img = Image.open(io.BytesIO(comfy_server.image_bytes(images[0])))
    assert img.size == (64, 64)
    assert (comfy_server.base / "output" / images[0]["filename"]).is_file()


def test_headless_graph_with_a_residual_from_extra_model_paths(comfy_server, residual_files):
    outputs = comfy_server.run(residual_graph("yaml_dog.safetensors", "", "a dog in the snow"))
    assert len(outputs["save"]["images"]) == 1


def test_a_768_wide_residual_is_refused_with_a_clear_message(comfy_server, residual_files):
    entry = comfy_server.wait(comfy_server.queue(residual_graph("sd15_cat.safetensors", "", "a cat")))
    err = comfy_server.execution_error(entry)
    assert err is not None and err["node_type"] == "Cones2LoadResidual"
    msg = err["exception_message"]
    assert "sd15_cat.safetensors" in msg and "768 wide" in msg and "SD2" in msg and "train this subject again" in msg


def test_a_phrase_missing_from_the_prompt_is_reported_by_the_apply_node(comfy_server, residual_files):
    entry = comfy_server.wait(comfy_server.queue(residual_graph("official_dog.pt", "dog", "a cat on a sofa")))
    err = comfy_server.execution_error(entry)
    assert err["node_type"] == "Cones2ApplyResidual"
    assert "the phrase 'dog' is not in the prompt" in err["exception_message"]
