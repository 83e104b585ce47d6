"""A random-weight checkpoint that ComfyUI's CheckpointLoaderSimple loads as SD1.5 (eps).

A shallow SD1-family UNet (context 768, 8 heads, conv projections; two levels, one res block
and one transformer each), the SD VAE and the full CLIP-L text encoder, built with ComfyUI's
own classes and saved by its own ``save_checkpoint`` (fp16, about 0.5 GB; see tiny_checkpoints).
"""

from __future__ import annotations

from pathlib import Path

from .tiny_checkpoints import cached_file, save_random_checkpoint

BUILDER_VERSION = "tiny-sd15-v2"

UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
    "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1],
    "num_heads": 8, "use_spatial_transformer": True, "use_linear_in_transformer": False,
    "context_dim": 768, "legacy": False, "use_checkpoint": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def write_checkpoint(path: Path) -> None:
    import comfy.supported_models

    save_random_checkpoint(path, comfy.supported_models.SD15, UNET_CONFIG, BUILDER_VERSION)


def tiny_sd15_checkpoint() -> Path:
    """Path of the cached checkpoint, building it on first use."""
    return cached_file("tiny-sd15", BUILDER_VERSION, UNET_CONFIG, write_checkpoint)
