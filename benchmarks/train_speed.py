#!/usr/bin/env python3
"""Training speed and memory: the pack's training path against an authors-like baseline, same process.

    COMFYUI_PATH=~/ComfyUI ~/ComfyUI/.venv/bin/python -m benchmarks.train_speed [--checkpoint sd21.safetensors]

On a GPU: 512 px, the full-size SD2 UNet (a real checkpoint, or random weights of the exact
SD2.1 architecture, which cost the same time), timing N steps of each variant, projecting
3,000 steps (setup + 3000 x step time) and reading peak GPU memory. Goal: the default
variant under 10 minutes and 12 GB on one H100.

On a CPU: the tiny test checkpoint at 64 px and a few steps: throughput and ratios only,
nothing like GPU numbers.

Variants (all through comfy_adapters/training.train_with_comfy, the code the node runs):
- baseline: what the authors' script does per step, at 512 px: fp32 UNet, no activation
  checkpointing, the whole encoder, their regularizer on the bare prompt;
- official-fast: the same method as the baseline with this pack's engineering (bf16
  autocast on CUDA, activation checkpointing, fused AdamW): the speed-up of the code alone;
- default: the node's defaults (bf16 autocast on CUDA, checkpointing, paper regularizer
  over 4 corpus sentences per step, the whole encoder): the paper's method costs 4 more
  encoder passes per step than the authors' regularizer;
- low-memory: default with only the encoder's last 4 layers training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from scripts.pack_alias import (
    import_pack_core,  # run from the checkout's root: python -m benchmarks.train_speed
)

import_pack_core()

SD21_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": True, "context_dim": 1024, "num_head_channels": 64,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def random_full_sd2() -> Path:
    """A cached checkpoint with random weights and the exact SD2.1 UNet architecture (speed = the real one)."""
    from cones2.devtools.tiny_checkpoints import cached_checkpoint
    from cones2.devtools.tiny_sd2 import build_state_dict

    return cached_checkpoint("random-full-sd21", "random-full-sd21-v1", SD21_UNET, lambda: build_state_dict(SD21_UNET))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"))
    p.add_argument("--checkpoint", type=Path, help="a real SD2.x checkpoint (default: random full-size SD2.1)")
    p.add_argument("--steps", type=int, help="steps timed per variant (default 40 on GPU, 3 on CPU)")
    p.add_argument("--resolution", type=int, help="default 512 on GPU, 64 on CPU")
    p.add_argument("--variants", default="baseline,official-fast,default,low-memory")
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args(argv)
    if not args.comfyui:
        p.error("set COMFYUI_PATH or pass --comfyui")
    from cones2.devtools.comfy_host import comfyui_on_path

    comfyui_on_path(Path(args.comfyui).expanduser().resolve())
    import comfy.cli_args
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    if not gpu:
        comfy.cli_args.args.cpu = True
    import comfy.model_management
    import comfy.sd
    from cones2.comfy_adapters.training import train_with_comfy, training_mode
    from cones2.training.trainer import TrainSettings

    steps = args.steps or (40 if gpu else 3)
    resolution = args.resolution or (512 if gpu else 64)
    if args.checkpoint:
        ckpt = args.checkpoint
    elif gpu:
        ckpt = random_full_sd2()
    else:
        from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint

        ckpt = tiny_sd2_checkpoint()
    device = comfy.model_management.get_torch_device()
    print(f"device {device} ({torch.cuda.get_device_name() if gpu else 'CPU, ' + str(torch.get_num_threads()) + ' threads'}); "
          f"checkpoint {ckpt.name}; {resolution} px; {steps} timed steps per variant", flush=True)
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=True)
    g = torch.Generator().manual_seed(0)
    photos = [torch.rand(resolution + 64 * i, resolution, 3, generator=g) for i in range(4)]
    corpus = 1000 if gpu else 8
    variants = {
        "baseline": TrainSettings(steps=steps, resolution=resolution, precision="fp32", gradient_checkpointing=False,
                                  preservation="official", residual_from="templates", training_prompt="{}",
                                  corpus_size=corpus),
        "official-fast": TrainSettings(steps=steps, resolution=resolution, preservation="official",
                                       residual_from="templates", training_prompt="{}", corpus_size=corpus),
        "default": TrainSettings(steps=steps, resolution=resolution, corpus_size=corpus),
        "low-memory": TrainSettings(steps=steps, resolution=resolution, train_layers=4, corpus_size=corpus),
    }
    rows = []
    for name in args.variants.split(","):
        settings = variants[name]
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        stamps = []
        try:
            with training_mode():
                result = train_with_comfy(model, clip, vae, photos, "dog", settings,
                                          progress=lambda *_, s=stamps: s.append(time.perf_counter()))
        except Exception as e:  # an OOM in the baseline is a result too
            print(f"{name:>11}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        if gpu:
            torch.cuda.synchronize()
        total = time.perf_counter() - start
        # the first step carries one-off costs (kernel selection, allocations): time the others
        per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else result.seconds
        setup = total - result.seconds
        peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
        rows.append((name, per_step, setup, setup + 3000 * per_step, peak))
        print(f"{name:>11}: {per_step * 1000:8.1f} ms/step  ({1 / per_step:6.2f} steps/s)  setup {setup:6.1f} s  "
              f"3000 steps ~ {(setup + 3000 * per_step) / 60:6.1f} min  peak {peak:5.2f} GiB", flush=True)
        comfy.model_management.soft_empty_cache()
    base = next((r for r in rows if r[0] == "baseline"), None)
    if base:
        for name, per_step, _, _, peak in rows:
            if name != "baseline":
                mem = f", memory x{peak / base[4]:.2f}" if gpu else ""
                print(f"{name} vs baseline: step time x{per_step / base[1]:.2f} ({base[1] / per_step:.2f}x faster){mem}")
    if gpu:
        default = next((r for r in rows if r[0] == "default"), None)
        if default:
            ok = default[3] <= 600 and default[4] <= 12
            print(f"goal (3000 steps <= 10 min, <= 12 GiB): {'met' if ok else 'NOT met'} "
                  f"({default[3] / 60:.1f} min, {default[4]:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
