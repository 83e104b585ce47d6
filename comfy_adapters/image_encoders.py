"""Image and text encoders for the scores: ComfyUI's CLIP_VISION and CLIP, and DINOv2 from a local folder.

Every encoder takes square ``[N, S, S, 3]`` images in 0..1 (``scoring.subject_scores.fit_square``
makes them) and returns ``[N, D]`` embeddings. Nothing is downloaded: DINOv2 loads with
``local_files_only=True`` from ``models/dinov2/<folder>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import folder_paths
import torch

from ..training.model_families import ModelFamilyError
from .model_families import clip_family

DINOV2_FOLDER = "dinov2"  # models/dinov2/<name>/{config.json, model.safetensors}
DINOV2_HINT = ("put a Hugging Face DINOv2 folder (config.json + model.safetensors, e.g. facebook/dinov2-base) in "
               "ComfyUI/models/dinov2/<name>/")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHT_FILE = "model.safetensors"  # safetensors only: a pickled .bin could run code when loaded


def register_dinov2_folder() -> None:
    """Register ``models/dinov2`` (keeping paths set by extra_model_paths.yaml)."""
    default = os.path.join(folder_paths.models_dir, DINOV2_FOLDER)
    paths, extensions = folder_paths.folder_names_and_paths.get(DINOV2_FOLDER, ([], set()))
    if default not in paths:
        paths = [default, *paths]
    folder_paths.folder_names_and_paths[DINOV2_FOLDER] = (paths, set(extensions))


def dinov2_folders() -> dict[str, Path]:
    """Model folders (name -> path) under every registered ``dinov2`` path that hold a config.json."""
    found = {}
    for base in folder_paths.get_folder_paths(DINOV2_FOLDER):
        if os.path.isdir(base):
            for name in sorted(os.listdir(base)):
                path = Path(base) / name
                if name not in found and (path / "config.json").is_file():
                    found[name] = path
    return found


@dataclass
class Dinov2Encoder:
    """A transformers ``Dinov2Model`` and its preprocessing (the CONES2_DINOV2 value)."""

    model: torch.nn.Module
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def encode(self, squares: torch.Tensor) -> torch.Tensor:
        """The CLS embeddings (``pooler_output``: the last layer's normalised class token)."""
        device = comfy.model_management.get_torch_device()
        self.model.to(device)
        try:
            mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
            x = (squares.to(device, torch.float32).movedim(-1, 1) - mean) / std
            dtype = next(self.model.parameters()).dtype
            with torch.no_grad():
                out = self.model(pixel_values=x.to(dtype))
            return out.pooler_output.float().cpu()
        finally:
            self.model.to(comfy.model_management.unet_offload_device())


def load_dinov2(name: str) -> Dinov2Encoder:
    """The DINOv2 model in ``models/dinov2/<name>``; a ValueError says what is missing and where it goes."""
    folders = dinov2_folders()
    if name not in folders:
        have = ", ".join(folders) or "none"
        raise ValueError(f"no DINOv2 folder {name!r} (found: {have}); {DINOV2_HINT}")
    path = folders[name]
    if not (path / WEIGHT_FILE).is_file():
        raise ValueError(f"models/dinov2/{name} has a config.json but no {WEIGHT_FILE} (pickled .bin weights are "
                         f"not loaded); {DINOV2_HINT}")
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "dinov2":
        raise ValueError(f"models/dinov2/{name} holds a {config.get('model_type')!r} model, not DINOv2; {DINOV2_HINT}")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval()
    size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    processor = path / "preprocessor_config.json"
    if processor.is_file():  # the crop the model was evaluated at (DINOv2: 224) and its normalisation
        p = json.loads(processor.read_text())
        crop = p.get("crop_size") or {}
        size = int(crop.get("height", size)) if isinstance(crop, dict) else int(crop)
        mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
    return Dinov2Encoder(model, size, mean, std, name)


def clip_vision_size(clip_vision) -> int:
    return int(clip_vision.image_size)


def clip_vision_is_dinov2(clip_vision) -> bool:
    """Whether core Load CLIP Vision gave a DINOv2 (it loads DINOv2-large/giant files too): no CLIP space."""
    import comfy.image_encoders.dino2

    return isinstance(clip_vision.model, comfy.image_encoders.dino2.Dinov2Model)


def encode_clip_vision(clip_vision, squares: torch.Tensor) -> torch.Tensor:
    """ComfyUI CLIP_VISION ``image_embeds`` (the projected embedding; DINOv2 there: its class token)."""
    out = clip_vision.encode_image(squares, crop=False)  # already square at the model's size: only normalised
    return out["image_embeds"].float().cpu()


def text_projection_problem(clip) -> str | None:
    """Why a CLIP's pooled output is not a CLIP-space text embedding, or None when it is.

    ComfyUI's CLIP returns the pooled vector of its family's last encoder (``pooled_encoder``).
    SD1.x checkpoints carry no text projection, and ComfyUI's SD1 CLIP returns that vector
    unprojected: no CLIP-T there. SD2.x (OpenCLIP-H) and SDXL (bigG) project it with
    ``text_projection``; a checkpoint without it loads anyway (ComfyUI ignores the missing
    key), leaving that layer unset. Official SD2.x and SDXL checkpoints carry it.
    """
    try:
        family = clip_family(clip)
    except ModelFamilyError:
        family = None
    encoder = getattr(clip.cond_stage_model, f"clip_{family.pooled_encoder}", None) if family else None
    if encoder is not None and not getattr(encoder, "return_projected_pooled", True):
        return (f"{family.label} checkpoints carry no text projection and ComfyUI's {family.label} CLIP returns "
                f"{family.encoder_names}'s pooled vector unprojected, so it is not in CLIP's joint space")
    source = encoder if encoder is not None else clip.cond_stage_model
    weights = [v for k, v in source.state_dict().items() if k.endswith("text_projection.weight")]
    if not weights:
        return "this text encoder has no text projection, so its embedding is not in CLIP's joint space"
    w = weights[-1].float()
    if not bool(torch.isfinite(w).all()) or float(w.abs().max()) == 0:
        return ("the checkpoint's text projection (text_projection) is missing or broken (zeros/NaN), so the text "
                "embedding is not in CLIP's joint space; use a checkpoint that carries it (official SD2.x and "
                "SDXL ones do)")
    return None


def encode_clip_text(clip, prompt: str) -> torch.Tensor:
    """The prompt's projected pooled CLIP embedding ``[D]`` (the first 77-token chunk's, as ComfyUI pools)."""
    tokens = clip.tokenize(prompt)
    _, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return pooled.reshape(-1).float().cpu()
