"""A random-weight checkpoint that ComfyUI's CheckpointLoaderSimple loads as Segmind Vega (SDXL family, eps).

The distilled SDXL UNet of Segmind Vega (``comfy.supported_models.Segmind_Vega``: transformer
depth [0, 0, 1, 1, 2, 2], no middle transformer, ADM 2816, context 2048; the config ComfyUI's
own model detection knows), the real SDXL text encoders (CLIP-L and OpenCLIP bigG, 2048-wide
rows and bigG's pooled vector) and the SD VAE's shape (SDXL's latent scale comes from the
model config). Built with ComfyUI's own classes, saved by its own ``save_checkpoint`` (fp16,
about 3.3 GB, built once and cached; see tiny_checkpoints). A full SDXL UNet is
``SDXL_UNET_CONFIG`` (``random_sdxl_checkpoint(full=True)``), for a check that can afford it.
"""

from __future__ import annotations

from pathlib import Path

from .tiny_checkpoints import cached_file, save_random_checkpoint

BUILDER_VERSION = "tiny-sdxl-v1"

_SDXL_COMMON = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
    "model_channels": 320, "channel_mult": [1, 2, 4], "num_res_blocks": [2, 2, 2],
    "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
UNET_CONFIG = {**_SDXL_COMMON, "transformer_depth": [0, 0, 1, 1, 2, 2], "transformer_depth_middle": -1,
               "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2]}
SDXL_UNET_CONFIG = {**_SDXL_COMMON, "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
                    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10]}


def random_sdxl_checkpoint(full: bool = False) -> Path:
    """Path of the cached Segmind Vega checkpoint (or, ``full``, of the SDXL base UNet's shape), built on first use."""
    config_name, unet_config, stem = (("SDXL", SDXL_UNET_CONFIG, "random-sdxl") if full
                                      else ("Segmind_Vega", UNET_CONFIG, "tiny-sdxl-vega"))

    def write(path: Path) -> None:
        import comfy.supported_models  # after cached_file has loaded the host

        save_random_checkpoint(path, getattr(comfy.supported_models, config_name), unet_config, BUILDER_VERSION)

    return cached_file(stem, BUILDER_VERSION, unet_config, write)


def tiny_sdxl_checkpoint() -> Path:
    """Path of the cached Segmind Vega checkpoint, building it on first use."""
    return random_sdxl_checkpoint()
