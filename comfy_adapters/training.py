"""ComfyUI's MODEL / CLIP / VAE adapted to the training core (training/trainer.py).

Shared by the Cones2TrainResidual node and scripts/train_residual.py. Nothing here
changes the objects it is given: the text encoder is copied, the UNet is used through a
clone of its ModelPatcher, the VAE only encodes.

Gradients through ComfyUI's UNet: weights loaded inside a prompt are inference tensors,
which autograd refuses to save even for gradients w.r.t. the inputs. An identity weight
wrapper on every layer makes ComfyUI's ops hand each layer a fresh copy of its weight
(``cast_bias_weight`` copies when a layer has weight functions), which autograd accepts;
this is the mechanism core TrainLoraNode uses for its adapters.

DynamicVRAM (newer hosts, on by default on NVIDIA: ``ModelPatcherDynamic``) loads weights
lazily: it refuses ``force_full_load``, keeps weights where the identity wrapper cannot copy
them, and applies CLIP LoRAs only while encoding. Training therefore works on a non-dynamic
delegate of each patcher (``static_patcher``, ``static_clip``), as core training does, and sets
the host's ``model_management.in_training`` flag where it has one (``host_training_flag``).
Each of these is feature-detected, so older hosts (0.3.64) take the plain path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import comfy.clip_model
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
from torch.utils.checkpoint import checkpoint

from ..guidance.prompt_tokens import content_tokens
from ..training.clip_text import ClipTextEncoder, ConcatTextEncoder, TextEncoder, encoder_from_state_dict
from ..training.errors import TrainingInputError
from ..training.model_families import SD2, SDXL, ModelFamily, ModelFamilyError
from ..training.prompt_ids import SpecialTokens, phrase_token_ids
from ..training.subject_images import check_images
from ..training.train_settings import resolved_resolution
from ..training.trainer import (
    TrainResult,
    TrainSettings,
    check_resume_settings,
    check_settings,
    train_residual,
    training_prompt,
)
from .model_families import matching_family, text_encoder_fingerprint

log = logging.getLogger("cones2")

CHECK_PROMPT = "a photo of a dog on the beach"
MAX_RELATIVE_ENCODING_ERROR = 2e-2  # fp16 CLIP on a GPU differs from our float32 copy by ~1e-3


def dynamic_vram(patcher) -> bool:
    """Whether ``patcher`` loads its weights lazily (a DynamicVRAM ``ModelPatcherDynamic``)."""
    is_dynamic = getattr(patcher, "is_dynamic", None)
    return bool(is_dynamic()) if callable(is_dynamic) else False


def static_source(dynamic: bool, has_delegate: bool) -> str:
    """How to get a patcher that loads every weight when loaded: "clone" (it already does),
    "delegate" (the host's ``get_non_dynamic_delegate()``, what core CFGGuider uses) or
    "reload" (``clone(disable_dynamic=True)``: the host loads the model again without DynamicVRAM)."""
    if not dynamic:
        return "clone"
    return "delegate" if has_delegate else "reload"


def static_patcher(patcher, what: str):
    """A clone of ``patcher`` (MODEL or CLIP patcher) that loads all its weights, with patches applied."""
    delegate = getattr(patcher, "get_non_dynamic_delegate", None)
    source = static_source(dynamic_vram(patcher), callable(delegate))
    try:
        if source == "delegate":
            return delegate().clone()  # our clone: weight wrappers never land on a shared delegate
        if source == "reload":
            return patcher.clone(disable_dynamic=True)
    except RuntimeError as e:  # the loader registered no way to reload the model ("cached_patcher_init")
        raise TrainingInputError(
            f"the {what} is loaded with DynamicVRAM and its loader cannot give a fully loaded copy ({e}). "
            f"Load the checkpoint with CheckpointLoaderSimple, or start ComfyUI with --disable-dynamic-vram."
        ) from None
    return patcher.clone()


def static_clip(clip):
    """``clip`` itself, or a clone on a non-dynamic patcher when it uses DynamicVRAM (whose LoRA
    patches are applied only while encoding, so its weights would not include them)."""
    if not dynamic_vram(clip.patcher):
        return clip
    out = clip.clone()
    out.patcher = static_patcher(clip.patcher, "CLIP")
    return out


@contextlib.contextmanager
def host_training_flag(model_management=comfy.model_management):
    """Set the host's ``in_training`` flag (newer hosts: pure-torch paths instead of fused
    inference kernels) for the duration; nothing on hosts without one."""
    if not hasattr(model_management, "in_training"):
        yield
        return
    previous = model_management.in_training
    model_management.in_training = True
    try:
        yield
    finally:
        model_management.in_training = previous


def check_models(model, clip, vae) -> ModelFamily:
    """The family of a MODEL, CLIP and VAE that can train a residual; TrainingInputError naming the problem otherwise."""
    if model is None or clip is None or vae is None:
        missing = [n for n, o in (("model", model), ("clip", clip), ("vae", vae)) if o is None]
        raise TrainingInputError(
            f"the {', '.join(missing)} input is None; load an SD1.x, SD2.x or SDXL checkpoint with "
            "CheckpointLoaderSimple and connect its MODEL, CLIP and VAE."
        )
    try:
        family = matching_family(model, clip)
    except ModelFamilyError as e:
        raise TrainingInputError(str(e)) from None
    base = model.model
    plain = (not getattr(base, "concat_keys", ()) and getattr(base.diffusion_model, "in_channels", 4) == 4
             and (isinstance(base, comfy.model_base.SDXL) if family == SDXL else not base.adm_channels))
    if not plain:  # inpainting, instruct-pix2pix, unCLIP, upscaler, ...: the UNet needs more than text
        raise TrainingInputError(
            f"the MODEL is {type(base.model_config).__name__}, an {family.label} variant whose UNet takes more "
            f"than a text prompt (an image, a mask or an image embedding). Cones 2 trains on text-to-image "
            f"checkpoints: load a plain {family.label} one (e.g. {family.checkpoint})."
        )
    channels = getattr(vae, "latent_channels", 4)
    if channels != 4:
        raise TrainingInputError(
            f"the VAE makes {channels}-channel latents; {family.label}'s VAE makes 4. Use the checkpoint's VAE.")
    return family


def prediction_type(model) -> str:
    """``"eps"`` or ``"v"`` from the MODEL's sampling object (ModelSamplingDiscrete overrides count)."""
    ms = model.get_model_object("model_sampling")
    ok = isinstance(ms, comfy.model_sampling.ModelSamplingDiscrete) and not isinstance(
        ms, (comfy.model_sampling.EDM, comfy.model_sampling.X0, comfy.model_sampling.CONST))
    if ok and isinstance(ms, comfy.model_sampling.V_PREDICTION):
        return "v"
    if ok and isinstance(ms, comfy.model_sampling.EPS):
        return "eps"
    kinds = ", ".join(c.__name__ for c in type(ms).__mro__[1:-1])
    raise TrainingInputError(
        f"the MODEL samples as {kinds}; Cones 2 trains eps or v-prediction models on their discrete "
        "schedule. Remove the ModelSampling node or set it to eps / v_prediction."
    )


def alphas_cumprod(model) -> torch.Tensor:
    """The discrete schedule ``a_t = 1 / (1 + sigma_t^2)`` from the MODEL's sigma table (float64 -> float32)."""
    ms = model.get_model_object("model_sampling")
    with torch.inference_mode(False):
        sigmas = ms.sigmas.detach().to("cpu", torch.float64).clone()
    return (1.0 / (1.0 + sigmas ** 2)).float()


def family_tokenizer(clip, family: ModelFamily) -> tuple[Callable[[str], list[int]], SpecialTokens]:
    """``text -> content ids`` through ComfyUI's own ``clip.tokenize`` (the same ids inference uses).

    SDXL's two tokenizers give the same content ids at the same positions (they differ only in
    padding, which the trainable encoder applies per encoder); a CLIP where they differ is refused.
    """
    key = family.encoders[0]
    tok = getattr(clip.tokenizer, f"clip_{key}")
    special = SpecialTokens(start=tok.start_token, end=tok.end_token,
                            pad=tok.pad_token if tok.pad_token is not None else tok.end_token,
                            length=tok.max_length)

    def content(tokens, text: str) -> list[int]:
        ids = []
        for _, token, weight in content_tokens(tokens, special.start, special.end):
            if not isinstance(token, int):
                raise TrainingInputError(f"{text!r} uses an embedding; write plain words for training.")
            if weight != 1.0:
                raise TrainingInputError(
                    f"{text!r} has prompt weights like (word:1.2); training uses plain text, remove them.")
            ids.append(token)
        return ids

    def tokenize(text: str) -> list[int]:
        tokens = clip.tokenize(text)
        ids = content(tokens[key], text)
        for other in family.encoders[1:]:
            if content(tokens[other], text) != ids:
                raise TrainingInputError(
                    f"this CLIP's {key!r} and {other!r} tokenizers split {text!r} differently; Cones 2 needs the "
                    f"{family.label} tokenizers, which share every position. Use the checkpoint's own CLIP.")
        return ids

    return tokenize, special


_ACTIVATION_NAMES = {id(f): name for name, f in comfy.clip_model.ACTIVATIONS.items()}


def _output_layer(module, layer_index: int | None) -> tuple[int, bool]:
    """(the hidden state ComfyUI conditions on, as ``hidden_states[i]``; whether the final norm is applied) of one
    of the host's text encoders (``SDClipModel``), with CLIPSetLastLayer's ``layer_index`` applied by the host's own
    ``set_clip_options`` (then its defaults back, as every ``encode_from_tokens`` starts with)."""
    module.reset_clip_options()
    try:
        if layer_index is not None:
            module.set_clip_options({"layer": layer_index})
        layer, index, norm = module.layer, module.layer_idx, module.layer_norm_hidden_state
    finally:
        module.reset_clip_options()
    if layer == "last":
        return -1, True
    if layer == "hidden":
        return index, bool(norm)
    raise TrainingInputError(f"this CLIP's text encoder outputs its {layer!r} layers; Cones 2 needs one layer.")


def _encoder_copy(module, layer_index: int | None, device) -> ClipTextEncoder:
    """A float32 ``ClipTextEncoder`` copy of one of the host's text encoders (its loaded, patched weights)."""
    index, final_norm = _output_layer(module, layer_index)
    first = module.transformer.text_model.encoder.layers[0]
    activation = _ACTIVATION_NAMES.get(id(first.mlp.activation))
    if activation not in ("gelu", "quick_gelu"):  # a host that wraps them otherwise: _check_encoding has the word
        activation = "gelu" if first.mlp.activation is torch.nn.functional.gelu else "quick_gelu"
    with torch.inference_mode(False):
        return encoder_from_state_dict(module.transformer.state_dict(), layer_index=index,
                                       heads=first.self_attn.heads, activation=activation,
                                       final_norm=final_norm, device=device)


def trainable_encoder(clip, family: ModelFamily, tokenize, special: SpecialTokens, device,
                      check_text: str = CHECK_PROMPT) -> tuple[TextEncoder, torch.Tensor | None]:
    """A float32 copy of the CLIP's text encoder(s), checked to encode ``check_text`` exactly as ComfyUI does,
    and ComfyUI's pooled vector of ``check_text`` (from the same call; SDXL's is the ADM input's).

    SDXL: a ``ConcatTextEncoder`` of CLIP-L and OpenCLIP bigG in ComfyUI's order, each with its
    tokenizer's padding (CLIP-L: the end token; bigG: 0)."""
    source = static_clip(clip)
    source.load_model()  # applies any CLIP patches (LoRA) to the weights we copy
    layer_index = getattr(clip, "layer_idx", None)  # set by CLIPSetLastLayer
    modules = [getattr(source.patcher.model, f"clip_{key}") for key in family.encoders]
    parts = [_encoder_copy(m, layer_index, device) for m in modules]
    if len(parts) == 1:
        encoder = parts[0]
    else:
        pads = []
        for key in family.encoders:
            tok = getattr(clip.tokenizer, f"clip_{key}")
            pads.append(tok.pad_token if tok.pad_token is not None else tok.end_token)
        encoder = ConcatTextEncoder(parts, pads=pads, end=special.end)
    pooled = _check_encoding(encoder, clip, tokenize, special, device, check_text)
    return encoder, pooled


def _check_encoding(encoder: TextEncoder, clip, tokenize, special: SpecialTokens, device,
                    text: str = CHECK_PROMPT) -> torch.Tensor | None:
    ids = [special.start, *tokenize(text), special.end]
    ids += [special.pad] * (special.length - len(ids))
    with torch.inference_mode(False), torch.no_grad():
        ours = encoder(torch.tensor([ids], device=device)).float().cpu()
        theirs, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    theirs = theirs.float().cpu()
    err = float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12)) if ours.shape == theirs.shape else math.inf
    if not err <= MAX_RELATIVE_ENCODING_ERROR:
        raise TrainingInputError(
            f"the trainable copy of this CLIP does not reproduce ComfyUI's encoding (relative error {err:.3g}). "
            "Connect the checkpoint's CLIP directly (no custom text-encoder nodes in between)."
        )
    return pooled.detach().float().cpu().clone() if pooled is not None else None


def adm_condition(model, pooled: torch.Tensor | None, resolution: int) -> torch.Tensor | None:
    """The UNet's ADM input ``y`` ``[1, adm]`` for training at ``resolution`` px, or None (SD1, SD2).

    SDXL: ``pooled``, the FROZEN CLIP's pooled vector of the training prompt (a residual changes
    rows, never the pooled vector, so training sees what inference gives), and the size
    conditioning of a plain CLIPTextEncode at that size (width = height = the image, no crop),
    through the model's own ``encode_adm``.
    """
    if not isinstance(model.model, comfy.model_base.SDXL):
        return None
    with torch.inference_mode(False), torch.no_grad():
        y = model.model.encode_adm(pooled_output=pooled, width=resolution, height=resolution, crop_w=0, crop_h=0,
                                   target_width=resolution, target_height=resolution, device=torch.device("cpu"))
    return y.detach().float().clone()


def vae_encoder(vae, model) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[1, H, W, 3]`` pixels -> model-scaled latents, through ComfyUI's VAE."""
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.model.process_latent_in(vae.encode(pixels)).float()
    return encode


def _identity(weight):
    return weight


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        # the UNet mutates transformer_options between blocks: recompute with the values of this call
        args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return run


class ComfyDenoiser:
    """The MODEL's UNet as the core's ``denoiser(x_t, t, context) -> eps or v``, frozen, gradients to ``context``.

    ``y``: the ADM input ``[1, adm]`` (SDXL's pooled vector and sizes, ``adm_condition``), the same
    for every call; None for UNets without one.

    Use as a context manager: with ``gradient_checkpointing``, entering wraps the UNet's res-
    and transformer blocks in activation checkpoints and leaving restores them. The first
    call loads the UNet through a clone of the ModelPatcher (after the photos are encoded).
    """

    def __init__(self, model, *, gradient_checkpointing: bool = True, y: torch.Tensor | None = None):
        self.patcher = static_patcher(model, "MODEL")
        self.y = y
        for name, module in self.patcher.model.named_modules():
            if hasattr(module, "weight_function"):
                for param, value in module.named_parameters(recurse=False):
                    if value is not None:
                        self.patcher.add_weight_wrapper(f"{name}.{param}", _identity)
        self.model_sampling = self.patcher.get_model_object("model_sampling")
        self.gradient_checkpointing = gradient_checkpointing
        self._patched: list[tuple[torch.nn.Module, object]] = []
        self.loaded = False

    def __enter__(self) -> ComfyDenoiser:
        if self.gradient_checkpointing:
            for module in self.patcher.model.diffusion_model.modules():
                if isinstance(module, (ResBlock, SpatialTransformer)):
                    self._patched.append((module, module.__dict__.get("forward")))
                    module.forward = _checkpointed(module.forward)
        return self

    def __exit__(self, *exc) -> None:
        for module, previous in reversed(self._patched):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        self._patched.clear()

    def load(self) -> None:
        """Load the UNet for training (after the VAE has encoded the photos, so it is not unloaded again).

        As core TrainLoraNode, ask for all free memory: ComfyUI offloads every other model (the CLIP,
        the VAE) for the run; they come back when next used.
        """
        comfy.model_management.load_models_gpu([self.patcher], memory_required=1e20, force_full_load=True)
        base = self.patcher.model
        self.diffusion_model = base.diffusion_model
        self.dtype = base.manual_cast_dtype or base.get_dtype()
        self.device = self.patcher.load_device
        self.transformer_options = dict(self.patcher.model_options.get("transformer_options", {}))
        with torch.inference_mode(False):
            self.sigmas = self.model_sampling.sigmas.detach().clone().to(self.device, torch.float32)
        self.loaded = True

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if not self.loaded:
            self.load()
        sigma = self.sigmas[t.to(self.sigmas.device)]
        timestep = self.model_sampling.timestep(sigma.to(self.model_sampling.sigmas.device)).float()
        options = {**self.transformer_options, "sigmas": sigma, "cond_or_uncond": [0]}
        dtype = self.dtype
        if torch.is_autocast_enabled(self.device.type):
            # inputs in the autocast dtype: ComfyUI's ops then copy each weight straight to it
            dtype = torch.get_autocast_dtype(self.device.type)
        extra = {}
        if self.y is not None:
            extra["y"] = self.y.to(self.device, dtype).expand(x_t.shape[0], -1)
        out = self.diffusion_model(x_t.to(self.device, dtype), timestep.to(self.device),
                                   context=context.to(self.device, dtype), transformer_options=options, **extra)
        return out.float()


def train_with_comfy(model, clip, vae, images: Sequence[torch.Tensor], phrase: str, settings: TrainSettings, *,
                     progress=None, check_interrupt=None, checkpoint_path: Path | None = None,
                     resume_path: Path | None = None, phase_progress=None) -> TrainResult:
    """Train a residual from ComfyUI objects: validate, adapt, run the core loop. Call outside inference mode.

    The family (SD1.x, SD2.x, SDXL) comes from the MODEL and CLIP; resolution 0 becomes the model's
    native size. The result's ``base_model`` is the family's key, ``text_encoders`` the CLIP's
    fingerprint (``text_encoder_fingerprint``, which applying the residual compares)."""
    check_settings(settings)
    family = check_models(model, clip, vae)
    prediction = prediction_type(model)
    settings = resolved_resolution(settings, family, prediction)
    if family == SD2 and prediction == "v" and settings.resolution < SD2.resolution:
        log.warning("Cones 2 training: a v-prediction (SD2.x 768) model at %d px; it was trained at 768 px, "
                    "which the authors used too.", settings.resolution)
    tokenize, special = family_tokenizer(clip, family)
    phrase_ids = phrase_token_ids(tokenize, phrase, special)  # cheap checks before the encoder copy and the VAE
    check_images(images)
    if resume_path:
        check_resume_settings(resume_path, settings, phrase, phrase_ids, prediction)
    prompt = training_prompt(tokenize, phrase, phrase_ids, settings, special).texts[0]
    device = comfy.model_management.get_torch_device()
    encoder, pooled = trainable_encoder(clip, family, tokenize, special, device, check_text=prompt)
    y = adm_condition(model, pooled, settings.resolution)
    schedule = alphas_cumprod(model)
    with ComfyDenoiser(model, gradient_checkpointing=settings.gradient_checkpointing, y=y) as denoiser, \
            host_training_flag():
        result = train_residual(encoder=encoder, tokenize=tokenize, phrase=phrase, images=images,
                                encode_image=vae_encoder(vae, denoiser.patcher), denoiser=denoiser,
                                alphas_cumprod=schedule, prediction=prediction, settings=settings,
                                special=special, device=device, progress=progress,
                                check_interrupt=check_interrupt, checkpoint_path=checkpoint_path,
                                resume_path=resume_path, phase_progress=phase_progress)
    return dataclasses.replace(result, base_model=family.key, text_encoders=text_encoder_fingerprint(clip))


@contextlib.contextmanager
def training_mode():
    """Leave ComfyUI's inference mode for the duration of a training run."""
    with torch.inference_mode(False), torch.enable_grad():
        yield
