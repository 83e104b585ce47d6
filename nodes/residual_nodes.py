"""Nodes that load subject residuals and add them to an encoded prompt."""

from __future__ import annotations

import os

import folder_paths

from ..comfy_adapters.folders import RESIDUALS, RESIDUALS_LABEL, not_in_folder, residual_file
from ..comfy_adapters.text_conditioning import TextConditioningError, encode_with_residuals
from ..guidance.prompt_tokens import PhraseNotFoundError
from ..guidance.residual_placement import ResidualBinding, ResidualPlacementError
from ..training.inline_residual import residual_from_base64
from ..training.model_families import ModelFamilyError
from ..training.residual_file import ResidualFileError, load_residual
from .node_errors import named_errors, node_message
from .node_registry import register_nodes
from .node_types import BINDINGS, CATEGORY, RESIDUAL

BINDING_INPUTS = {
    "phrase": ("STRING", {"default": "", "tooltip":
        "The phrase in the prompt this subject binds to. Empty = the subject recorded with the residual."}),
    "occurrence": ("INT", {"default": 1, "min": 1, "max": 75, "tooltip":
        "Which occurrence of the phrase (1 = first), e.g. 2 for the second 'dog' in 'a dog and a dog'."}),
    "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                           "tooltip": "Multiplier on the residual."}),
}
CHAIN_INPUT = (BINDINGS, {"tooltip": "Earlier bindings, to chain several subjects."})


def bind(node: str, name: str, residual, phrase: str, occurrence: int, strength: float, bindings):
    """``bindings`` plus ``residual`` bound to ``phrase`` (default: its recorded subject)."""
    phrase = phrase.strip() or (residual.subject or "")
    if not phrase:
        raise ValueError(node_message(
            node, f"{name} records no subject (an authors' .pt file, or one converted without --subject). "
            "Type the phrase it binds to in the 'phrase' box, e.g. 'dog'."))
    binding = ResidualBinding(name, residual.tensor, phrase, int(occurrence), float(strength),
                              base_model=residual.base_model, text_encoders=residual.text_encoders)
    return (tuple(bindings or ()) + (binding,),)


class Cones2LoadResidual:
    """Load one subject's residual and bind it to an occurrence of a phrase; chainable."""

    NAME = "Cones2LoadResidual"
    DISPLAY_NAME = "Cones2 Load Residual"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "residual_name": (folder_paths.get_filename_list(RESIDUALS), {
                    "tooltip": "A residual file in models/cones2_residuals (.safetensors, or the authors' .pt)."}),
                **BINDING_INPUTS,
            },
            "optional": {"bindings": CHAIN_INPUT},
        }

    RETURN_TYPES = (BINDINGS,)
    RETURN_NAMES = ("bindings",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a Cones 2 subject residual and binds it to a phrase occurrence of the prompt."

    @classmethod
    def IS_CHANGED(cls, residual_name, **_):
        path = residual_file(residual_name)
        if path is None:
            return ""
        st = os.stat(path)
        return f"{st.st_mtime_ns}:{st.st_size}"

    def load(self, residual_name, phrase, occurrence, strength, bindings=None):
        # not folder_paths.get_full_path: it follows links out of the folder (and strips a leading '..')
        path = residual_file(residual_name)
        if path is None:
            raise ValueError(node_message(self.NAME, not_in_folder("residual", residual_name, RESIDUALS_LABEL)))
        with named_errors(self.NAME, value=(ResidualFileError,)):
            residual = load_residual(path)
        return bind(self.NAME, residual_name, residual, phrase, occurrence, strength, bindings)


class Cones2InlineResidual:
    """Load Residual for a residual carried in the workflow itself (base64 of its .safetensors); chainable."""

    NAME = "Cones2InlineResidual"
    DISPLAY_NAME = "Cones2 Inline Residual"
    INPUT = "residual_base64"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                cls.INPUT: ("STRING", {"multiline": True, "default": "", "tooltip":
                    "The residual's .safetensors file as base64 text (~7,000 characters), e.g. from "
                    "'base64 -w0 dog.safetensors', run_workflow.py --residual dog=@dog.safetensors, or a "
                    "training prompt's history. The workflow then carries the subject: no file on the server."}),
                **BINDING_INPUTS,
            },
            "optional": {"bindings": CHAIN_INPUT},
        }

    RETURN_TYPES = (BINDINGS,)
    RETURN_NAMES = ("bindings",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Reads a Cones 2 residual given inline as base64 (the same checks as a file; nothing is written) "
                   "and binds it to a phrase occurrence, like Load Residual.")

    @classmethod
    def VALIDATE_INPUTS(cls, residual_base64):
        if residual_base64 is None:  # linked: checked when the node runs
            return True
        try:
            residual_from_base64(residual_base64, cls.INPUT)
        except ResidualFileError as e:
            return node_message(cls.NAME, str(e))
        return True

    def load(self, residual_base64, phrase, occurrence, strength, bindings=None):
        with named_errors(self.NAME, value=(ResidualFileError,)):
            residual = residual_from_base64(residual_base64, self.INPUT)
        name = f"the inline residual '{residual.subject}'" if residual.subject else "the inline residual"
        return bind(self.NAME, name, residual, phrase, occurrence, strength, bindings)


class Cones2BindResidual:
    """Bind a residual made in this graph (e.g. by Cones2TrainResidual) without saving it first."""

    NAME = "Cones2BindResidual"
    DISPLAY_NAME = "Cones2 Bind Residual"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"residual": (RESIDUAL, {"tooltip": "A residual, e.g. Cones2 Train Residual's output."}),
                         **BINDING_INPUTS},
            "optional": {"bindings": CHAIN_INPUT},
        }

    RETURN_TYPES = (BINDINGS,)
    RETURN_NAMES = ("bindings",)
    FUNCTION = "bind"
    CATEGORY = CATEGORY
    DESCRIPTION = "Binds a residual from another node (e.g. training) to a phrase occurrence, like Load Residual."

    def bind(self, residual, phrase, occurrence, strength, bindings=None):
        name = f"trained residual '{residual.subject}'" if residual.subject else "the residual"
        return bind(self.NAME, name, residual, phrase, occurrence, strength, bindings)


class Cones2ApplyResidual:
    """Encode a prompt exactly as CLIPTextEncode does, then add each bound residual at its phrase's rows."""

    NAME = "Cones2ApplyResidual"
    DISPLAY_NAME = "Cones2 Apply Residual (Text Encode)"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The CLIP of an SD1.x, SD2.x or SDXL checkpoint (CheckpointLoaderSimple); "
                                             "the residuals must be of the same family."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                    "tooltip": "The prompt; it must contain each bound phrase."}),
            },
            "optional": {
                "bindings": (BINDINGS, {"tooltip": "Residual bindings from Load Residual. None = a plain encode."}),
            },
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encodes the prompt like CLIPTextEncode, adds each subject's residual at its phrase "
                   "(the whole conditioning row: 768 wide on SD1.x, 1024 on SD2.x, 2048 on SDXL; SDXL's pooled "
                   "vector is left unchanged), and records where every word sits for layout guidance. A residual "
                   "of another family is refused; one trained with other text encoders is applied with a warning.")

    def encode(self, clip, text, bindings=None):
        if clip is None:
            raise RuntimeError(node_message(self.NAME, "the clip input is None; the checkpoint has no text encoder."))
        with named_errors(self.NAME, value=(ModelFamilyError, PhraseNotFoundError, ResidualPlacementError),
                          runtime=(TextConditioningError,)):
            out = encode_with_residuals(clip, text, tuple(bindings or ()), self.NAME)
        return (out,)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = register_nodes(
    Cones2LoadResidual, Cones2InlineResidual, Cones2BindResidual, Cones2ApplyResidual)
