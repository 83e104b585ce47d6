"""Nodes that score generated images (subject fidelity, CLIP-T, identity mixing) and keep the best.

The math is ``scoring/``; the encoders are ``comfy_adapters/image_encoders.py``.
"""

from __future__ import annotations

import json

import torch

from ..comfy_adapters.image_encoders import (
    DINOV2_HINT,
    clip_vision_is_dinov2,
    clip_vision_size,
    dinov2_folders,
    encode_clip_text,
    encode_clip_vision,
    load_dinov2,
    text_projection_problem,
)
from ..scoring.references import SubjectPhotos, add_photos, match_layout
from ..scoring.score_report import CRITERIA, ScoreReport, heatmap
from ..scoring.subject_scores import (
    FITS,
    ScoreError,
    clip_t,
    crop,
    encoder_scores,
    fit_square,
    mask_crop,
    rank,
    subject_boxes,
)
from .node_errors import named_errors, node_message
from .node_registry import register_nodes
from .node_types import DINOV2, LAYOUT, SCORES, SUBJECT_REFERENCES
from .node_types import SCORING_CATEGORY as CATEGORY

MAX_SEED = 0xFFFFFFFFFFFFFFFF
CLIP_T_HINT = ("CLIP-T needs the text encoder and the image tower of the same CLIP model: for SD2.x connect its CLIP "
               "and the OpenCLIP ViT-H/14 image encoder (e.g. CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors), for SDXL "
               "its CLIP and OpenCLIP ViT-bigG/14 (e.g. clip_vision_g.safetensors), in models/clip_vision, loaded by "
               "Load CLIP Vision; SD1.x's CLIP has no text projection, so it gives no CLIP-T")


class Cones2SubjectReference:
    """A subject's reference photos, by phrase (chainable: one node per subject)."""

    NAME = "Cones2SubjectReference"
    DISPLAY_NAME = "Cones2 Subject Reference Photos"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The subject's photos (a batch; e.g. the ones its residual was "
                                                "trained on)."}),
                "phrase": ("STRING", {"default": "", "tooltip": "The layout phrase these photos show, e.g. 'dog'."}),
                "occurrence": ("INT", {"default": 1, "min": 1, "max": 75, "tooltip":
                                       "Which occurrence of the phrase (1 = first)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional: the subject in each photo (one mask per photo, or one for "
                                             "all); each photo is cut to its mask's bounding box."}),
                "references": (SUBJECT_REFERENCES, {"tooltip": "References of other subjects to add to."}),
            },
        }

    RETURN_TYPES = (SUBJECT_REFERENCES,)
    RETURN_NAMES = ("references",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = "Reference photos of one layout subject, for Cones2ScoreSubjects; chain one node per subject."

    def build(self, images, phrase, occurrence, mask=None, references=None):
        node = self.NAME
        phrase = phrase.strip()
        if not phrase:
            raise ValueError(f"{node}: the phrase is empty; write the layout phrase these photos show")
        images = images.detach().to("cpu", torch.float32)
        masks = [None] * images.shape[0]
        if mask is not None:
            mask = mask.detach().to("cpu", torch.float32)
            mask = mask[None] if mask.ndim == 2 else mask
            if mask.shape[0] not in (1, images.shape[0]):
                raise ValueError(f"{node}: {mask.shape[0]} masks for {images.shape[0]} photos of {phrase!r}; give "
                                 "one mask per photo, or one for all")
            if tuple(mask.shape[1:]) != tuple(images.shape[1:3]):
                raise ValueError(f"{node}: the mask is {mask.shape[2]}x{mask.shape[1]} but the photos of {phrase!r} "
                                 f"are {images.shape[2]}x{images.shape[1]}; give masks of the photos' size")
            masks = [mask[i if mask.shape[0] > 1 else 0] for i in range(images.shape[0])]
            for i, m in enumerate(masks):
                if not bool((m > 0.5).any()):
                    raise ValueError(f"{node}: the mask of photo {i + 1} of {phrase!r} is empty (no value above "
                                     "0.5); paint the subject, or leave the mask unconnected")
        photos = SubjectPhotos(phrase, int(occurrence), tuple(images[i] for i in range(images.shape[0])), tuple(masks))
        return (add_photos(references or (), photos),)


class Cones2LoadDINOv2:
    """A DINOv2 model from a local folder (models/dinov2/<name>), for the DINO variant of the scores."""

    NAME = "Cones2LoadDINOv2"
    DISPLAY_NAME = "Cones2 Load DINOv2"

    @classmethod
    def INPUT_TYPES(cls):
        names = sorted(dinov2_folders()) or ["(none found)"]
        return {"required": {"model_name": (names, {"tooltip": "A folder under models/dinov2 holding a Hugging Face "
                                                               "DINOv2 model (config.json + model.safetensors)."})}}

    RETURN_TYPES = (DINOV2,)
    RETURN_NAMES = ("dinov2",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = f"Loads DINOv2 with transformers, offline: {DINOV2_HINT}."

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        if model_name not in dinov2_folders():  # our message instead of ComfyUI's "value not in list"
            return node_message(cls.NAME, f"no DINOv2 folder {model_name!r}; {DINOV2_HINT}")
        return True

    def load(self, model_name):
        with named_errors(self.NAME, value=(ValueError,)):
            return (load_dinov2(model_name),)


class Cones2ScoreSubjects:
    """Per image: each subject's similarity to its own and the other subjects' photos, mixing, CLIP-T."""

    NAME = "Cones2ScoreSubjects"
    DISPLAY_NAME = "Cones2 Score Subjects"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated images (a batch)."}),
                "layout": (LAYOUT, {"tooltip": "The layout they were generated with: each subject is cropped to its "
                                               "region's bounding box."}),
                "references": (SUBJECT_REFERENCES, {"tooltip": "The subjects' photos (Cones2SubjectReference)."}),
                "fit": (list(FITS), {"default": "pad", "tooltip":
                                     "How a crop of any aspect becomes the encoder's square: pad it with grey (keeps "
                                     "the whole subject), take its centre square (CLIP's own preprocessing), or "
                                     "stretch it. Photos are fitted the same way."}),
            },
            "optional": {
                "clip_vision": ("CLIP_VISION", {"tooltip": "A CLIP image encoder (Load CLIP Vision): CLIP-I scores, "
                                                           "and CLIP-T with a matching CLIP."}),
                "dinov2": (DINOV2, {"tooltip": "DINOv2 (Cones2LoadDINOv2): MuDI's D&C-DINO variant."}),
                "clip": ("CLIP", {"tooltip": "For CLIP-T: the text encoder of the same CLIP as clip_vision (SD2.x's "
                                             "CLIP with OpenCLIP ViT-H/14, SDXL's with ViT-bigG/14; SD1.x's has no "
                                             "text projection)."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                      "For CLIP-T: the prompt, with class words (not residual names)."}),
            },
        }

    RETURN_TYPES = (SCORES, "STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("scores", "table", "json", "heatmap")
    FUNCTION = "score"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("Scores each generated image: every subject's region crop against every subject's photos "
                   "(CLIP-I / DINO), MuDI's identity-mixing score (own minus best other), and CLIP-T.")

    def score(self, images, layout, references, fit, clip_vision=None, dinov2=None, clip=None, prompt=""):
        node = self.NAME
        if clip_vision is None and dinov2 is None:
            raise ValueError(f"{node}: no image encoder; connect Load CLIP Vision (clip_vision) or Cones2LoadDINOv2 "
                             "(dinov2), or both")
        with named_errors(node, value=(ScoreError,)):
            report = score_batch(images, layout, references, fit, clip_vision, dinov2, clip, prompt)
        table, data = report.table(), report.to_json()
        return {"ui": {"text": [table], "cones2_scores": [report.as_dict()]},
                "result": (report, table, data, heatmap(report))}


def score_batch(images, layout, references, fit, clip_vision, dinov2, clip, prompt) -> ScoreReport:
    subjects, photos = match_layout(layout, references)
    images = images.detach().to("cpu", torch.float32)
    boxes = subject_boxes(layout, subjects, int(images.shape[2]), int(images.shape[1]))
    encoders = {}
    vision_is_dino = clip_vision is not None and clip_vision_is_dinov2(clip_vision)
    if vision_is_dino and dinov2 is not None:
        raise ScoreError("clip_vision holds a DINOv2 model and dinov2 another one; connect one DINOv2, and a CLIP "
                         "image encoder on clip_vision for CLIP-I / CLIP-T")
    if clip_vision is not None:
        encoders["dinov2" if vision_is_dino else "clip"] = (clip_vision_size(clip_vision),
                                                            lambda x: encode_clip_vision(clip_vision, x))
    if dinov2 is not None:
        encoders["dinov2"] = (dinov2.image_size, dinov2.encode)
    per_image = [dict() for _ in range(images.shape[0])]
    whole_clip = None
    for name, (size, encode) in encoders.items():
        refs = [encode(torch.stack([fit_square(mask_crop(img, m), size, fit) for img, m in zip(p.images, p.masks, strict=True)]))
                for p in photos]
        squares = [fit_square(crop(img, box), size, fit) for img in images for box in boxes]
        squares += [fit_square(img, size, fit) for img in images]
        emb = encode(torch.stack(squares))
        n, s = images.shape[0], len(boxes)
        for b in range(n):
            per_image[b][name] = encoder_scores(emb[b * s:(b + 1) * s], refs, emb[n * s + b])
        if name == "clip":
            whole_clip = emb[n * s:]
    clip_t_values, notes = None, []
    if clip is not None or prompt.strip():
        why = _clip_t_problem(clip, clip_vision, prompt)
        if why is None:
            text = encode_clip_text(clip, prompt.strip())
            if text.shape[-1] != whole_clip.shape[-1]:
                why = (f"the text embedding is {text.shape[-1]} wide but the image encoder's is "
                       f"{whole_clip.shape[-1]}: they are not the same CLIP")
            else:
                clip_t_values = tuple(clip_t(e, text) for e in whole_clip)
        if why is not None:
            notes.append(f"CLIP-T not computed: {why}. {CLIP_T_HINT}.")
    return ScoreReport(tuple(s.label for s in subjects), tuple(len(p.images) for p in photos), tuple(encoders),
                       tuple(per_image), clip_t_values, tuple(notes))


def _clip_t_problem(clip, clip_vision, prompt) -> str | None:
    if clip is None:
        return "no CLIP connected"
    if not prompt.strip():
        return "the prompt is empty"
    if clip_vision is None:
        return "no CLIP image encoder (clip_vision) connected"
    if clip_vision_is_dinov2(clip_vision):
        return "the clip_vision model is DINOv2, which has no text tower"
    return text_projection_problem(clip)


class Cones2PickBest:
    """The best k images of a batch by a score, with their batch indices and seed."""

    NAME = "Cones2PickBest"
    DISPLAY_NAME = "Cones2 Pick Best Images"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The batch that was scored."}),
                "scores": (SCORES, {"tooltip": "Cones2ScoreSubjects' scores of that batch."}),
                "score": (list(CRITERIA), {"default": "separation (CLIP)", "tooltip":
                                           "What to rank by (higher is better). separation: MuDI's mixing score "
                                           "with the layout (own minus best other, summed over subjects)."}),
                "keep": ("INT", {"default": 2, "min": 1, "max": 4096, "tooltip": "How many images to keep."}),
                "sampler_seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "tooltip":
                                         "The sampler's seed (link the same value to both), to print how to "
                                         "regenerate each kept image."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("images", "table", "json")
    FUNCTION = "pick"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("Ranks a scored batch and keeps the best images. Image i of a batch sampled with seed s is "
                   "regenerated alone by the same seed on Latent From Batch (batch_index i, length 1).")

    def pick(self, images, scores, score, keep, sampler_seed):
        node = self.NAME
        if images.shape[0] != len(scores.images):
            raise ValueError(f"{node}: {images.shape[0]} images but scores of {len(scores.images)}; connect the "
                             "batch that Cones2ScoreSubjects scored")
        with named_errors(node, value=(ScoreError,)):
            values = scores.values(score)
        order = rank(values, int(keep))
        picks = [{"rank": r + 1, "batch_index": i, "seed": int(sampler_seed), "score": values[i]}
                 for r, i in enumerate(order)]
        table = "\n".join([f"best {len(order)} of {len(values)} by {score}:"] + [
            f"{p['rank']}. batch index {p['batch_index']} (seed {p['seed']}): {p['score']:.4f}" for p in picks])
        data = {"score": score, "seed": int(sampler_seed), "picks": picks}
        return {"ui": {"text": [table], "cones2_picks": [data]},
                "result": (images[order], table, json.dumps(data, indent=1))}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = register_nodes(
    Cones2SubjectReference, Cones2LoadDINOv2, Cones2ScoreSubjects, Cones2PickBest)
