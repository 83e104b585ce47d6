"""A random-weight checkpoint that ComfyUI's CheckpointLoaderSimple loads as SD1.5: a model Cones 2 refuses.

Built like tiny_sd2 with ComfyUI's own classes: a shallow SD1-family UNet (context 768,
8 heads, conv projections), the SD VAE and the full CLIP-L text encoder, saved once
(fp16, about 0.5 GB) and cached next to the tiny SD2 checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_checkpoints import cached_checkpoint, randomize, unet_and_vae_state_dict

BUILDER_VERSION = "tiny-sd15-v1"

UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
    "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1],
    "num_heads": 8, "use_spatial_transformer": True, "use_linear_in_transformer": False,
    "context_dim": 768, "legacy": False, "use_checkpoint": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def build_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    import comfy.sd1_clip

    g = torch.Generator().manual_seed(seed)
    sd = unet_and_vae_state_dict(UNET_CONFIG, g)
    with torch.device("meta"):
        clip = comfy.sd1_clip.SD1ClipModel(device="meta", dtype=torch.float32)
    for k, v in randomize(clip.state_dict(), g).items():
        if k.startswith("clip_l.transformer.") and "text_projection" not in k and "logit_scale" not in k:
            sd[k.replace("clip_l.", "cond_stage_model.", 1)] = v
    return sd


def tiny_sd15_checkpoint() -> Path:
    """Path of the cached checkpoint, building it on first use."""
    return cached_checkpoint("tiny-sd15", BUILDER_VERSION, UNET_CONFIG, build_state_dict)
