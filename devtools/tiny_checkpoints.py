"""Shared parts of the random-weight test checkpoints (tiny_sd2, tiny_sd15, tiny_sdxl), for tests and benchmarks.

Real architectures, built with ComfyUI's own classes and filled with random but finite
weights, scaled so activations stay O(1); files are built once and cached. tiny_sd15 and
tiny_sdxl are saved by ComfyUI's own ``comfy.sd.save_checkpoint`` (``save_random_checkpoint``),
so their keys are those of the real files; tiny_sd2 predates it and writes the same layout itself.
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


def random_like(name: str, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """fp32 random values for the tensor ``name``: 1/sqrt(fan_in) matrices, unit norms, small biases."""
    leaf = name.rsplit(".", 1)[-1]
    if t.ndim >= 2:
        fan_in = t[0].numel()
        std = 0.02 if "embedding" in name else 1.0 / math.sqrt(fan_in)
        return torch.randn(t.shape, generator=generator) * std
    if leaf == "weight" or "norm" in name or leaf in ("g", "gamma"):
        return torch.ones(t.shape)
    if "logit_scale" in name:
        return torch.full(t.shape, math.log(100.0))
    return torch.randn(t.shape, generator=generator) * 0.01


def randomize(state_dict: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """fp16 random weights for ``state_dict``'s shapes (``random_like``); other tensors as they are."""
    return {name: random_like(name, t, generator).to(torch.float16) if t.is_floating_point() else t
            for name, t in state_dict.items()}


def fill_random_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Overwrite ``module``'s floating-point weights in place with ``random_like`` values (memory: one tensor at a time)."""
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if t.is_floating_point():
                t.copy_(random_like(name, t, generator).to(t.dtype))


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


def cached_file(stem: str, version: str, config: dict, write: Callable[[Path], None]) -> Path:
    """``cache_dir()/<stem>-<hash>.safetensors``, written by ``write(path)`` on first use (atomically)."""
    tag = hashlib.sha1(repr((version, config)).encode()).hexdigest()[:10]
    path = cache_dir() / f"{stem}-{tag}.safetensors"
    if not path.exists():
        from .comfy_host import load_host

        load_host()  # writers use ComfyUI's own classes: a fresh process may not have imported them yet

        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def cached_checkpoint(stem: str, version: str, config: dict, build: Callable[[], dict]) -> Path:
    """``cached_file`` of the state dict ``build()`` returns."""
    def write(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file(build(), str(tmp), metadata={"builder": version})

    return cached_file(stem, version, config, write)


def save_random_checkpoint(path: Path, config_class: type, unet_config: dict, version: str, seed: int = 0) -> None:
    """A checkpoint of ``config_class`` (a ``comfy.supported_models`` class) with random fp16 weights.

    The UNet, the family's own text encoder(s) and the SD VAE are ComfyUI's own modules, and
    ``comfy.sd.save_checkpoint`` writes them in the key layout of the family's real files.
    """
    import comfy.model_patcher
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    g = torch.Generator().manual_seed(seed)
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model({})
    fill_random_(model.diffusion_model, g)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    clip = comfy.sd.CLIP(config.clip_target(), model_options={"dtype": torch.float16})
    fill_random_(clip.cond_stage_model, g)
    with torch.device("meta"):
        vae_shape = AutoencoderKL(ddconfig=SD_VAE_CONFIG, embed_dim=4).state_dict()
    vae = comfy.sd.VAE(sd=randomize(vae_shape, g), dtype=torch.float16)
    comfy.sd.save_checkpoint(str(path), patcher, clip, vae, metadata={"builder": version})
