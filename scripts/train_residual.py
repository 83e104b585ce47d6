#!/usr/bin/env python3
"""Train a Cones 2 subject residual headless, with ComfyUI's own loaders (the same code as the node).

    COMFYUI_PATH=~/ComfyUI ~/ComfyUI/.venv/bin/python scripts/train_residual.py \\
        --checkpoint v2-1_512-ema-pruned.safetensors --images photos/dog --phrase dog

Needs a ComfyUI checkout (COMFYUI_PATH or --comfyui) and a Python that runs it. The residual
is written into ComfyUI's models/cones2_residuals (or --output-dir / --output), never over an
existing file. Paths on this command line are the local user's own and are used as given;
--resume and --checkpoint-file must name training checkpoints (``*.cones2-train.safetensors``). --official switches every default to the authors' train_cones2.py settings.

Exit status: 0 done; 1 an error: line (bad input, NaN, out of memory); 2 a malformed command
line; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__:  # imported as cones2.scripts.train_residual (tests)
    from .pack_alias import import_pack_core
else:  # run as a file: Python put scripts/ first on sys.path
    from pack_alias import import_pack_core

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def add_setting_flags(group) -> None:
    """One flag per training setting, made from its declaration (training/train_settings.py)."""
    from cones2.training.train_settings import options

    for s in options():
        text = f"{s.help} Default: {s.default}.".replace("%", "%%")
        if s.kind is bool:
            if s.option.off_flag:
                flags, text = [s.option.off_flag], f"turn off (on by default): {s.help}".replace("%", "%%")
            else:
                flags, text = ["--" + s.name.replace("_", "-"), *s.option.aliases], f"{s.help} Off by default."
            group.add_argument(*flags, dest=s.name, action="store_const", const=not s.default, help=text)
            continue
        choices = [c.value for c in s.option.choices] if s.option.choices else None
        group.add_argument("--" + s.name.replace("_", "-"), *s.option.aliases, dest=s.name, type=s.kind,
                           choices=choices, help=text)


def parse_args(argv=None):
    import_pack_core()
    from cones2.training.train_settings import AUTHORS_PRESET

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="SD1.x, SD2.x or SDXL checkpoint: a path, or a name in ComfyUI's models/checkpoints")
    p.add_argument("--images", required=True, nargs="+", type=Path, help="a folder of photos, or photo files")
    p.add_argument("--phrase", required=True, help="the subject's class word or phrase, e.g. dog, 'robot toy'")
    p.add_argument("--official", action="store_true",
                   help="the authors' settings: " + ", ".join(f"{k} {v}" for k, v in AUTHORS_PRESET.items())
                   + " (explicit options still win)")
    add_setting_flags(p.add_argument_group("training (defaults: the paper)"))
    p.add_argument("--prediction", choices=["auto", "eps", "v"], default="auto",
                   help="override the checkpoint's prediction type, as core ModelSamplingDiscrete does "
                        "(default auto)")
    o = p.add_argument_group("output")
    o.add_argument("--output", type=Path, help="residual file to write (.safetensors; must not exist)")
    o.add_argument("--output-dir", type=Path, help="folder for the residual (default: models/cones2_residuals)")
    o.add_argument("--name", help="file name stem (default: the phrase); a taken name gets _2, _3...")
    o.add_argument("--checkpoint-file", type=Path, help="where checkpoints go (default: output/cones2_training/)")
    o.add_argument("--resume", type=Path, help="continue the run saved in this checkpoint")
    o.add_argument("--loss-plot", type=Path, help="write the loss curve as a PNG")
    o.add_argument("--loss-json", type=Path, help="write the per-step losses as JSON")
    c = p.add_argument_group("ComfyUI")
    c.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"),
                   help="the ComfyUI checkout (default: $COMFYUI_PATH)")
    c.add_argument("--cpu", action="store_true", help="run on the CPU (automatic when there is no GPU)")
    args = p.parse_args(argv)
    if not args.comfyui:
        p.error("no ComfyUI checkout: set COMFYUI_PATH or pass --comfyui")
    if args.output and (args.output_dir or args.name):
        p.error("--output names the file; do not combine it with --output-dir or --name")
    return args


def settings_from(args, TrainSettings):
    """The flags' settings: each one given, else the authors' value with --official, else the default."""
    from cones2.training.train_settings import AUTHORS_PRESET, options

    preset = AUTHORS_PRESET if args.official else {}
    given = {s.name: getattr(args, s.name) for s in options() if getattr(args, s.name) is not None}
    return TrainSettings.from_values({**preset, **given})


def output_problem(args) -> str | None:
    """Why the requested output cannot be written (checked before training), or None."""
    if args.output is not None:
        if args.output.suffix != ".safetensors":
            return (f"--output {args.output}: residuals are saved as .safetensors; name it e.g. "
                    f"{args.output.with_suffix('.safetensors').name}")
        if args.output.exists():
            return f"--output {args.output} exists; choose another name (a residual never overwrites a file)"
    folder = args.output.parent if args.output is not None else args.output_dir
    if folder is not None:
        existing = Path(folder).absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"{folder} cannot be a folder: {existing} is a file"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"cannot write into {folder} ({existing} is not writable)"
    return None


def checkpoint_problem(args) -> str | None:
    """Why --resume / --checkpoint-file cannot be used (checked before training), or None.

    These are the local user's own paths, used as given; the checks only keep a typo from
    reading or overwriting a file that is not a training checkpoint.
    """
    import_pack_core()
    from cones2.training.errors import TrainingResumeError
    from cones2.training.train_checkpoint import SUFFIX, peek_state

    for option, path in (("--resume", args.resume), ("--checkpoint-file", args.checkpoint_file)):
        if path is None:
            continue
        if not path.name.endswith(SUFFIX):
            return f"{option} {path}: training checkpoints are named *{SUFFIX}"
        if option == "--resume" and not path.is_file():
            return f"--resume {path}: no such checkpoint file"
        if path.exists():
            try:
                peek_state(path)
            except TrainingResumeError as e:
                return f"{option} {path}: not a usable checkpoint: {e}"
    return None


def write_residual(residual, *, output: Path | None, folder, stem: str, fallback_dirs=()) -> tuple[Path, list[str]]:
    """Save the trained residual and return (its path, warnings); a trained residual is never thrown away.

    ``output`` (exact file) or a free name ``stem[_k].safetensors`` in ``folder``. If ``output``
    was taken meanwhile, a free name beside it; if a folder cannot be written, the next of
    ``fallback_dirs``. Raises OSError only when every place failed.
    """
    from cones2.training.residual_file import save_residual, save_residual_unique

    warnings = []
    if output is not None:
        try:
            return save_residual(residual, output), warnings
        except FileExistsError:
            warnings.append(f"{output} appeared while training (nothing is overwritten)")
        except OSError as e:
            warnings.append(f"could not write {output} ({e})")
        folder, stem = output.parent, output.stem
    tried = []
    for d in (folder, *fallback_dirs):
        if d is None or Path(d).absolute() in tried:
            continue
        tried.append(Path(d).absolute())
        try:
            path = save_residual_unique(residual, d, stem)
        except OSError as e:
            warnings.append(f"could not write into {d} ({e})")
            continue
        if warnings:
            warnings.append(f"the residual was written to {path} instead")
        return path, warnings
    raise OSError("; ".join(warnings) or "no folder to write the residual into")


def start_comfyui(path: Path, cpu: bool):
    path = path.expanduser().resolve()
    if not (path / "comfy").is_dir():
        raise SystemExit(f"error: {path} is not a ComfyUI checkout (no comfy/ folder)")
    sys.path.insert(0, str(path))
    import comfy.cli_args
    import torch

    if cpu or not (torch.cuda.is_available() or getattr(torch.backends, "mps", None)
                   and torch.backends.mps.is_available()):
        comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (device selection reads the args above)


def image_files(sources: list[Path]) -> list[Path]:
    files = []
    for src in sources:
        if src.is_dir():
            files += sorted(f for f in src.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif src.is_file():
            files.append(src)
        else:
            raise SystemExit(f"error: {src} does not exist")
    return files


def load_photos(files: list[Path]):
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    photos = []
    for f in files:
        with Image.open(f) as img:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
        photos.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0))
    return photos


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = output_problem(args) or checkpoint_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    start_comfyui(args.comfyui, args.cpu)
    import_pack_core()
    import comfy.sd
    import folder_paths
    import torch
    from cones2.comfy_adapters.folders import new_checkpoint_path, register_model_folders, residual_save_dir
    from cones2.comfy_adapters.loss_plot import loss_plot_image
    from cones2.comfy_adapters.training import train_with_comfy, training_mode
    from cones2.training.errors import TrainingError
    from cones2.training.file_names import slug
    from cones2.training.residual_file import make_residual
    from cones2.training.trainer import OutOfMemory, TrainSettings, residual_training_info

    register_model_folders()  # models/cones2_residuals, as the pack does when ComfyUI loads it
    settings = settings_from(args, TrainSettings)
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        found = folder_paths.get_full_path("checkpoints", args.checkpoint)
        if found is None:
            print(f"error: no checkpoint {args.checkpoint!r} (not a file, not in models/checkpoints)", file=sys.stderr)
            return 1
        ckpt = Path(found)
    files = image_files(args.images)
    size = f"{settings.resolution} px" if settings.resolution else "the model's own resolution"
    print(f"checkpoint {ckpt.name}; {len(files)} photo(s); phrase {args.phrase!r}; {settings.steps} steps at "
          f"{size}, lr {settings.learning_rate:g}", file=sys.stderr)

    with torch.inference_mode():  # loaded as inside a ComfyUI prompt
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(ckpt), output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    if args.prediction != "auto":
        from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

        sampling = {"eps": "eps", "v": "v_prediction"}[args.prediction]
        model = ModelSamplingDiscrete().patch(model, sampling, False)[0]
    photos = load_photos(files)

    checkpoint_path = args.resume or args.checkpoint_file
    if checkpoint_path is None and settings.checkpoint_every:
        checkpoint_path = new_checkpoint_path(args.phrase)
    started = time.perf_counter()
    every = max(1, settings.steps // 100)

    def progress(done, total, last):
        if done % every == 0 or done == total:
            rate = done / max(1e-9, time.perf_counter() - started)
            print(f"step {done}/{total}  loss {last['loss']:.4f}  diffusion {last['diffusion']:.4f}  "
                  f"preservation {last['preservation']:.4g}  ({rate:.2f} steps/s)", file=sys.stderr)

    phase_names = {"photos": ("encoding the photos", "photos"), "setup": ("setup: encoding the corpus", "sentences"),
                   "extraction": ("Eq. 5: extracting the residual", "sentences")}
    reported = {}

    def phase_progress(phase, done, total):
        tenth = done * 10 // max(1, total)
        if reported.get(phase) != tenth:  # 0%, 10%, ... 100%
            reported[phase] = tenth
            name, unit = phase_names.get(phase, (phase, "items"))
            print(f"{name}: {done}/{total} {unit}", file=sys.stderr)

    try:
        with training_mode():
            result = train_with_comfy(model, clip, vae, photos, args.phrase, settings, progress=progress,
                                      checkpoint_path=checkpoint_path, resume_path=args.resume,
                                      phase_progress=phase_progress)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OutOfMemory as e:
        print(f"error: out of memory ({str(e).splitlines()[0][:200]}). Try --train-layers 4, --precision bf16, "
              "a lower --resolution.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = f" The last checkpoint is {checkpoint_path}." if checkpoint_path and checkpoint_path.exists() else ""
        print(f"interrupted: no residual written.{where}", file=sys.stderr)
        return 130

    training = residual_training_info(
        result, model_checkpoint=ckpt.name,
        training_checkpoint=checkpoint_path.name if checkpoint_path and checkpoint_path.exists() else None)
    residual = make_residual(result.residual, subject=" ".join(args.phrase.split()), token_ids=result.token_ids,
                             base_model=result.base_model, text_encoders=result.text_encoders, training=training,
                             source="train_residual.py")
    default_dir = residual_save_dir()
    try:
        out, warnings = write_residual(residual, output=args.output, folder=args.output_dir or default_dir,
                                       stem=slug(args.name or args.phrase),
                                       fallback_dirs=(default_dir, tempfile.gettempdir()))
    except OSError as e:
        print(f"error: the residual could not be written anywhere: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{result.steps_run} steps in {result.seconds:.1f} s; residual written to {out}", file=sys.stderr)
    status = 0
    try:
        if args.loss_json:
            args.loss_json.write_text(json.dumps(result.losses))
        if args.loss_plot:
            from PIL import Image

            img = (loss_plot_image(result.losses)[0].numpy() * 255).round().astype("uint8")
            Image.fromarray(img).save(args.loss_plot)
    except (OSError, ValueError) as e:
        print(f"error: could not write the loss file ({e}); the residual is saved", file=sys.stderr)
        status = 1
    print(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
