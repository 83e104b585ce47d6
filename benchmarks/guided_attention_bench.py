"""One cross-attention layer of SD2 with layout guidance, per attention path: times and ratios.

    COMFYUI_PATH=~/ComfyUI ~/ComfyUI/.venv/bin/python -m benchmarks.guided_attention_bench \
        [--size 512] [--repeats 20] [--dtype float32|float16|bfloat16] [--device cpu|cuda] [--attention pytorch]

For each cross-attention shape of the SD2 UNet at ``--size`` (positive + negative chunk,
one image each, 77 tokens), it times ComfyUI's plain attention on the whole batch (the
call made without the pack: the baseline) and ``GuidanceRun.attention`` (the whole batch
plus the guided positive rows) with each path forced: "masked" (std without S, mask, the
host's masked attention) and "explicit" (S once in float32, std and softmax from it).
Attention functions are ComfyUI's own (``optimized_attention`` and the pack's
``masked_attention()`` choice). Prints medians per layer, ratios against the baseline and
explicit/masked (minimum over repeats), and totals weighted by how many UNet blocks have each shape.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from scripts.pack_alias import import_pack_core  # run from the checkout's root: python -m benchmarks.X

import_pack_core()
from cones2.devtools.comfy_host import load_host  # noqa: E402

# SD2's UNet: (latent downsampling, heads of 64 channels, transformer blocks with that shape)
LEVELS = [(1, 5, 5), (2, 10, 5), (4, 20, 5), (8, 20, 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="image width and height in pixels")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dtype", default=None, help="default: float32 on the CPU, float16 on CUDA")
    ap.add_argument("--device", default=None)
    ap.add_argument("--attention", default=None, help="use ComfyUI's attention_<NAME> (pytorch, sub_quad, split, "
                    "basic...) as its optimized and masked attention, as its command-line flags would")
    args = ap.parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout and run with its Python")

    import_pack_core()
    host = load_host()
    import comfy.ldm.modules.attention as attention
    import comfy.model_management as mm
    import torch

    pack = host.pack.__name__
    conditioning_keys = sys.modules[f"{pack}.guidance.conditioning_keys"]
    lg = sys.modules[f"{pack}.guidance.layout_guidance"]
    L = sys.modules[f"{pack}.guidance.layout"]
    prompt_tokens = sys.modules[f"{pack}.guidance.prompt_tokens"]
    step_range = sys.modules[f"{pack}.guidance.step_range"]
    patch = sys.modules[f"{pack}.comfy_adapters.guidance_patch"]

    if args.attention:
        attention.optimized_attention = attention.optimized_attention_masked = getattr(
            attention, f"attention_{args.attention}")
    device = torch.device(args.device) if args.device else mm.get_torch_device()
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if device.type == "cpu" else torch.float16)
    s = args.size
    layout = L.Layout(s, s, (L.LayoutSubject("dog", box=L.Box(s // 16, s // 8, s * 7 // 16, s * 3 // 4)),
                             L.LayoutSubject("cat", box=L.Box(s // 2, s // 8, s * 7 // 16, s * 3 // 4))))
    words = ["a", "photo", "of", "a", "dog", "and", "a", "cat"]
    tokens = prompt_tokens.PromptTokens(length=77, rows=tuple(range(1, 9)), pieces=tuple(w + "</w>" for w in words))
    pu, nu = uuid.uuid4(), uuid.uuid4()
    positive = [{"uuid": pu, conditioning_keys.PROMPT_TOKENS: tokens.to_json(), "cross_attn": torch.zeros(1, 77, 1024)}]

    def make(path):
        run = lg.GuidanceRun(layout, lg.GuidanceSettings(), step_range.StepRange(), "bench",
                             attend=patch.host_attention, positive=lambda: positive, path=path)
        run.bind()  # what the sampler hooks do when sampling
        run.model_call([positive, [{"uuid": nu}]], torch.tensor([7.0]))
        return run

    runs = {path: make(path) for path in ("masked", "explicit")}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fns: dict) -> dict:
        """Minimum time of each function over the repeats, run in rotation so that load from
        other processes hits all of them alike."""
        for fn in fns.values():
            fn()
        sync()
        out = {key: [] for key in fns}
        for r in range(args.repeats):
            keys = list(fns) if r % 2 == 0 else list(fns)[::-1]
            for key in keys:
                t = time.perf_counter()
                fns[key]()
                sync()
                out[key].append(time.perf_counter() - t)
        return {key: min(times) for key, times in out.items()}

    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads)  dtype: {dtype}  attention: {attention.optimized_attention.__name__}"
          f"  masked: {patch.masked_attention().__name__}  size: {s}  repeats: {args.repeats}")
    totals = {"plain": 0.0, "masked": 0.0, "explicit": 0.0}
    g = torch.Generator(device="cpu").manual_seed(0)
    def layer(heads, h, w):
        c = heads * 64
        q = torch.randn(2, h * w, c, generator=g).to(device, dtype)
        k = torch.randn(2, 77, c, generator=g).to(device, dtype)
        v = torch.randn(2, 77, c, generator=g).to(device, dtype)
        sigma = torch.tensor([7.0], device=device)
        extra = {"n_heads": heads, "dim_head": 64, "activations_shape": [2, c, h, w], "cond_or_uncond": [0, 1],
                 "uuids": [pu, nu], "sigmas": sigma, "attn_precision": torch.float32}

        fns = {"plain": lambda: patch.host_attention(q, k, v, None, extra)}
        for path, run in runs.items():
            fns[path] = lambda run=run: run.attention(q, k, v, extra)
        with torch.inference_mode():
            return timed(fns)

    for down, heads, blocks in LEVELS:
        h = w = s // 8 // down
        row = layer(heads, h, w)
        for key in totals:
            totals[key] += blocks * row[key]
        print(f"{h}x{w} {heads} heads (x{blocks}): plain {row['plain'] * 1e3:.2f} ms  masked "
              f"{row['masked'] * 1e3:.2f} ms ({row['masked'] / row['plain']:.2f}x)  explicit "
              f"{row['explicit'] * 1e3:.2f} ms ({row['explicit'] / row['plain']:.2f}x)  explicit/masked "
              f"{row['explicit'] / row['masked']:.2f}")
    print(f"all cross-attention layers: plain {totals['plain'] * 1e3:.1f} ms  masked/plain "
          f"{totals['masked'] / totals['plain']:.2f}  explicit/plain {totals['explicit'] / totals['plain']:.2f}  "
          f"explicit/masked {totals['explicit'] / totals['masked']:.2f}")


if __name__ == "__main__":
    main()
