"""Nodes that start sampling from the subjects themselves: MuDI's mean-shifted initial noise (Eq. 3).

Cones2SubjectPhoto gives a layout subject its reference photo and mask (chainable, as Load
Residual chains bindings); Cones2LayoutInitLatent composes the photos in their layout regions,
VAE-encodes the composite and hands the sampler a LATENT whose first UNet input is
``γ·E(x_init)⊙Resize(M_init) + ε``.
"""

from __future__ import annotations

import torch

from ..comfy_adapters.init_latent import decode, encode, latent_for_sampler, latent_space
from ..guidance.init_latent import (
    DEFAULT_GAMMA,
    MASK_IS,
    InitLatentError,
    compose_subjects,
    latent_mask,
    subject_photo,
)
from ..guidance.layout_guidance import ASPECT_TOLERANCE
from .node_errors import named_errors, node_message
from .node_registry import register_nodes
from .node_types import LATENT_CATEGORY as CATEGORY
from .node_types import LAYOUT, SUBJECT_PHOTOS


class Cones2SubjectPhoto:
    """A reference photo of one layout subject and its mask; chain one node per subject."""

    NAME = "Cones2SubjectPhoto"
    DISPLAY_NAME = "Cones2 Subject Photo"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "A photo of the subject (any size; e.g. one you trained its residual "
                                               "from). A batch is fine: 'index' picks the photo."}),
                "phrase": ("STRING", {"default": "", "tooltip": "The layout subject this photo shows: its phrase, "
                                                                "e.g. 'dog' or 'robot toy'."}),
                "occurrence": ("INT", {"default": 1, "min": 1, "max": 75, "tooltip":
                                       "Which occurrence of the phrase (1 = first), as in the layout."}),
                "mask_is": (list(MASK_IS), {"default": MASK_IS[0], "tooltip":
                            "What the mask marks. 'subject': a mask painted over the subject in Load Image's "
                            "mask editor, or a segmentation node's mask. 'background': Load Image of a cut-out "
                            "PNG with a transparent background (its MASK is 1 - alpha)."}),
                "index": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip":
                                  "Which photo of an image batch (0 = first)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "The subject's mask, the photo's size (one, or one per photo of the "
                                             "batch). Without one, the image's alpha channel (RGBA images)."}),
                "subject_photos": (SUBJECT_PHOTOS, {"tooltip": "Earlier subject photos, to chain subjects."}),
            },
        }

    RETURN_TYPES = (SUBJECT_PHOTOS,)
    RETURN_NAMES = ("subject_photos",)
    FUNCTION = "add"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Gives one layout subject (phrase + occurrence) its reference photo and mask, for Cones2 Layout "
                   "Init Latent. Chain one node per subject.")

    def add(self, image, phrase, occurrence, mask_is, index, mask=None, subject_photos=None):
        with named_errors(self.NAME, value=(InitLatentError,)):
            photo = subject_photo(phrase, int(occurrence), image, mask, mask_is, int(index))
        return (tuple(subject_photos or ()) + (photo,),)


class Cones2LayoutInitLatent:
    """MuDI's initial latent: the subjects' photos composed in their layout regions, as the noise's mean."""

    NAME = "Cones2LayoutInitLatent"
    DISPLAY_NAME = "Cones2 Layout Init Latent"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "layout": (LAYOUT, {"tooltip": "Where each subject goes (the layout you guide with)."}),
                "subject_photos": (SUBJECT_PHOTOS, {"tooltip": "Photos and masks of the subjects (Cones2 Subject "
                                                               "Photo). Subjects without one get no mean shift."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE."}),
                "gamma": ("FLOAT", {"default": DEFAULT_GAMMA, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip":
                                    "MuDI's γ: how far the starting noise's mean moves toward the subjects. Higher "
                                    "holds their look and place more and varies less; 0 = plain noise."}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "Its size and batch size are used (e.g. Empty Latent Image). "
                                                 "Without it: the layout canvas's size, batch 1."}),
                "model": ("MODEL", {"tooltip": "The model you sample with: its noise schedule and latent scale are "
                                               "read (a ModelSamplingDiscrete override included). Without it: "
                                               "SD2's defaults, right for SD2.x and SD1.x; connect it for SDXL (its latent "
                                               "scale is 0.13025, not 0.18215)."}),
            },
        }

    RETURN_TYPES = ("LATENT", "IMAGE", "IMAGE")
    RETURN_NAMES = ("latent", "composite", "mean_shift")
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = ("MuDI's mean-shifted initial noise (Eq. 3): cuts each subject out of its photo, fits it into its "
                   "layout region, VAE-encodes the composite and masks it. Sample from the LATENT at full denoise "
                   "(KSampler denoise 1.0): the model's first input is then γ·E(composite)⊙mask + noise.")

    def build(self, layout, subject_photos, vae, gamma, latent=None, model=None):
        node = self.NAME
        gamma = float(gamma)
        if latent is not None:
            samples = latent["samples"]
            if samples.ndim != 4:
                raise ValueError(node_message(node, f"the latent is {list(samples.shape)}; give an image latent "
                                 "[batch, channels, height, width] (e.g. from Empty Latent Image)"))
            batch, height, width = int(samples.shape[0]), int(samples.shape[2]), int(samples.shape[3])
        else:
            batch, height, width = 1, layout.height // 8, layout.width // 8
        canvas, image_aspect = layout.width / layout.height, width / height
        if abs(canvas - image_aspect) > ASPECT_TOLERANCE * image_aspect:
            raise ValueError(node_message(
                node, f"the layout canvas is {layout.width}x{layout.height} (aspect {canvas:.3f}) but the latent "
                f"is for a {width * 8}x{height * 8} image (aspect {image_aspect:.3f}); give the latent the "
                "layout's aspect ratio, or draw the layout on a canvas of the image's aspect"))
        space = latent_space(model, node)
        with named_errors(node, value=(InitLatentError,)):
            composite = compose_subjects(layout, tuple(subject_photos), width * 8, height * 8)
            mask = latent_mask(composite.mask, height, width)
        encoded = encode(vae, composite.image).to("cpu", torch.float32)
        if tuple(encoded.shape[-2:]) != (height, width):
            raise ValueError(node_message(node, f"the VAE made a {encoded.shape[-1]}x{encoded.shape[-2]} latent of a "
                             f"{width * 8}x{height * 8} image; use an SD VAE (8x downscale)"))
        if latent is not None and encoded.shape[1] != samples.shape[1]:
            raise ValueError(node_message(node, f"the VAE's latents have {encoded.shape[1]} channels but the latent input has "
                             f"{samples.shape[1]}; use the latent and VAE of one model"))
        mean_shift = gamma * space.process_in(encoded) * mask if gamma else torch.zeros_like(encoded)
        out = {"samples": latent_for_sampler(space, mean_shift).repeat(batch, 1, 1, 1)}
        if latent is not None and "batch_index" in latent:
            out["batch_index"] = latent["batch_index"]
        shown = decode(vae, space.process_out(mean_shift)).to("cpu", torch.float32).clamp(0.0, 1.0)
        return (out, composite.image[None], shown)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = register_nodes(Cones2SubjectPhoto, Cones2LayoutInitLatent)
