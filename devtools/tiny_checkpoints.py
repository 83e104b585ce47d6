"""Shared parts of the random-weight test checkpoints (tiny_sd2, tiny_sd15), for tests and benchmarks.

Real architectures, built with ComfyUI's own classes on the meta device and filled with
random but finite weights, scaled so activations stay O(1); files are built once and cached.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

SD_VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                 "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def cache_dir() -> Path:
    path = Path(os.environ.get("CONES2_TEST_CACHE", Path.home() / ".cache" / "cones2-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def randomize(state_dict: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """fp16 random weights for ``state_dict``'s shapes: 1/sqrt(fan_in) matrices, unit norms, small biases."""
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


def unet_and_vae_state_dict(unet_config: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A ComfyUI UNetModel of ``unet_config`` and the standard SD VAE, under checkpoint prefixes."""
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**unet_config, dtype=torch.float32, operations=comfy.ops.disable_weight_init)
        vae = AutoencoderKL(ddconfig=SD_VAE_CONFIG, embed_dim=4)
    sd = {}
    for prefix, module in (("model.diffusion_model.", unet), ("first_stage_model.", vae)):
        for k, v in randomize(module.state_dict(), generator).items():
            sd[prefix + k] = v
    return sd


def cached_checkpoint(stem: str, version: str, config: dict, build: Callable[[], dict]) -> Path:
    """``cache_dir()/<stem>-<hash>.safetensors``, built by ``build()`` on first use (atomically)."""
    tag = hashlib.sha1(repr((version, config)).encode()).hexdigest()[:10]
    path = cache_dir() / f"{stem}-{tag}.safetensors"
    if not path.exists():
        from safetensors.torch import save_file

        from .comfy_host import load_host

        load_host()  # build() uses ComfyUI's own classes: a fresh process may not have imported them yet

        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(build(), str(tmp), metadata={"builder": version})
        os.replace(tmp, path)
    return path
