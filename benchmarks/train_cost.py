#!/usr/bin/env python3
"""Training cost, counted: FLOPs per step and the peak of live tensor bytes, per family and preset.

    COMFYUI_PATH=~/ComfyUI ~/ComfyUI/.venv/bin/python -m benchmarks.train_cost [--batch-size 1] [--families sd15,sd21,sdxl]

COUNTED ON THE CPU, NOT MEASURED ON A GPU. Every model is built at its full size with
ComfyUI's own classes (the host's supported_models configs) under FakeTensorMode: no weight
is allocated and no value computed, yet every op runs with its real shapes and dtypes. Attention
is ComfyUI's pytorch attention (torch's fused SDPA), what it runs on a GPU. So
- FLOPs come from torch.utils.flop_counter (matmuls, convolutions, attention; 2 per multiply-add);
- "peak" is the highest sum of live tensor storages (benchmarks/cost_counting.LiveBytes):
  weights, the trainable encoder, its gradients and AdamW state, cached latents and targets,
  activations saved for backward, temporaries. A CUDA device holds this plus its allocator's
  rounding and fragmentation, the CUDA context (~0.5 GiB) and kernels' workspaces.
The second training step is counted (AdamW's state then exists, as in every later step).

Rows:
- "authors' step": what the authors' train_cones2.py does per step, counted the same way: the
  VAE encodes the photo every step, the fp32 UNet runs forward and backward to the context
  (its weights used as they are, no copies), the whole text encoder trains (fp32, AdamW), their
  regulariser on the bare prompt (its frozen target cached, as here). The ratios divide by it.
- pack presets, through the pack's own training step (training/trainer.train_residual with
  comfy_adapters/training.ComfyDenoiser) where this branch trains the family (SD1.5, SD2.x):
  default (bf16 autocast as on CUDA, checkpointing, the paper's regulariser, 4 sentences per step),
  low-memory (default + train_layers 4), authors' (their settings: fp32, no checkpointing,
  their regulariser and prompt). SDXL goes through the pack's step too once the checkout trains
  it (``pack_trains``: ConcatTextEncoder and ComfyDenoiser(y=)); until then its rows are counted
  by this file's own step (``count_direct_step``) with ComfyUI's UNet and the pack's
  ComfyDenoiser (same checkpointing and weight copies), and say "direct".
The UNet's weights are stored as --unet-dtype says; by default as ComfyUI stores them on CUDA
(fp16) for the bf16 presets, and in fp32 for the authors' preset, as with --fp32-unet (what the
preset means; without that flag ComfyUI would hold them in fp16 and run the UNet in fp16).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

try:  # run from the checkout's root: python -m benchmarks.train_cost
    from scripts.pack_alias import import_pack_core
except ImportError:  # imported as cones2.benchmarks.train_cost (the tests): the alias is in place
    pass
else:
    import_pack_core()

_BASE = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
         "in_channels": 4, "model_channels": 320, "use_temporal_attention": False, "use_temporal_resblock": False}
# The full-size UNets, as comfy/model_detection.py (unet_config_from_diffusers_unet) describes them
SD15_UNET = {**_BASE, "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}
SD21_UNET = {**_BASE, "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
             "context_dim": 1024, "num_head_channels": 64, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}
SDXL_UNET = {**_BASE, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
             "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10]}
# SD's VAE encoder (comfy/sd.py's default encoder_config); SDXL's has the same architecture
VAE_ENCODER = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
               "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


@dataclass(frozen=True)
class Family:
    name: str
    host_config: str  # the class comfy/supported_models.py matches
    unet: dict
    encoders: tuple  # ClipTextConfig keyword sets; SDXL: CLIP-L then bigG, outputs concatenated
    tokenizer: tuple[str, str, str]  # (module, class, key) of ComfyUI's tokenizer
    resolutions: tuple[int, ...]


CLIP_L_LAST = {"width": 768, "heads": 12, "mlp_width": 3072, "layers": 12, "activation": "quick_gelu"}
CLIP_L_PENULTIMATE = {**CLIP_L_LAST, "layers": 11}
OPENCLIP_H_PENULTIMATE = {}  # ClipTextConfig's defaults: 1024 wide, 16 heads, 23 of 24 layers
OPENCLIP_G_PENULTIMATE = {"width": 1280, "heads": 20, "mlp_width": 5120, "layers": 31, "activation": "gelu"}

FAMILIES = {
    "sd15": Family("SD1.5", "SD15", SD15_UNET, (CLIP_L_LAST,), ("comfy.sd1_clip", "SD1Tokenizer", "l"), (512,)),
    "sd21": Family("SD2.1", "SD20", SD21_UNET, (OPENCLIP_H_PENULTIMATE,), ("comfy.text_encoders.sd2_clip", "SD2Tokenizer", "h"),
                   (512, 768)),
    "sdxl": Family("SDXL", "SDXL", SDXL_UNET, (CLIP_L_PENULTIMATE, OPENCLIP_G_PENULTIMATE),
                   ("comfy.sdxl_clip", "SDXLTokenizer", "l"), (1024,)),
}

REFERENCE = "authors' step"


def presets(authors_preset: dict) -> dict[str, dict]:
    """The pack's presets as TrainSettings overrides (the node's "auto" precision is bf16 on CUDA)."""
    authors = {k: v for k, v in authors_preset.items() if k not in ("resolution", "steps", "learning_rate")}
    return {
        "default": {"precision": "bf16"},
        "low-memory": {"precision": "bf16", "train_layers": 4},
        "authors'": {**authors, "precision": "fp32", "gradient_checkpointing": False},
    }


class _Counted(Exception):
    """Raised from the progress callback once the counted step is done (skips the residual's extraction)."""


def host_setup(comfyui: Path):
    from cones2.devtools.comfy_host import comfyui_on_path

    comfyui_on_path(comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # counting runs on the CPU; nothing is allocated anyway
    # the attention ComfyUI runs on a GPU (torch's fused SDPA, which keeps no attention matrix for backward);
    # on a CPU it would pick sub-quadratic chunked attention, whose memory is not a GPU's
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401


def pack_trains(family: Family) -> bool:
    """Whether this checkout's training step takes the family: one text encoder, or (SDXL) the pack's
    ConcatTextEncoder and a ComfyDenoiser that passes the ADM vector ``y`` (the family-training branch)."""
    import inspect

    from cones2.comfy_adapters.training import ComfyDenoiser
    from cones2.training import clip_text

    if len(family.encoders) == 1:
        return True
    return hasattr(clip_text, "ConcatTextEncoder") and "y" in inspect.signature(ComfyDenoiser).parameters


def build_unet(family: Family, unet_dtype, *, fake: bool = True):
    """A ModelPatcher around the family's full-size UNet, built by the host's model config (fake weights under
    the caller's FakeTensorMode; real ones, small and random, for a check against a real run)."""
    import comfy.model_detection
    import comfy.model_patcher
    import torch

    config = comfy.model_detection.model_config_from_unet_config(dict(family.unet))
    if type(config).__name__ != family.host_config:
        raise RuntimeError(f"{family.name}: the host matches this UNet config as {type(config).__name__}, "
                           f"not {family.host_config}")
    config.set_inference_dtype(unet_dtype, None)
    model = config.get_model({}, "", device=torch.device("cpu"))
    model.requires_grad_(False)
    if not fake:  # ComfyUI leaves weights uninitialised (they are loaded): values that keep the loss finite
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def build_encoders(family: Family):
    from cones2.training.clip_text import ClipTextConfig, ClipTextEncoder

    return [ClipTextEncoder(ClipTextConfig(**kw)) for kw in family.encoders]


def host_tokenize(family: Family):
    """``text -> content ids`` and the special tokens, through ComfyUI's own tokenizer."""
    import importlib

    from cones2.guidance.prompt_tokens import content_tokens
    from cones2.training.prompt_ids import SpecialTokens

    module, cls, key = family.tokenizer
    tokenizer = getattr(importlib.import_module(module), cls)()
    inner = getattr(tokenizer, f"clip_{key}")
    special = SpecialTokens(start=inner.start_token, end=inner.end_token,
                            pad=inner.pad_token if inner.pad_token is not None else inner.end_token,
                            length=inner.max_length)

    def tokenize(text: str) -> list[int]:
        pairs = tokenizer.tokenize_with_weights(text)[key]
        return [token for _, token, _ in content_tokens(pairs, special.start, special.end)]

    return tokenize, special


def count_pack_step(family: Family, settings, unet_dtype, corpus_size: int, *, fake: bool = True):
    """Count the second step of the pack's own training loop (train_residual + ComfyDenoiser).

    ``fake=False`` runs it for real (small families only: the check that fake counting equals a real run)."""
    import torch
    from cones2.benchmarks.cost_counting import CostMeter
    from cones2.comfy_adapters import training as adapters
    from cones2.training import trainer

    tokenize, special = host_tokenize(family)
    settings = replace(settings, steps=3, corpus_size=corpus_size, checkpoint_every=0)
    latent = settings.resolution // 8
    with CostMeter(fake=fake) as meter, _fingerprints_off(trainer):
        encoders = build_encoders(family)
        patcher = build_unet(family, unet_dtype, fake=fake)
        extra = {}
        if len(encoders) == 1:
            (encoder,) = encoders
        else:  # SDXL: CLIP-L pads with its end token, bigG with 0 (ComfyUI's tokenizers); y = pooled vector + sizes
            from cones2.training.clip_text import ConcatTextEncoder

            encoder = ConcatTextEncoder(encoders, pads=(special.end, 0), end=special.end)
            extra["y"] = torch.zeros(1, family.unet["adm_in_channels"])
        photos = [torch.rand(settings.resolution, settings.resolution, 3) for _ in range(4)]

        def encode_image(pixels):  # the pack encodes each photo once, before the steps: not in a step
            return torch.zeros(pixels.shape[0], 4, latent, latent)

        def progress(done, total, _losses):
            if done == 1:
                meter.start()
            elif done == 2:
                meter.stop()
                raise _Counted

        with adapters.training_mode(), \
                adapters.ComfyDenoiser(patcher, gradient_checkpointing=settings.gradient_checkpointing,
                                       **extra) as denoiser, \
                adapters.host_training_flag():
            try:
                trainer.train_residual(encoder=encoder, tokenize=tokenize, phrase="dog", images=photos,
                                       encode_image=encode_image, denoiser=denoiser,
                                       alphas_cumprod=adapters.alphas_cumprod(patcher), prediction="eps",
                                       settings=settings, special=special, device=torch.device("cpu"),
                                       progress=progress)
            except _Counted:
                pass
    return meter.cost


@contextlib.contextmanager
def _fingerprints_off(trainer):
    """The run's bookkeeping hashes read values (numpy), which fake tensors do not hold; they cost nothing on a
    GPU step, so they are replaced by constants while counting."""
    saved = trainer.weights_fingerprint, trainer.images_fingerprint
    trainer.weights_fingerprint = trainer.images_fingerprint = lambda *_: "counted"
    try:
        yield
    finally:
        trainer.weights_fingerprint, trainer.images_fingerprint = saved


def count_direct_step(family: Family, *, resolution: int, batch_size: int, unet_dtype, precision: str | None,
                      checkpointing: bool, train_layers: int, regulariser: str, vae_each_step: bool,
                      copies: bool, sentences: int = 4):
    """Count the second of two steps written out here: the authors' step (``vae_each_step``, plain UNet call),
    or SDXL's pack presets (through ComfyDenoiser's checkpointing and weight copies, ``copies``) until the
    pack trains SDXL. Mirrors trainer._train's step: encode, noise, UNet under autocast, loss, backward, clip,
    AdamW. Frozen encoder targets are computed once before the steps (the pack's and the authors' way)."""
    import torch
    from comfy.ldm.modules.diffusionmodules.model import Encoder as VaeEncoder
    from cones2.benchmarks.cost_counting import CostMeter
    from cones2.comfy_adapters import training as adapters
    from cones2.training.losses import diffusion_loss, official_preservation_loss, paper_preservation_loss

    latent = resolution // 8
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[precision]
    with CostMeter(fake=True) as meter, adapters.training_mode():
        encoders = build_encoders(family)
        patcher = build_unet(family, unet_dtype)
        vae = VaeEncoder(**VAE_ENCODER) if vae_each_step else None
        if vae is not None:
            vae.requires_grad_(False)
        adm = family.unet.get("adm_in_channels")
        y = torch.zeros(batch_size, adm) if adm else None  # SDXL: frozen pooled vector + sizes
        n_ids = 1 + (sentences if regulariser == "paper" else 0)
        ids = torch.zeros(n_ids, 77, dtype=torch.long)
        starts = [enc.first_trained_layer(train_layers) for enc in encoders]
        with torch.no_grad():
            prefixes = [enc.embed_prefix(ids, s) for enc, s in zip(encoders, starts, strict=True)]
            frozen = torch.cat([enc.forward_from(p, s) for enc, p, s in zip(encoders, prefixes, starts, strict=True)],
                               dim=-1)
            if not any(starts):
                prefixes = None
        params = [p for enc in encoders for p in enc.trainable_parameters(train_layers)]
        for enc in encoders:
            enc.gradient_checkpointing = checkpointing
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=1e-2)
        pixels = torch.rand(batch_size, 3, resolution, resolution)
        bank = torch.zeros(batch_size, 4, latent, latent)
        denoiser = adapters.ComfyDenoiser(patcher, gradient_checkpointing=checkpointing) if copies else None
        if denoiser is not None:
            denoiser.load()
        diffusion_model = patcher.model.diffusion_model

        def step():
            if vae is not None:
                with torch.no_grad():
                    moments = vae(pixels * 2 - 1)
                    x0 = moments[:, :4] * 0.18215
            else:
                x0 = bank
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (batch_size,))
            parts = []
            for i, enc in enumerate(encoders):
                hidden = prefixes[i] if prefixes is not None else enc.embed_prefix(ids, 0)
                parts.append(enc.forward_from(hidden, starts[i]))
            encoded = torch.cat(parts, dim=-1)
            context = encoded[:1].expand(batch_size, -1, -1)
            x_t = 0.5 * x0 + 0.5 * noise
            timestep = t.float()
            with torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext():
                run_dtype = dtype or unet_dtype
                pred = diffusion_model(x_t.to(run_dtype), timestep, context=context.to(run_dtype),
                                       y=None if y is None else y.to(run_dtype),
                                       transformer_options={"cond_or_uncond": [0]})
            loss = diffusion_loss(pred, noise)
            if regulariser == "paper":
                mask = torch.zeros(sentences, 77, dtype=torch.bool)
                loss = loss + 1e-3 * paper_preservation_loss(encoded[1:], frozen[1:], mask)
            else:
                loss = loss + official_preservation_loss(encoded[0], frozen[0], 2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with denoiser if denoiser is not None else contextlib.nullcontext():
            step()
            meter.start()
            step()
            meter.stop()
    return meter.cost


def breakdown(cost) -> str:
    top = {k: v for k, v in cost.flops_by_module.items() if "." not in k and k != "Global"}
    unet = top.pop("UNetModel", 0)
    vae = top.pop("Encoder", 0)
    other = cost.flops - unet - vae
    parts = [f"UNet {unet / 1e12:.2f}", f"encoder+rest {other / 1e12:.2f}"]
    if vae:
        parts.insert(1, f"VAE {vae / 1e12:.2f}")
    return "TFLOP: " + ", ".join(parts) + f"; resident before the step {cost.start_bytes / 2**30:.2f} GiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"))
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--presets", default="default,low-memory,authors'")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--resolution", type=int, help="one resolution for every family (default: each family's own)")
    p.add_argument("--corpus-size", type=int, default=1000,
                   help="sentences of the paper's corpus; their frozen targets stay resident (default 1000, the paper's)")
    p.add_argument("--unet-dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="how the UNet's weights are stored; auto: fp16 for the bf16 presets (ComfyUI's choice on "
                        "CUDA), fp32 for the authors' preset (as --fp32-unet; the authors' own step is always fp32)")
    args = p.parse_args(argv)
    if not args.comfyui:
        p.error("set COMFYUI_PATH or pass --comfyui")
    host_setup(Path(args.comfyui).expanduser().resolve())
    import torch
    from cones2.training.train_settings import AUTHORS_PRESET, TrainSettings

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    chosen = presets(AUTHORS_PRESET)
    print("COUNTED ON THE CPU, NOT MEASURED ON A GPU: full-size architectures under FakeTensorMode (no weights), "
          "FLOPs by torch.utils.flop_counter, peak = the highest sum of live tensor storages, second training step. "
          f"batch size {args.batch_size}; UNet weights stored in {args.unet_dtype} (auto: fp16 under bf16 autocast, "
          f"fp32 for fp32); corpus {args.corpus_size} "
          "sentences.", flush=True)
    header = f"{'family':<7} {'preset':<14} {'res':>5} {'TFLOP/step':>10} {'peak GiB':>9} {'xFLOP':>6} {'xpeak':>6}  how; breakdown"
    print(header)
    print("-" * len(header))
    t_all = time.perf_counter()
    rows = []
    for key in args.families.split(","):
        family = FAMILIES[key]
        for resolution in ([args.resolution] if args.resolution else family.resolutions):
            t0 = time.perf_counter()
            ref = count_direct_step(family, resolution=resolution, batch_size=args.batch_size, unet_dtype=torch.float32,
                                    precision=None, checkpointing=False, train_layers=0, regulariser="official",
                                    vae_each_step=True, copies=False)
            rows.append((family.name, REFERENCE, resolution, ref, ref, "direct (their script's step)",
                         time.perf_counter() - t0))
            _print(rows[-1])
            for name in args.presets.split(","):
                t0 = time.perf_counter()
                over = chosen[name]
                settings = TrainSettings.from_values({**over, "resolution": resolution, "batch_size": args.batch_size})
                unet_dtype = dtypes[args.unet_dtype if args.unet_dtype != "auto"
                                    else "fp32" if settings.precision == "fp32" else "fp16"]
                if pack_trains(family):
                    cost = count_pack_step(family, settings, unet_dtype, args.corpus_size)
                    how = "pack: train_residual + ComfyDenoiser"
                else:
                    cost = count_direct_step(
                        family, resolution=resolution, batch_size=args.batch_size, unet_dtype=unet_dtype,
                        precision=None if settings.precision == "fp32" else settings.precision,
                        checkpointing=settings.gradient_checkpointing, train_layers=settings.train_layers,
                        regulariser=settings.preservation, vae_each_step=False, copies=True,
                        sentences=settings.sentences_per_step)
                    how = "direct (no SDXL training path on this branch) + ComfyDenoiser"
                rows.append((family.name, name, resolution, cost, ref, how, time.perf_counter() - t0))
                _print(rows[-1])
    print(f"counted {len(rows)} steps in {time.perf_counter() - t_all:.0f} s")
    return 0


def _print(row) -> None:
    family, preset, res, cost, ref, how, seconds = row
    print(f"{family:<7} {preset:<14} {res:>5} {cost.tflop:>10.2f} {cost.peak_gib:>9.2f} "
          f"{cost.flops / ref.flops:>6.2f} {cost.peak_bytes / ref.peak_bytes:>6.2f}  {how}; {breakdown(cost)} "
          f"[{seconds:.0f} s]", flush=True)


if __name__ == "__main__":
    sys.exit(main())
