"""A random-weight checkpoint that ComfyUI's CheckpointLoaderSimple loads as SD2.

Real architectures, built with ComfyUI's own classes: a shallow UNet of the SD2 family
(model_channels 320, 64-dim heads, linear transformer projections, context 1024; two
levels, one res block and one transformer each), the standard SD VAE and the full
OpenCLIP-H text encoder (24 layers, 1024 wide) in the open_clip key layout of real SD2.1
checkpoints. Weights are random but finite and scaled so activations stay O(1). The file
(about 1 GB, fp16) is built once and cached.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch

BUILDER_VERSION = "tiny-sd2-v1"

UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
    "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1],
    "num_head_channels": 64, "use_spatial_transformer": True, "use_linear_in_transformer": True,
    "context_dim": 1024, "legacy": False, "use_checkpoint": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def cache_dir() -> Path:
    path = Path(os.environ.get("CONES2_TEST_CACHE", Path.home() / ".cache" / "cones2-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _randomize(state_dict: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state_dict.items():
        if not t.is_floating_point():
            out[name] = t
            continue
        leaf = name.rsplit(".", 1)[-1]
        if t.ndim >= 2:
            fan_in = t[0].numel()
            std = 0.02 if "embedding" in name else 1.0 / math.sqrt(fan_in)
            value = torch.randn(t.shape, generator=generator) * std
        elif leaf == "weight" or "norm" in name or leaf in ("g", "gamma"):
            value = torch.ones(t.shape)
        elif "logit_scale" in name:
            value = torch.full(t.shape, math.log(100.0))
        else:
            value = torch.randn(t.shape, generator=generator) * 0.01
        out[name] = value.to(torch.float16)
    return out


def build_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The full checkpoint state dict, with ComfyUI's key layout for SD2.x checkpoints."""
    import comfy.diffusers_convert
    import comfy.ops
    import comfy.text_encoders.sd2_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    g = torch.Generator().manual_seed(seed)
    sd = {}
    with torch.device("meta"):
        unet = UNetModel(**UNET_CONFIG, dtype=torch.float32, operations=comfy.ops.disable_weight_init)
        clip = comfy.text_encoders.sd2_clip.SD2ClipModel(device="meta", dtype=torch.float32)
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                    "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                    "dropout": 0.0}
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    for prefix, module in (("model.diffusion_model.", unet), ("first_stage_model.", vae)):
        for k, v in _randomize(module.state_dict(), g).items():
            sd[prefix + k] = v
    clip_sd = _randomize(clip.state_dict(), g)
    # transformers names -> open_clip names, as ComfyUI's own checkpoint saving does for SD2
    clip_sd = {k.replace("clip_h.", "cond_stage_model.model.", 1): v for k, v in clip_sd.items()}
    sd.update(comfy.diffusers_convert.convert_text_enc_state_dict_v20(clip_sd))
    return sd


def tiny_sd2_checkpoint() -> Path:
    """Path of the cached checkpoint, building it on first use (atomically)."""
    tag = hashlib.sha1(repr((BUILDER_VERSION, UNET_CONFIG)).encode()).hexdigest()[:10]
    path = cache_dir() / f"tiny-sd2-{tag}.safetensors"
    if not path.exists():
        from safetensors.torch import save_file

        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(build_state_dict(), str(tmp), metadata={"builder": BUILDER_VERSION})
        os.replace(tmp, path)
    return path
