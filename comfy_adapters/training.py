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
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import comfy.model_management
import comfy.model_sampling
import comfy.supported_models
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
from torch.utils.checkpoint import checkpoint

from ..guidance.prompt_tokens import content_tokens
from ..training.clip_text import ClipTextEncoder, encoder_from_state_dict
from ..training.errors import TrainingInputError
from ..training.prompt_ids import SpecialTokens, phrase_token_ids
from ..training.subject_images import check_images
from ..training.trainer import (
    TrainResult,
    TrainSettings,
    check_resume_settings,
    check_settings,
    train_residual,
)

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


def check_sd2(model, clip, vae) -> None:
    """Raise TrainingInputError unless MODEL, CLIP and VAE are an SD2.x text-to-image triple."""
    if model is None or clip is None or vae is None:
        missing = [n for n, o in (("model", model), ("clip", clip), ("vae", vae)) if o is None]
        raise TrainingInputError(
            f"the {', '.join(missing)} input is None; load an SD2.x checkpoint with CheckpointLoaderSimple "
            "and connect its MODEL, CLIP and VAE."
        )
    encoders = sorted(clip.tokenize("").keys())
    if encoders != ["h"] or getattr(clip.cond_stage_model, "clip_h", None) is None:
        raise TrainingInputError(
            f"this CLIP is not SD2's (its text encoders: {encoders}; SD2 has one OpenCLIP-H 'h'). Cones 2 "
            "trains residuals for SD2.x only: load an SD2.x checkpoint (e.g. v2-1_512-ema-pruned or v2-1_768-ema-pruned)."
        )
    config = getattr(model.model, "model_config", None)
    if type(config) is not comfy.supported_models.SD20:
        raise TrainingInputError(
            f"the MODEL is {type(config).__name__}, not SD2.x text-to-image. Cones 2 trains residuals for SD2.x "
            "(SD2.0/2.1, 512 or 768): load one with CheckpointLoaderSimple."
        )
    channels = getattr(vae, "latent_channels", 4)
    if channels != 4:
        raise TrainingInputError(f"the VAE makes {channels}-channel latents; SD2's VAE makes 4. Use the checkpoint's VAE.")


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
        f"the MODEL samples as {kinds}; Cones 2 trains eps or v-prediction SD2 models on their discrete "
        "schedule. Remove the ModelSampling node or set it to eps / v_prediction."
    )


def alphas_cumprod(model) -> torch.Tensor:
    """The discrete schedule ``a_t = 1 / (1 + sigma_t^2)`` from the MODEL's sigma table (float64 -> float32)."""
    ms = model.get_model_object("model_sampling")
    with torch.inference_mode(False):
        sigmas = ms.sigmas.detach().to("cpu", torch.float64).clone()
    return (1.0 / (1.0 + sigmas ** 2)).float()


def sd2_tokenizer(clip) -> tuple[Callable[[str], list[int]], SpecialTokens]:
    """``text -> content ids`` through ComfyUI's own ``clip.tokenize`` (the same ids inference uses)."""
    tok = clip.tokenizer.clip_h
    special = SpecialTokens(start=tok.start_token, end=tok.end_token,
                            pad=tok.pad_token if tok.pad_token is not None else tok.end_token,
                            length=tok.max_length)

    def tokenize(text: str) -> list[int]:
        ids = []
        for _, token, weight in content_tokens(clip.tokenize(text)["h"], special.start, special.end):
            if not isinstance(token, int):
                raise TrainingInputError(f"{text!r} uses an embedding; write plain words for training.")
            if weight != 1.0:
                raise TrainingInputError(
                    f"{text!r} has prompt weights like (word:1.2); training uses plain text, remove them.")
            ids.append(token)
        return ids

    return tokenize, special


def trainable_encoder(clip, tokenize, special: SpecialTokens, device) -> ClipTextEncoder:
    """A float32 copy of the CLIP's SD2 text encoder, checked to encode exactly as ComfyUI does."""
    source = static_clip(clip)
    clip_h = source.patcher.model.clip_h  # the module the patcher loads (and patches)
    default_layer, default_index = clip_h.options_default[0], clip_h.options_default[1]
    layer_index = getattr(clip, "layer_idx", None)  # set by CLIPSetLastLayer
    if layer_index is None:
        layer_index = default_index if default_layer == "hidden" else -1
    if abs(layer_index) > clip_h.num_layers:
        layer_index = -1
    source.load_model()  # applies any CLIP patches (LoRA) to the weights we copy
    heads = clip_h.transformer.text_model.encoder.layers[0].self_attn.heads
    activation = clip_h.transformer.text_model.encoder.layers[0].mlp.activation
    act = "gelu" if activation is torch.nn.functional.gelu else "quick_gelu"
    with torch.inference_mode(False):
        encoder = encoder_from_state_dict(clip_h.transformer.state_dict(), layer_index=layer_index,
                                          heads=heads, activation=act, device=device)
    _check_encoding(encoder, clip, tokenize, special, device)
    return encoder


def _check_encoding(encoder: ClipTextEncoder, clip, tokenize, special: SpecialTokens, device) -> None:
    ids = [special.start, *tokenize(CHECK_PROMPT), special.end]
    ids += [special.pad] * (special.length - len(ids))
    with torch.inference_mode(False), torch.no_grad():
        ours = encoder(torch.tensor([ids], device=device)).float().cpu()
    theirs = clip.encode_from_tokens(clip.tokenize(CHECK_PROMPT)).float().cpu()
    err = float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12)) if ours.shape == theirs.shape else math.inf
    if not err <= MAX_RELATIVE_ENCODING_ERROR:
        raise TrainingInputError(
            f"the trainable copy of this CLIP does not reproduce ComfyUI's encoding (relative error {err:.3g}). "
            "Connect the checkpoint's CLIP directly (no CLIPSetLastLayer or custom encoder nodes in between)."
        )


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

    Use as a context manager: with ``gradient_checkpointing``, entering wraps the UNet's res-
    and transformer blocks in activation checkpoints and leaving restores them. The first
    call loads the UNet through a clone of the ModelPatcher (after the photos are encoded).
    """

    def __init__(self, model, *, gradient_checkpointing: bool = True):
        self.patcher = static_patcher(model, "MODEL")
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
        out = self.diffusion_model(x_t.to(self.device, dtype), timestep.to(self.device),
                                   context=context.to(self.device, dtype), transformer_options=options)
        return out.float()


def train_with_comfy(model, clip, vae, images: Sequence[torch.Tensor], phrase: str, settings: TrainSettings, *,
                     progress=None, check_interrupt=None, checkpoint_path: Path | None = None,
                     resume_path: Path | None = None, phase_progress=None) -> TrainResult:
    """Train a residual from ComfyUI objects: validate, adapt, run the core loop. Call outside inference mode."""
    check_settings(settings)
    check_sd2(model, clip, vae)
    prediction = prediction_type(model)
    if prediction == "v" and settings.resolution < 768:
        log.warning("Cones 2 training: a v-prediction (SD2.x 768) model at %d px; it was trained at 768 px, "
                    "which the authors used too.", settings.resolution)
    tokenize, special = sd2_tokenizer(clip)
    phrase_ids = phrase_token_ids(tokenize, phrase, special)  # cheap checks before the encoder copy and the VAE
    check_images(images)
    if resume_path:
        check_resume_settings(resume_path, settings, phrase, phrase_ids, prediction)
    device = comfy.model_management.get_torch_device()
    encoder = trainable_encoder(clip, tokenize, special, device)
    schedule = alphas_cumprod(model)
    with ComfyDenoiser(model, gradient_checkpointing=settings.gradient_checkpointing) as denoiser, \
            host_training_flag():
        return train_residual(encoder=encoder, tokenize=tokenize, phrase=phrase, images=images,
                              encode_image=vae_encoder(vae, denoiser.patcher), denoiser=denoiser,
                              alphas_cumprod=schedule, prediction=prediction, settings=settings,
                              special=special, device=device, progress=progress,
                              check_interrupt=check_interrupt, checkpoint_path=checkpoint_path,
                              resume_path=resume_path, phase_progress=phase_progress)


@contextlib.contextmanager
def training_mode():
    """Leave ComfyUI's inference mode for the duration of a training run."""
    with torch.inference_mode(False), torch.enable_grad():
        yield
