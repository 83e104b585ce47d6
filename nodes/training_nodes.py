"""Nodes that train a subject's residual from photos and save it."""

from __future__ import annotations

import logging
import os

import comfy.model_management
import comfy.utils

from ..comfy_adapters.folders import (
    CHECKPOINT_SUBFOLDER,
    CHECKPOINTS_LABEL,
    checkpoint_file,
    checkpoint_names,
    new_checkpoint_path,
    not_in_folder,
    residual_save_dir,
)
from ..comfy_adapters.loss_plot import loss_plot_image
from ..comfy_adapters.training import train_with_comfy, training_mode
from ..training.errors import TrainingError, TrainingInputError
from ..training.file_names import slug
from ..training.residual_file import ResidualFileError, make_residual, save_residual_unique
from ..training.trainer import (
    DEFAULT_PROMPT,
    EXTRACTION,
    LOW_MEMORY_HINT,
    PHOTOS,
    PRECISIONS,
    PRESERVATION,
    RESIDUAL_FROM,
    SETUP,
    OutOfMemory,
    TrainSettings,
    residual_training_info,
)
from .node_types import RESIDUAL
from .node_types import TRAINING_CATEGORY as CATEGORY

log = logging.getLogger("cones2")

NO_RESUME = "none"
PHASE_NAMES = {PHOTOS: ("photos", "photos through the VAE"), SETUP: ("sentences", "setup (the original encoder's targets)"),
               EXTRACTION: ("sentences", "Eq. 5 extraction (the residual)")}
DEFAULTS = TrainSettings()


class Cones2TrainResidual:
    """Fine-tune a copy of SD2's text encoder on a subject's photos and return the subject's residual."""

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD2.x MODEL (CheckpointLoaderSimple). Frozen: only a copy of "
                                               "the text encoder trains."}),
                "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP. It is copied, never changed."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE, to encode the photos once."}),
                "images": ("IMAGE", {"tooltip": "3-5 photos of the subject, any size (each is resized so its short "
                                                "side is the resolution, then cropped)."}),
                "phrase": ("STRING", {"default": "", "placeholder": "dog", "tooltip":
                                      "The subject's class word or phrase ('dog', 'robot toy'). The residual binds "
                                      "to it in prompts."}),
                "steps": ("INT", {"default": d.steps, "min": 1, "max": 100000,
                                  "tooltip": "Training steps (paper 3000; the authors' code 4000)."}),
                "learning_rate": ("FLOAT", {"default": d.learning_rate, "min": 1e-8, "max": 1e-2, "step": 1e-7,
                                            "round": False,
                                            "tooltip": "AdamW learning rate (paper 1e-6; the authors' code 5e-6)."}),
                "batch_size": ("INT", {"default": d.batch_size, "min": 1, "max": 16}),
                "resolution": ("INT", {"default": d.resolution, "min": 64, "max": 2048, "step": 64,
                                       "tooltip": "Training resolution: 512 for SD2.1-base, 768 for SD2.1 (v)."}),
                "preservation_weight": ("FLOAT", {"default": d.preservation_weight, "min": 0.0, "max": 100.0,
                                                  "step": 1e-4, "round": False, "tooltip":
                                                  "λ of the paper's text-embedding-preservation loss (Eq. 3/4); 0 = off "
                                                  "(faster: no corpus sentences in the steps). Not used by the "
                                                  "official regularizer, whose weights are fixed."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            },
            "optional": {
                "preservation": (list(PRESERVATION), {"default": d.preservation, "tooltip":
                                 "paper: Eq. 3 over the generated sentences (every row but the subject's); "
                                 "official: the authors' 1e-2·|Δ start row| + 1e-3·|Δ rows after the subject| on "
                                 "the training prompt; none."}),
                "residual_from": (list(RESIDUAL_FROM), {"default": d.residual_from, "tooltip":
                                  "corpus: Eq. 5 averaged over the generated sentences (paper); templates: over "
                                  "the authors' 27 prompt templates."}),
                "training_prompt": ("STRING", {"default": DEFAULT_PROMPT, "tooltip":
                                    "Prompt of the subject photos: {} = the phrase, {a} = 'a'/'an'. The authors' "
                                    "code used the bare phrase: {}."}),
                "corpus_size": ("INT", {"default": d.corpus_size, "min": 1, "max": 20000,
                                        "tooltip": "Generated sentences containing the phrase (paper: 1000)."}),
                "sentences_per_step": ("INT", {"default": d.sentences_per_step, "min": 1, "max": 64,
                                               "tooltip": "Corpus sentences in each step's preservation term."}),
                "train_layers": ("INT", {"default": d.train_layers, "min": 0, "max": 32, "tooltip":
                                 "0 = train the whole text encoder (paper). k = only its last k layers: much less "
                                 "memory and time (a low-memory option)."}),
                "precision": (list(PRECISIONS), {"default": d.precision, "tooltip":
                              "UNet autocast: auto = bf16 on CUDA when supported, else fp16; fp32 on CPU. The text "
                              "encoder always trains in float32."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": d.gradient_checkpointing,
                                                       "tooltip": "Recompute UNet activations: far less memory."}),
                "flip": ("BOOLEAN", {"default": d.flip, "tooltip": "Also train on mirrored photos (off for "
                                                                     "asymmetric subjects, e.g. text)."}),
                "random_crop": ("BOOLEAN", {"default": d.random_crop,
                                            "tooltip": "Random square crops of non-square photos (else center)."}),
                "checkpoint_every": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip":
                                     f"Save a resumable checkpoint every N steps to output/{CHECKPOINT_SUBFOLDER} "
                                     "(0 = never)."}),
                "resume_from": ([NO_RESUME, *checkpoint_names()], {"default": NO_RESUME, "tooltip":
                                "Continue a run from its checkpoint (same inputs and settings; steps may grow)."}),
            },
        }

    RETURN_TYPES = (RESIDUAL, "LOSS_MAP", "IMAGE")
    RETURN_NAMES = ("residual", "loss", "loss_plot")
    OUTPUT_TOOLTIPS = ("The subject's residual: save it with Cones2 Save Residual.",
                       "Loss per step ({'loss': [...]}, core LOSS_MAP: Plot Loss Graph reads it).",
                       "The loss curve as an image.")
    FUNCTION = "train"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Cones 2 training: fine-tunes a copy of SD2's text encoder through the frozen UNet on the "
                   "subject's photos, then averages how the subject phrase's embedding moved (Eq. 5).")

    @classmethod
    def VALIDATE_INPUTS(cls, resume_from=NO_RESUME):
        # the list of checkpoints changes while ComfyUI runs: check the file, not the list seen at startup
        # (this replaces ComfyUI's list check, so the name is resolved inside the folder here)
        if resume_from not in (None, NO_RESUME) and checkpoint_file(resume_from) is None:
            return not_in_folder("checkpoint", resume_from, CHECKPOINTS_LABEL)
        return True

    def train(self, model, clip, vae, images, phrase, steps, learning_rate, batch_size, resolution,
              preservation_weight, seed, preservation=DEFAULTS.preservation, residual_from=DEFAULTS.residual_from,
              training_prompt=DEFAULT_PROMPT, corpus_size=DEFAULTS.corpus_size,
              sentences_per_step=DEFAULTS.sentences_per_step, train_layers=DEFAULTS.train_layers,
              precision=DEFAULTS.precision, gradient_checkpointing=DEFAULTS.gradient_checkpointing,
              flip=DEFAULTS.flip, random_crop=DEFAULTS.random_crop, checkpoint_every=0, resume_from=NO_RESUME):
        settings = TrainSettings(
            steps=int(steps), learning_rate=float(learning_rate), batch_size=int(batch_size),
            resolution=int(resolution), seed=int(seed) % (2**63), preservation=preservation,
            preservation_weight=float(preservation_weight), residual_from=residual_from,
            training_prompt=training_prompt, corpus_size=int(corpus_size),
            sentences_per_step=int(sentences_per_step), train_layers=int(train_layers), precision=precision,
            gradient_checkpointing=bool(gradient_checkpointing), flip=bool(flip), random_crop=bool(random_crop),
            checkpoint_every=int(checkpoint_every))
        photos = [] if images is None else list(images)
        resume_path = None
        if resume_from not in (None, "", NO_RESUME):
            resume_path = checkpoint_file(resume_from)
            if resume_path is None:
                raise ValueError(f"Cones2TrainResidual: {not_in_folder('checkpoint', resume_from, CHECKPOINTS_LABEL)}")
        checkpoint_path = resume_path or (new_checkpoint_path(phrase) if settings.checkpoint_every else None)
        pbar = comfy.utils.ProgressBar(settings.steps)

        def progress(done, total, last):
            pbar.update_absolute(done, total)

        def phase_progress(phase, done, total):  # the bar counts photos, then sentences, around the steps
            if done == 0:
                unit, name = PHASE_NAMES[phase]
                log.info("Cones2TrainResidual: %s, encoding %d %s", name, total, unit)
            pbar.update_absolute(done, total)

        try:
            with training_mode():
                result = train_with_comfy(
                    model, clip, vae, photos, phrase, settings, progress=progress,
                    check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
                    checkpoint_path=checkpoint_path, resume_path=resume_path, phase_progress=phase_progress)
        except TrainingInputError as e:
            raise ValueError(f"Cones2TrainResidual: {e}") from None
        except TrainingError as e:
            raise RuntimeError(f"Cones2TrainResidual: {e}") from None
        except OutOfMemory:
            raise RuntimeError(f"Cones2TrainResidual: out of memory while preparing training. {LOW_MEMORY_HINT}") from None
        finally:
            comfy.model_management.soft_empty_cache()
        training = residual_training_info(
            result, training_checkpoint=checkpoint_path.name if checkpoint_path is not None else None)
        try:
            residual = make_residual(result.residual, subject=" ".join(phrase.split()), token_ids=result.token_ids,
                                     training=training, source="Cones2TrainResidual")
        except ResidualFileError as e:
            raise RuntimeError(f"Cones2TrainResidual: {e}") from None
        log.info("Cones2TrainResidual: %d steps in %.1f s, final loss %.4f", result.steps_run, result.seconds,
                 result.losses["loss"][-1] if result.losses["loss"] else float("nan"))
        return (residual, result.losses, loss_plot_image(result.losses))


class Cones2SaveResidual:
    """Write a trained residual into models/cones2_residuals (a taken name gets _2, _3...; atomic)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "residual": (RESIDUAL, {"tooltip": "From Cones2 Train Residual."}),
                "filename": ("STRING", {"default": "", "placeholder": "the subject, e.g. dog", "tooltip":
                             "File name without .safetensors; empty = the subject phrase. Never overwrites."}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("The saved file's name in models/cones2_residuals (for Cones2 Load Residual).",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Saves a trained residual as a .safetensors file in models/cones2_residuals."

    def save(self, residual, filename):
        name = filename.strip()
        if name.endswith(".safetensors"):
            name = name[: -len(".safetensors")]
        if name and (os.sep in name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".")):
            raise ValueError(f"Cones2SaveResidual: {filename!r} is not a plain file name; write e.g. 'my_dog'.")
        stem = slug(name or residual.subject or "subject")
        try:
            path = save_residual_unique(residual, residual_save_dir(), stem)
        except (ResidualFileError, OSError) as e:
            raise RuntimeError(f"Cones2SaveResidual: could not save the residual ({e}).") from None
        log.info("Cones2SaveResidual: wrote %s", path)
        return {"ui": {"text": [path.name]}, "result": (path.name,)}


NODE_CLASS_MAPPINGS = {
    "Cones2TrainResidual": Cones2TrainResidual,
    "Cones2SaveResidual": Cones2SaveResidual,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Cones2TrainResidual": "Cones2 Train Residual",
    "Cones2SaveResidual": "Cones2 Save Residual",
}
