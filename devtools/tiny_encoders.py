"""Random-weight image encoders with real architectures, for the scoring tests.

- a CLIP vision model file of one of ComfyUI's own configs (``comfy/clip_vision_config_*.json``),
  in the key layout core CLIPVisionLoader reads (built once, cached like the tiny checkpoints);
- a Hugging Face DINOv2 folder (facebook/dinov2-small's configuration, random weights) written
  by transformers itself, as users download it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .comfy_host import comfyui_path
from .tiny_checkpoints import cached_checkpoint, randomize

BUILDER_VERSION = "clip-vision-v1"
DINOV2_SMALL = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "patch_size": 14,
                "image_size": 518, "mlp_ratio": 4, "layerscale_value": 1.0, "use_swiglu_ffn": False}
DINOV2_PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
                       "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                       "image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 256}}


def clip_vision_checkpoint(config_name: str = "clip_vision_config_vitl.json") -> Path:
    """A cached random-weight CLIP vision file for ComfyUI's config ``config_name``."""
    config_path = comfyui_path() / "comfy" / config_name  # read as a file: server tests do not import ComfyUI
    config = json.loads(config_path.read_text())

    def build():
        import comfy.clip_model
        import comfy.ops

        with torch.device("meta"):
            model = comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, "meta",
                                                               comfy.ops.manual_cast)
        return randomize(model.state_dict(), torch.Generator().manual_seed(3))

    return cached_checkpoint(f"clip-vision-{config_path.stem}", BUILDER_VERSION, config, build)


def write_dinov2_folder(folder: Path, seed: int = 0) -> Path:
    """A DINOv2 model folder (config.json, model.safetensors, preprocessor_config.json) at ``folder``."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**DINOV2_SMALL)).save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR))
    return folder
