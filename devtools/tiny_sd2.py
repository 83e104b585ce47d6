"""A random-weight checkpoint that ComfyUI's CheckpointLoaderSimple loads as SD2.

A shallow UNet of the SD2 family (model_channels 320, 64-dim heads, linear transformer
projections, context 1024; two levels, one res block and one transformer each), the
standard SD VAE and the full OpenCLIP-H text encoder (24 layers, 1024 wide) in the
open_clip key layout of real SD2.1 checkpoints (about 1 GB, fp16; see tiny_checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_checkpoints import cached_checkpoint, randomize, unet_and_vae_state_dict

BUILDER_VERSION = "tiny-sd2-v1"

UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
    "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1],
    "num_head_channels": 64, "use_spatial_transformer": True, "use_linear_in_transformer": True,
    "context_dim": 1024, "legacy": False, "use_checkpoint": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def build_state_dict(unet_config: dict = UNET_CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full checkpoint state dict, with ComfyUI's key layout for SD2.x checkpoints."""
    import comfy.diffusers_convert
    import comfy.text_encoders.sd2_clip

    g = torch.Generator().manual_seed(seed)
    sd = unet_and_vae_state_dict(unet_config, g)
    with torch.device("meta"):
        clip = comfy.text_encoders.sd2_clip.SD2ClipModel(device="meta", dtype=torch.float32)
    clip_sd = randomize(clip.state_dict(), g)
    # transformers names -> open_clip names, as ComfyUI's own checkpoint saving does for SD2
    clip_sd = {k.replace("clip_h.", "cond_stage_model.model.", 1): v for k, v in clip_sd.items()}
    sd.update(comfy.diffusers_convert.convert_text_enc_state_dict_v20(clip_sd))
    return sd


def tiny_sd2_checkpoint() -> Path:
    """Path of the cached checkpoint, building it on first use."""
    return cached_checkpoint("tiny-sd2", BUILDER_VERSION, UNET_CONFIG, build_state_dict)
