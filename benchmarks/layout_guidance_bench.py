"""Guided vs unguided sampling of the same graph, in one process: wall-time and peak-memory ratios.

    COMFYUI_PATH=~/ComfyUI ~/ComfyUI/.venv/bin/python -m benchmarks.layout_guidance_bench \
        [--ckpt sd2.1.safetensors] [--size 512] [--steps 20] [--repeats 3] [--path explicit|masked]

Both runs sample ``CheckpointLoaderSimple -> Cones2ApplyResidual -> KSampler`` with the same
seed; the guided one goes through ``Cones2LayoutGuidance`` (two subjects, official options).
Runs alternate (unguided, guided, guided, unguided, ...) after a warm-up of each; the
minima and medians of wall time (and, on the CPU, of the process's CPU time, less
disturbed by other processes) are compared. Peak memory: on CUDA ``max_memory_allocated`` during the sampling
call; on the CPU the peak resident set size above the level before the call (sampled
every 2 ms). Without ``--ckpt`` it uses the tiny random-weight SD2-architecture checkpoint
of the tests (a shallow UNet: the ratio then overstates the cross-attention share).
``--path`` forces how guided rows are computed (default: the run's choice for the device).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from scripts.pack_alias import import_pack_core  # run from the checkout's root: python -m benchmarks.X

import_pack_core()
from cones2.devtools.comfy_host import load_host  # noqa: E402


def _glibc():
    """glibc, set to mmap every block over 64 KiB (M_MMAP_THRESHOLD), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = None


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or sampled RSS growth on the CPU."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        import psutil

        self.proc = psutil.Process()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        self.base = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.used = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.used = self.peak - self.base


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="an SD2.x checkpoint file (default: the tests' tiny random SD2)")
    ap.add_argument("--size", type=int, default=512, help="image width and height in pixels")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--path", choices=["explicit", "masked"], help="force GuidanceRun's attention path")
    args = ap.parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout and run with its Python")

    global _LIBC
    _LIBC = _glibc()
    import_pack_core()
    host = load_host()
    import comfy.model_management as mm
    import torch

    folder = host.models_dir("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    if args.ckpt:
        source = Path(args.ckpt).resolve()
    else:
        from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint

        source = tiny_sd2_checkpoint()
    link = folder / source.name
    if not link.exists():
        link.symlink_to(source)
    if args.path:
        run_class = sys.modules[f"{host.pack.__name__}.guidance.layout_guidance"].GuidanceRun
        run_class.explicit = lambda self, device: args.path == "explicit"
    model, clip, _vae = host.run("CheckpointLoaderSimple", ckpt_name=link.name)
    (pos,) = host.run("Cones2ApplyResidual", clip=clip, text="a photo of a dog and a cat on the beach")
    (neg,) = host.run("CLIPTextEncode", clip=clip, text="blurry, low quality")
    (latent,) = host.run("EmptyLatentImage", width=args.size, height=args.size, batch_size=1)
    L = sys.modules[f"{host.pack.__name__}.guidance.layout"]
    s = args.size
    layout = L.Layout(s, s, (L.LayoutSubject("dog", box=L.Box(s // 16, s // 8, s * 7 // 16, s * 3 // 4)),
                             L.LayoutSubject("cat", box=L.Box(s // 2, s // 8, s * 7 // 16, s * 3 // 4))))
    (guided,) = host.run("Cones2LayoutGuidance", model=model, layout=layout, weight=0.08, suppression=-1e8,
                         suppression_scope="outside own region (official)",
                         sigma_schedule="log(1+sigma^2)*std (official)", start_percent=0.0, end_percent=1.0)
    device = mm.get_torch_device()

    def sample(m):
        with PeakMemory(device) as mem:
            t, c = time.perf_counter(), time.process_time()
            host.run("KSampler", model=m, seed=1, steps=args.steps, cfg=7.5, sampler_name=args.sampler,
                     scheduler="normal", positive=pos, negative=neg, latent_image=latent, denoise=1.0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed, cpu = time.perf_counter() - t, time.process_time() - c
        return elapsed, cpu, mem.used

    runs = {"unguided": model, "guided": guided}
    for m in runs.values():  # warm-up: model load, allocator, kernels
        sample(m)
    results = {k: [] for k in runs}
    order = ["unguided", "guided"]
    for r in range(args.repeats):
        for k in order if r % 2 == 0 else order[::-1]:
            results[k].append(sample(runs[k]))

    print(f"device: {device}  ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads)  attention: {_attention_name()}")
    print(f"checkpoint: {source.name}  {args.size}x{args.size}  {args.steps} steps {args.sampler}  "
          f"repeats: {args.repeats}  path: {args.path or 'auto'}")
    stats = {}
    for k, vals in results.items():
        wall, cpu, mem = ([v[i] for v in vals] for i in range(3))
        stats[k] = {"wall min": min(wall), "wall median": statistics.median(wall), "cpu min": min(cpu),
                    "peak memory": statistics.median(mem)}
        print(f"{k:>9}: wall {', '.join(f'{t:.3f}' for t in wall)} s; process CPU "
              f"{', '.join(f'{t:.2f}' for t in cpu)} s; peak memory {stats[k]['peak memory'] / 2**20:.1f} MiB")
    ratios = {key: stats["guided"][key] / stats["unguided"][key] if stats["unguided"][key] > 0 else float("nan")
              for key in stats["guided"]}
    print("ratio guided/unguided: " + "  ".join(f"{key} {value:.3f}" for key, value in ratios.items()))


def _attention_name():
    import comfy.ldm.modules.attention as attention

    return attention.optimized_attention.__name__


if __name__ == "__main__":
    main()
