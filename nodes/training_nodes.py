"""Nodes that train a subject's residual from photos and save it."""

from __future__ import annotations

import base64
import logging
import os

import comfy.model_management
import comfy.utils

from ..comfy_adapters.folders import (
    CHECKPOINT_SUBFOLDER,
    CHECKPOINTS_LABEL,
    RESIDUALS,
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
from ..training.train_settings import TrainSettings, options
from ..training.trainer import EXTRACTION, LOW_MEMORY_HINT, PHOTOS, SETUP, OutOfMemory, residual_training_info
from .node_errors import named_errors, node_message
from .node_registry import register_nodes
from .node_types import RESIDUAL
from .node_types import TRAINING_CATEGORY as CATEGORY

log = logging.getLogger("cones2")

NO_RESUME = "none"
RESIDUAL_OUTPUT = "cones2_residual"  # Save Residual's history output: the saved file, its bytes as base64
WIDGET_EXTRAS = {  # ComfyUI-only widget options of some settings
    "learning_rate": {"round": False},
    "preservation_weight": {"round": False},
    "seed": {"control_after_generate": True},
}
TOOLTIP_EXTRAS = {"checkpoint_every": f" Checkpoints go to output/{CHECKPOINT_SUBFOLDER}."}
WIDGET_TYPES = {int: "INT", float: "FLOAT", bool: "BOOLEAN", str: "STRING"}


def setting_inputs(advanced: bool) -> dict:
    """The node's inputs for the training settings (``train_settings.options()``): the basic or the advanced ones."""
    inputs = {}
    for s in options():
        if s.option.advanced != advanced:
            continue
        tooltip = s.help + TOOLTIP_EXTRAS.get(s.name, "")
        if s.option.choices is not None:
            inputs[s.name] = ([c.value for c in s.option.choices], {"default": s.default, "tooltip": tooltip})
            continue
        widget = {"default": s.default}
        widget.update({k: getattr(s.option, k) for k in ("min", "max", "step") if getattr(s.option, k) is not None})
        inputs[s.name] = (WIDGET_TYPES[s.kind], {**widget, **WIDGET_EXTRAS.get(s.name, {}), "tooltip": tooltip})
    return inputs

PHASE_NAMES = {PHOTOS: ("photos", "photos through the VAE"), SETUP: ("sentences", "setup (the original encoder's targets)"),
               EXTRACTION: ("sentences", "Eq. 5 extraction (the residual)")}


class Cones2TrainResidual:
    """Fine-tune a copy of the checkpoint's text encoder(s) on a subject's photos and return the subject's residual."""

    NAME = "Cones2TrainResidual"
    DISPLAY_NAME = "Cones2 Train Residual"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SD2.x or SDXL MODEL (CheckpointLoaderSimple). Frozen: "
                                               "only a copy of the text encoder trains."}),
                "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP (SDXL: both text encoders train). It is "
                                             "copied, never changed."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE, to encode the photos once."}),
                "images": ("IMAGE", {"tooltip": "3-5 photos of the subject, any size (each is resized so its short "
                                                "side is the resolution, then cropped)."}),
                "phrase": ("STRING", {"default": "", "placeholder": "dog", "tooltip":
                                      "The subject's class word or phrase ('dog', 'robot toy'). The residual binds "
                                      "to it in prompts."}),
                **setting_inputs(advanced=False),
            },
            "optional": {
                **setting_inputs(advanced=True),
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
    DESCRIPTION = ("Cones 2 training: fine-tunes a copy of the checkpoint's text encoder(s) (SD1.x, SD2.x, SDXL) "
                   "through the frozen UNet on the subject's photos, then averages how the subject phrase's "
                   "embedding moved (Eq. 5). The residual records its model family.")

    def train(self, model, clip, vae, images, phrase, resume_from=NO_RESUME, **setting_values):
        if setting_values.get("seed") is not None:
            setting_values["seed"] = int(setting_values["seed"]) % (2**63)  # ComfyUI seeds go up to 2**64 - 1
        settings = TrainSettings.from_values(setting_values)
        photos = [] if images is None else list(images)
        resume_path = None
        if resume_from not in (None, "", NO_RESUME):
            resume_path = checkpoint_file(resume_from)
            if resume_path is None:
                raise ValueError(node_message(self.NAME, not_in_folder("checkpoint", resume_from, CHECKPOINTS_LABEL)))
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
            with named_errors(self.NAME, value=(TrainingInputError,), runtime=(TrainingError,)), training_mode():
                result = train_with_comfy(
                    model, clip, vae, photos, phrase, settings, progress=progress,
                    check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
                    checkpoint_path=checkpoint_path, resume_path=resume_path, phase_progress=phase_progress)
        except OutOfMemory:
            raise RuntimeError(node_message(
                self.NAME, f"out of memory while preparing training. {LOW_MEMORY_HINT}")) from None
        finally:
            comfy.model_management.soft_empty_cache()
        training = residual_training_info(
            result, training_checkpoint=checkpoint_path.name if checkpoint_path is not None else None)
        with named_errors(self.NAME, runtime=(ResidualFileError,)):
            residual = make_residual(result.residual, subject=" ".join(phrase.split()), token_ids=result.token_ids,
                                     base_model=result.base_model, text_encoders=result.text_encoders,
                                     training=training, source=self.NAME)
        log.info("%s: %d steps in %.1f s, final loss %.4f", self.NAME, result.steps_run, result.seconds,
                 result.losses["loss"][-1] if result.losses["loss"] else float("nan"))
        return (residual, result.losses, loss_plot_image(result.losses))


class Cones2SaveResidual:
    """Write a trained residual into models/cones2_residuals (a taken name gets _2, _3...; atomic)."""

    NAME = "Cones2SaveResidual"
    DISPLAY_NAME = "Cones2 Save Residual"

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
    DESCRIPTION = ("Saves a trained residual as a .safetensors file in models/cones2_residuals, and hands it "
                   "back in the prompt's history (the file as base64) for API clients.")

    def save(self, residual, filename):
        name = filename.strip()
        if name.endswith(".safetensors"):
            name = name[: -len(".safetensors")]
        if name and (os.sep in name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".")):
            raise ValueError(node_message(self.NAME, f"{filename!r} is not a plain file name; write e.g. 'my_dog'."))
        stem = slug(name or residual.subject or "subject")
        try:
            path = save_residual_unique(residual, residual_save_dir(), stem)
        except (ResidualFileError, OSError) as e:
            raise RuntimeError(node_message(self.NAME, f"could not save the residual ({e}).")) from None
        log.info("%s: wrote %s", self.NAME, path)
        # the file goes back in the prompt's history too, so a client of a stateless worker gets its subject
        # (read back: safetensors writes metadata in no fixed order, and the client gets this very file)
        returned = {"filename": path.name, "subfolder": "", "type": RESIDUALS, "subject": residual.subject,
                    "base64": base64.b64encode(path.read_bytes()).decode("ascii")}
        return {"ui": {"text": [path.name], RESIDUAL_OUTPUT: [returned]}, "result": (path.name,)}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = register_nodes(Cones2TrainResidual, Cones2SaveResidual)
