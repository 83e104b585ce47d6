"""Nodes that make a layout (boxes, a mask, a colour map) and draw it.

A layout (CONES2_LAYOUT) is a ``guidance.layout.Layout``: a canvas in pixels and, per subject
(phrase + occurrence), a region and its γ+. Layout guidance reads it at sampling time.
"""

from __future__ import annotations

import torch

from ..guidance.layout import DEFAULT_GAMMA, Layout, LayoutError, LayoutSubject, fit_mask
from ..guidance.layout_colors import DEFAULT_TOLERANCE, layout_from_color_map
from ..guidance.layout_preview import DEFAULT_OPACITY, render_layout_preview
from ..guidance.layout_text import (
    BOX_SYNTAX,
    COLOR_SYNTAX,
    layout_from_box_lines,
    parse_box_lines,
    parse_color_list,
    parse_color_mapping,
)
from .node_errors import named_errors, node_message
from .node_registry import register_nodes
from .node_types import LAYOUT
from .node_types import LAYOUT_CATEGORY as CATEGORY

MAX_RESOLUTION = 16384  # core nodes.MAX_RESOLUTION (not imported: ComfyUI's `nodes` and this package's clash in name)

_GAMMA = ("FLOAT", {"default": DEFAULT_GAMMA, "min": 0.0, "max": 20.0, "step": 0.1, "tooltip":
                    "γ+: how strongly the subject is pulled into its region (official default 2.5)."})
_CHAIN = (LAYOUT, {"tooltip": "A layout to add to (same canvas); chain nodes to combine boxes, masks and colour maps."})


class Cones2LayoutBoxes:
    """Boxes in pixels on a canvas, one per line of text (the format the box-drawing widget writes)."""

    NAME = "Cones2LayoutBoxes"
    DISPLAY_NAME = "Cones2 Layout Boxes"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8, "tooltip":
                                  "Canvas width in pixels: the image's width, or any size of the same aspect."}),
                "height": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8, "tooltip":
                                   "Canvas height in pixels."}),
                "boxes": ("STRING", {"multiline": True, "default": "",
                                     "placeholder": "dog: 32 64 224 320\ndog #2: 288 64 224 320 2.0",
                                     "tooltip": f"One box per line: {BOX_SYNTAX}, in pixels from the "
                                                "canvas's top-left corner. The full grammar: this node's "
                                                "help page."}),
                "gamma": _GAMMA,
            },
            "optional": {"layout": _CHAIN},
        }

    RETURN_TYPES = (LAYOUT,)
    RETURN_NAMES = ("layout",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (f"Places subjects in boxes: one line per box, '{BOX_SYNTAX}', in pixels from the top-left "
                   "corner of the canvas (grammar: this node's help page, web/docs/Cones2LayoutBoxes.md).")

    def build(self, width, height, boxes, gamma, layout=None):
        with named_errors(self.NAME, value=(LayoutError,)):
            return (layout_from_box_lines(parse_box_lines(boxes), int(width), int(height), float(gamma), layout),)


class Cones2LayoutFromMask:
    """One subject whose region is a free-form MASK (paper appendix B.4)."""

    NAME = "Cones2LayoutFromMask"
    DISPLAY_NAME = "Cones2 Layout from Mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "The region: values above 0.5 are inside. Without a chained layout "
                                             "the canvas is the mask's size."}),
                "phrase": ("STRING", {"default": "", "tooltip": "The phrase of the prompt this region is for, "
                                                                "e.g. 'dog' or 'robot toy'."}),
                "occurrence": ("INT", {"default": 1, "min": 1, "max": 75, "tooltip":
                                       "Which occurrence of the phrase (1 = first)."}),
                "gamma": _GAMMA,
            },
            "optional": {"layout": (LAYOUT, {"tooltip": "A layout to add to. A mask of another size but the same "
                                                        "aspect ratio is rescaled to its canvas."})},
        }

    RETURN_TYPES = (LAYOUT,)
    RETURN_NAMES = ("layout",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = "Places one subject in a free-form region given as a MASK (values above 0.5 are inside)."

    def build(self, mask, phrase, occurrence, gamma, layout=None):
        node = self.NAME
        if mask.ndim == 3:
            if mask.shape[0] != 1:
                raise ValueError(node_message(node, f"the mask input holds a batch of {mask.shape[0]} masks; give "
                                              "one mask (one region per node; chain a node per subject)"))
            mask = mask[0]
        if mask.ndim != 2:
            raise ValueError(node_message(node, f"expected a MASK [height, width] or [1, height, width], got "
                                                f"{list(mask.shape)}"))
        mask = mask.detach().to("cpu", torch.float32)
        if not bool((mask > 0.5).any()):
            raise ValueError(node_message(
                node, f"the mask is empty (no value above 0.5); paint the region where {phrase.strip() or 'the subject'!r} "
                "goes (LoadImage gives an empty 64x64 mask for an image without alpha: paint it in the mask editor)"))
        with named_errors(node, value=(LayoutError,)):
            if layout is None:
                layout = Layout(int(mask.shape[1]), int(mask.shape[0]))
            mask = fit_mask(mask, layout.width, layout.height, what="the mask")
            return (layout.add(LayoutSubject(phrase.strip(), int(occurrence), mask=mask, gamma=float(gamma))),)


class Cones2LayoutFromColorMap:
    """Subjects from a colour-coded image (the authors' layout format: colour -> phrase, γ+)."""

    NAME = "Cones2LayoutFromColorMap"
    DISPLAY_NAME = "Cones2 Layout from Color Map"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The colour-coded layout: one flat colour per subject on a "
                                               "background. Without a chained layout the canvas is its size."}),
                "colors": ("STRING", {"multiline": True, "default": "",
                                      "placeholder": "255,192,0: mug 2.5\n255,0,0: dog",
                                      "tooltip": f"One colour per line: {COLOR_SYNTAX} (or #RRGGBB), or the "
                                                 "authors' JSON color_context."}),
                "gamma": _GAMMA,
                "tolerance": ("FLOAT", {"default": DEFAULT_TOLERANCE, "min": 0.0, "max": 255.0, "step": 1.0,
                                        "tooltip": "How far (RGB distance) a pixel may be from a listed colour, "
                                                   "or from the line between two listed colours (anti-aliased "
                                                   "edges). 0 = exact match, as the authors' code."}),
                "background": ("STRING", {"default": "255,255,255", "tooltip":
                                          "Colours that are no subject, separated by ';' (e.g. '255,255,255; "
                                          "0,0,0'). Empty = none."}),
            },
            "optional": {"layout": (LAYOUT, {"tooltip": "A layout to add to. A colour map of another size but the "
                                                        "same aspect ratio is rescaled to its canvas."})},
        }

    RETURN_TYPES = (LAYOUT,)
    RETURN_NAMES = ("layout",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Reads subject regions from a colour-coded image, as the authors' inference config does "
                   "(colour -> phrase, γ+); anti-aliased edges are assigned to the nearer colour.")

    def build(self, image, colors, gamma, tolerance, background, layout=None):
        node = self.NAME
        if image.ndim == 4:
            if image.shape[0] != 1:
                raise ValueError(node_message(node, f"the image input holds a batch of {image.shape[0]} images; "
                                              "give the one colour map"))
            image = image[0]
        with named_errors(node, value=(LayoutError,)):
            entries = parse_color_mapping(colors)
            return (layout_from_color_map(image, entries, parse_color_list(background), float(tolerance),
                                          float(gamma), layout),)


class Cones2LayoutPreview:
    """Draws a layout's regions, coloured and labelled, over an optional image."""

    NAME = "Cones2LayoutPreview"
    DISPLAY_NAME = "Cones2 Layout Preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "layout": (LAYOUT, {"tooltip": "The layout to draw."}),
                "opacity": ("FLOAT", {"default": DEFAULT_OPACITY, "min": 0.0, "max": 1.0, "step": 0.05,
                                      "tooltip": "Opacity of the region fill."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Draw over this image (each image of a batch). None = a grey "
                                               "canvas of the layout's size."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "draw"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Draws each subject's region in its own colour with its label (phrase, #occurrence, γ+), "
                   "over an image or a grey canvas.")

    def draw(self, layout, opacity, image=None):
        return (render_layout_preview(layout, image, float(opacity)),)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = register_nodes(
    Cones2LayoutBoxes, Cones2LayoutFromMask, Cones2LayoutFromColorMap, Cones2LayoutPreview)
