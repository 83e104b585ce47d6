"""Nodes that steer each subject's cross-attention into its layout region while sampling."""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils

from ..comfy_adapters.guidance_patch import apply_layout_guidance
from ..comfy_adapters.self_recurrent_sampler import sample_guided
from ..guidance.attention_bias import SuppressionScope
from ..guidance.layout_guidance import DEFAULT_SUPPRESSION, DEFAULT_WEIGHT, GuidanceSettings
from ..guidance.strength import SigmaSchedule
from .node_errors import named_errors
from .node_registry import register_nodes
from .node_types import CATEGORY, LAYOUT


def guidance_inputs() -> dict:
    """The guidance options shared by the guidance node and the guided sampler."""
    return {
        "weight": ("FLOAT", {"default": DEFAULT_WEIGHT, "min": 0.0, "max": 10.0, "step": 0.005, "tooltip":
            "w, the authors' guidance_weight: bias = w * M * log(1 + sigma^2) * std(Q*K^T). "
            "Official default 0.08; the authors advise 0.05-0.10. 0 = no guidance."}),
        "suppression": ("FLOAT", {"default": DEFAULT_SUPPRESSION, "min": -1e9, "max": 0.0, "step": 1.0,
                                  "tooltip": "gamma-, the value of M where a subject is suppressed (the authors' "
                                  "weight_negative). The official -1e8 makes it a hard mask."}),
        "suppression_scope": ([s.value for s in SuppressionScope], {"default": SuppressionScope.OUTSIDE_OWN_REGION.value,
                              "tooltip": "Where a subject's words get gamma-: everywhere outside its own region, "
                              "background included (what the official code does), or only inside other "
                              "subjects' regions with 0 on the background (the paper's description)."}),
        "sigma_schedule": ([s.value for s in SigmaSchedule], {"default": SigmaSchedule.OFFICIAL.value,
                           "tooltip": "eta, the bias strength per step: w*log(1+sigma^2)*std(logits) (official), "
                           "without the std factor, or constant w*std(logits)."}),
        "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                    "tooltip": "Guide from this point of sampling (0 = the first step)."}),
        "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                  "tooltip": "Guide until this point (1 = the last step). The authors guide all "
                                  "steps; easy pairs need about the first 60%."}),
    }


def _settings(node, weight, suppression, suppression_scope, sigma_schedule) -> GuidanceSettings:
    with named_errors(node, value=(ValueError,)):
        scope = SuppressionScope(suppression_scope)
        schedule = SigmaSchedule(sigma_schedule)
    return GuidanceSettings(weight=float(weight), suppression=float(suppression), scope=scope, schedule=schedule)


class Cones2LayoutGuidance:
    """MODEL + layout -> MODEL whose sampling steers each subject's attention into its region."""

    NAME = "Cones2LayoutGuidance"
    DISPLAY_NAME = "Cones2 Layout Guidance"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SD2.x or SDXL model (CheckpointLoaderSimple)."}),
                "layout": (LAYOUT, {"tooltip": "Where each subject goes (Cones2 Layout Boxes, from mask, from colour map)."}),
                **guidance_inputs(),
            },
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Layout guidance (Cones 2): in every cross-attention layer, biases the positive prompt's "
                   "attention so each layout subject's words attend inside its region. Use with any sampler; "
                   "encode the positive prompt with Cones2 Apply Residual.")

    def apply(self, model, layout, weight, suppression, suppression_scope, sigma_schedule, start_percent,
              end_percent):
        settings = _settings(self.NAME, weight, suppression, suppression_scope, sigma_schedule)
        patched = apply_layout_guidance(model, layout, settings, start_percent, end_percent, self.NAME)
        return (patched,)


class Cones2LayoutGuidedSampler:
    """KSampler with layout guidance and the official self-recurrence."""

    NAME = "Cones2LayoutGuidedSampler"
    DISPLAY_NAME = "Cones2 Layout Guided Sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.x, SD2.x or SDXL model (CheckpointLoaderSimple)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "The random seed of the initial noise (and of self-recurrence's re-noise)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "lms"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal"}),
                "positive": ("CONDITIONING", {"tooltip": "Encoded by Cones2 Apply Residual: it holds the layout's phrases."}),
                "negative": ("CONDITIONING",),
                "layout": (LAYOUT, {"tooltip": "Where each subject goes."}),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                **guidance_inputs(),
                "self_recurrence": ("BOOLEAN", {"default": False, "tooltip":
                    "The official code's self-recurrence: on each guided step, step, re-noise back and step again "
                    "(twice the UNet cost on those steps). Multistep samplers restart their history there."}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Samples like KSampler with Cones 2 layout guidance; optionally with the authors' "
                   "self-recurrence on guided steps.")

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, layout, latent_image,
               denoise, weight, suppression, suppression_scope, sigma_schedule, start_percent, end_percent,
               self_recurrence=False):
        settings = _settings(self.NAME, weight, suppression, suppression_scope, sigma_schedule)
        return (sample_guided(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, layout,
                              latent_image, denoise, settings, start_percent, end_percent, self_recurrence, self.NAME),)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = register_nodes(Cones2LayoutGuidance, Cones2LayoutGuidedSampler)
