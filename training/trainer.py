"""The training loop: fine-tune a copy of the text encoder through the frozen UNet, then extract Eq. 5.

Everything model-specific comes in as plain callables and modules, so this file never
touches ComfyUI:

- ``encoder``: a trainable ``ClipTextEncoder``, or a ``ConcatTextEncoder`` of several (SDXL)
  (float32; its weights are a copy);
- ``tokenize``: text -> content token ids of the model's tokenizer;
- ``encode_image``: ``[1, H, W, 3]`` pixels in 0..1 -> model-scaled latents;
- ``denoiser``: ``(x_t, t, context) -> raw model output`` (eps or v), gradients flowing
  to ``context``; ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` and ``t`` integer timesteps;
- ``alphas_cumprod``: the UNet's discrete schedule; ``prediction``: ``"eps"`` or ``"v"``.

Per step: encode the training prompt (and, for the paper's regularizer, a few corpus
sentences) with the tuned encoder in float32, run the UNet under autocast, take
``L = L_sub + λ L_reg`` (Eq. 4), clip, AdamW. The text encoder always runs in float32, so
the preservation targets (computed once before training with the same code) compare
like with like.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import corpus
from .clip_text import TextEncoder, weights_fingerprint
from .errors import TrainingDivergedError, TrainingInputError, TrainingOutOfMemoryError, TrainingResumeError
from .losses import (
    PREDICTIONS,
    diffusion_loss,
    diffusion_target,
    noisy_latents,
    official_preservation_loss,
    paper_preservation_loss,
)
from .model_families import REFERENCE
from .prompt_ids import (
    SD2_SPECIAL,
    PromptBatch,
    PromptError,
    SpecialTokens,
    Tokenize,
    encode_prompts,
    phrase_token_ids,
)
from .residual_extraction import encode_subject_rows, gather_subject_rows, residual_from_rows
from .subject_images import EncodeImage, build_latent_bank, check_images
from .train_checkpoint import TrainState, check_resumable, load_state, peek_state, save_state
from .train_settings import (  # noqa: F401  (re-exported: the options' one home is train_settings)
    AUTHORS_PRESET,
    DEFAULT_PROMPT,
    OFFICIAL_PROMPT,
    PRECISIONS,
    PRESERVATION,
    RESIDUAL_FROM,
    TrainSettings,
)

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
PhaseProgress = Callable[[str, int, int], None]  # (phase, photos or sentences done, total)
# before the steps: the photos through the VAE, then the original encoder's targets; Eq. 5 after them
PHOTOS, SETUP, EXTRACTION = "photos", "setup", "extraction"
ENCODE_CHUNK = 16  # sentences per batch when encoding a corpus: a progress report and cancel check after each
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

LOW_MEMORY_HINT = (
    "To need less memory: train fewer encoder layers (train_layers 4-8), keep gradient_checkpointing on, "
    "use precision bf16 (or fp16), lower the resolution (512) and the batch size (1), fewer "
    "sentences_per_step, and close other models or programs using the GPU."
)


@dataclass
class TrainResult:
    residual: torch.Tensor  # [n_tokens, D] float32, CPU
    token_ids: tuple[int, ...]
    losses: dict[str, list[float]]  # "loss" (total), "diffusion", "preservation": one value per step
    steps: int  # steps done in total (resumed ones included)
    seconds: float  # wall time of the steps run in this call
    steps_run: int
    metadata: dict = field(default_factory=dict)  # for the residual file's `training` entry
    base_model: str = REFERENCE.key  # the model family's key (training.model_families), set by the host adapter
    text_encoders: str | None = None  # fingerprint of the (untrained) text encoders, set by the host adapter


MODEL_CHECKPOINT = "model_checkpoint"  # key in a residual's `training`: the checkpoint file it was trained on
TRAINING_CHECKPOINT = "training_checkpoint"  # key: the run's resumable state file (output/cones2_training/)


def residual_training_info(result: TrainResult, *, model_checkpoint: str | None = None,
                           training_checkpoint: str | None = None) -> dict:
    """A residual file's ``training`` entry: the run's settings and results, plus the files it used, when known."""
    info = dict(result.metadata)
    if model_checkpoint:
        info[MODEL_CHECKPOINT] = model_checkpoint
    if training_checkpoint:
        info[TRAINING_CHECKPOINT] = training_checkpoint
    return info


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The UNet autocast dtype, or None for float32."""
    if precision not in PRECISIONS:
        raise TrainingInputError(f"precision {precision!r} is not one of {PRECISIONS}.")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW takes its fused kernel (one launch for all trained tensors) on ``device``."""
    return device.type == "cuda"


def check_settings(s: TrainSettings) -> None:
    problems = []
    if s.steps < 1:
        problems.append(f"steps must be at least 1 (got {s.steps})")
    if not (s.learning_rate > 0 and math.isfinite(s.learning_rate)):
        problems.append(f"learning_rate must be positive (got {s.learning_rate})")
    if s.batch_size < 1:
        problems.append(f"batch_size must be at least 1 (got {s.batch_size})")
    if s.preservation not in PRESERVATION:
        problems.append(f"preservation must be one of {PRESERVATION} (got {s.preservation!r})")
    if s.residual_from not in RESIDUAL_FROM:
        problems.append(f"residual_from must be one of {RESIDUAL_FROM} (got {s.residual_from!r})")
    if not (s.preservation_weight >= 0 and math.isfinite(s.preservation_weight)):
        problems.append(f"preservation_weight must be 0 or more (got {s.preservation_weight})")
    if s.corpus_size < 1 or s.sentences_per_step < 1:
        problems.append("corpus_size and sentences_per_step must be at least 1")
    if "{}" not in s.training_prompt:
        problems.append(f"training_prompt {s.training_prompt!r} must contain {{}} where the phrase goes")
    if problems:
        raise TrainingInputError("; ".join(problems) + ".")


def run_binding(settings: TrainSettings, phrase: str, phrase_ids, prediction: str) -> dict:
    """What a checkpoint records about its run, and a resumed run must repeat."""
    return settings.binding() | {"phrase": " ".join(phrase.split()), "token_ids": list(phrase_ids),
                                 "prediction": prediction}


def check_resume_settings(resume_path, settings: TrainSettings, phrase: str, phrase_ids, prediction: str) -> None:
    """Refuse early (reading only the checkpoint's header) a resume whose settings differ."""
    check_resumable(peek_state(resume_path), run_binding(settings, phrase, phrase_ids, prediction), None,
                    Path(resume_path).name)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one step: all of a step's randomness depends on (seed, step) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1))


def image_indices(seed: int, step: int, batch: int, n: int) -> list[int]:
    """The photos of a step: epochs of shuffled photos, as the authors' shuffled data loader."""
    out = []
    for k in range(step * batch, step * batch + batch):
        epoch, pos = divmod(k, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed((seed * 7_777_777 + epoch) % (2**63 - 1)))
        out.append(int(perm[pos]))
    return out


def images_fingerprint(images: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for img in images:
        q = (img.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().contiguous()
        h.update(str(tuple(q.shape)).encode())
        h.update(q.numpy().tobytes())
    return h.hexdigest()[:16]


def _losses_template() -> dict[str, list[float]]:
    return {"loss": [], "diffusion": [], "preservation": []}


def training_prompt(tokenize: Tokenize, phrase: str, phrase_ids, settings: TrainSettings,
                    special: SpecialTokens) -> PromptBatch:
    """The training prompt (``settings.training_prompt`` with the phrase) as a one-prompt batch; PromptError if unusable."""
    text = corpus.fill(settings.training_prompt, " ".join(phrase.split()))
    try:
        return encode_prompts(tokenize, [text], phrase_ids, special)
    except PromptError as e:
        raise PromptError(f"training_prompt: {e} Write it with {{}} where the phrase goes, once.") from None


def build_prompts(tokenize: Tokenize, phrase: str, settings: TrainSettings, special: SpecialTokens):
    """(phrase ids, training prompt, the paper term's sentences or None (λ = 0: None), residual prompts)."""
    phrase_ids = phrase_token_ids(tokenize, phrase, special)
    train_prompt = training_prompt(tokenize, phrase, phrase_ids, settings, special)
    # λ = 0 turns the paper's term off: its sentences are then neither encoded nor trained through
    paper_term = settings.preservation == "paper" and settings.preservation_weight > 0
    sentences = None
    if paper_term or settings.residual_from == "corpus":
        sentences = encode_prompts(tokenize, corpus.iter_subject_sentences(phrase), phrase_ids, special,
                                   limit=settings.corpus_size, strict=False)
    residual_prompts = (sentences if settings.residual_from == "corpus"
                        else encode_prompts(tokenize, corpus.official_sentences(phrase), phrase_ids, special,
                                            strict=False))
    reg = sentences if paper_term else None
    return phrase_ids, train_prompt, reg, residual_prompts


class _Phase:
    """Progress of a long encoding phase, in sentences, reported to ``report(phase, done, total)``."""

    def __init__(self, name: str, total: int, report: PhaseProgress | None):
        self.name, self.total, self.done, self.report = name, total, 0, report
        if report:
            report(name, 0, total)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.report:
            self.report(self.name, self.done, self.total)


@contextlib.contextmanager
def _checked_layers(encoder: TextEncoder, between):
    """Call ``between`` (a cancel check) after every encoder layer: a cancel then lands within one layer."""
    encoder.between_layers = between
    try:
        yield
    finally:
        encoder.between_layers = None


@torch.no_grad()
def _encode_chunks(encoder: TextEncoder, ids: torch.Tensor, start: int, device, between, encoded=None,
                   chunk=ENCODE_CHUNK):
    """(prefix hidden before layer ``start`` or None, final outputs), float32, for every row of ``ids``."""
    prefixes, outs = [], []
    for i in range(0, ids.shape[0], chunk):
        part = ids[i:i + chunk].to(device)
        hidden = encoder.embed_prefix(part, start)
        outs.append(encoder.forward_from(hidden, start))
        if start:
            prefixes.append(hidden)
        if encoded:
            encoded(part.shape[0])
        if between:
            between()
    return (torch.cat(prefixes) if start else None), torch.cat(outs)


def train_residual(*, encoder: TextEncoder, tokenize: Tokenize, phrase: str, images: Sequence[torch.Tensor],
                   encode_image: EncodeImage, denoiser: Denoiser, alphas_cumprod: torch.Tensor, prediction: str,
                   settings: TrainSettings = TrainSettings(), special: SpecialTokens = SD2_SPECIAL,  # noqa: B008 (frozen)
                   device=None, progress: Callable[[int, int, dict], None] | None = None,
                   check_interrupt: Callable[[], None] | None = None,
                   checkpoint_path=None, resume_path=None, phase_progress: PhaseProgress | None = None) -> TrainResult:
    """Train one subject's residual; see the module docstring. Raises TrainingError subclasses with clear messages.

    ``progress(step, steps, last losses)`` after each step; ``phase_progress(phase, done, total)`` while
    the photos are encoded (``PHOTOS``, in photos), the corpus before the steps (``SETUP``) and for Eq. 5
    after them (``EXTRACTION``), in sentences. ``check_interrupt()`` (raising to cancel) runs after each
    photo, between steps and after every encoder layer of the corpus phases.
    """
    try:
        return _train(encoder=encoder, tokenize=tokenize, phrase=phrase, images=images, encode_image=encode_image,
                      denoiser=denoiser, alphas_cumprod=alphas_cumprod, prediction=prediction, settings=settings,
                      special=special, device=device, progress=progress, check_interrupt=check_interrupt,
                      checkpoint_path=checkpoint_path, resume_path=resume_path, phase_progress=phase_progress)
    except OutOfMemory as e:
        first = str(e).splitlines()[0][:300] if str(e) else "out of memory"
        raise TrainingOutOfMemoryError(f"out of memory while training ({first}). {LOW_MEMORY_HINT}") from None


def _train(*, encoder, tokenize, phrase, images, encode_image, denoiser, alphas_cumprod, prediction, settings,
           special, device, progress, check_interrupt, checkpoint_path, resume_path, phase_progress) -> TrainResult:
    check_settings(settings)
    if prediction not in PREDICTIONS:
        raise TrainingInputError(f"prediction type {prediction!r} is not supported; Cones 2 trains eps or v models.")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    autocast_dtype = resolve_precision(settings.precision, device)
    between = check_interrupt or (lambda: None)
    phrase = " ".join(phrase.split())

    # Cheap checks first: a bad phrase or photo fails before anything heavy runs.
    phrase_ids, train_prompt, reg, residual_prompts = build_prompts(tokenize, phrase, settings, special)
    check_images(images)
    n_layers = len(encoder.layers)
    if not 0 <= settings.train_layers <= n_layers:
        raise TrainingInputError(f"train_layers must be 0 (all) to {n_layers} (got {settings.train_layers}).")
    binding = run_binding(settings, phrase, phrase_ids, prediction)
    fingerprints = {"encoder": weights_fingerprint(encoder), "images": images_fingerprint(images)}
    if resume_path:
        check_resumable(peek_state(resume_path), binding, fingerprints, Path(resume_path).name)

    bank = build_latent_bank(images, encode_image, settings.resolution, flip=settings.flip,
                             random_crop=settings.random_crop, device=device, between=between,
                             encoded=_Phase(PHOTOS, len(images), phase_progress))
    encoder.to(device)
    encoder.requires_grad_(False)
    encoder.eval()  # no dropout in CLIP; eval only fixes the mode
    start = encoder.first_trained_layer(settings.train_layers)
    encoder.gradient_checkpointing = settings.gradient_checkpointing

    # Targets of the original encoder, computed once with the same code the steps use.
    shared = reg is not None and residual_prompts is reg
    setup = _Phase(SETUP, len(train_prompt) + (len(reg) if reg is not None else 0)
                   + (0 if shared else len(residual_prompts)), phase_progress)
    with _checked_layers(encoder, check_interrupt):
        train_prefix, train_frozen = _encode_chunks(encoder, train_prompt.ids, start, device, between, setup)
        reg_prefix = reg_frozen = None
        if reg is not None:
            reg_prefix, reg_frozen = _encode_chunks(encoder, reg.ids, start, device, between, setup)
        if shared:
            residual_frozen = gather_subject_rows(reg_frozen, reg)
        else:
            residual_frozen = encode_subject_rows(encoder, residual_prompts, device=device, between=between,
                                                  encoded=setup, chunk=ENCODE_CHUNK)

    params = encoder.trainable_parameters(settings.train_layers)
    for p in params:
        p.requires_grad_(True)
    names = {id(p): n for n, p in encoder.named_parameters()}
    param_names = [names[id(p)] for p in params]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=settings.weight_decay, fused=fused_adamw(device) or None)
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None

    losses = _losses_template()
    step0 = 0
    if resume_path:
        resume = load_state(resume_path)
        missing = [n for n in param_names if n not in resume.params]
        if missing:
            raise TrainingResumeError(f"{Path(resume_path).name} lacks trained weights {missing[:3]}.")
        with torch.no_grad():
            current = dict(encoder.named_parameters())
            for name in param_names:
                current[name].copy_(resume.params[name].to(device))
        optimizer.load_state_dict(resume.optimizer)
        if scaler is not None and resume.scaler:
            scaler.load_state_dict(resume.scaler)
        step0 = resume.step
        losses = {k: list(resume.losses.get(k, [])) for k in _losses_template()}
    last_checkpoint = str(resume_path) if resume_path else None

    ac = alphas_cumprod.detach().to(device=device, dtype=torch.float32)
    n_t = ac.shape[0]
    subject_end = int(train_prompt.subject_start[0]) + len(phrase_ids)
    reg_mask = reg.subject_mask().to(device) if reg is not None else None
    lam = settings.preservation_weight

    t_start = time.perf_counter()
    for step in range(step0, settings.steps):
        between()
        g = step_generator(settings.seed, step)
        idx = image_indices(settings.seed, step, settings.batch_size, len(bank))
        x0 = bank.sample(idx, g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, n_t, (len(idx),), generator=g).to(device)
        reg_idx = (torch.randint(0, len(reg), (settings.sentences_per_step,), generator=g)
                   if reg is not None else None)

        # the tuned encoder, float32: the training prompt, then this step's corpus sentences
        if start:
            hidden = train_prefix if reg_idx is None else torch.cat([train_prefix, reg_prefix[reg_idx.to(device)]])
        else:
            ids = train_prompt.ids if reg_idx is None else torch.cat([train_prompt.ids, reg.ids[reg_idx]])
            hidden = encoder.embed_prefix(ids.to(device), 0)
        encoded = encoder.forward_from(hidden, start)
        context = encoded[:1].expand(len(idx), -1, -1)

        x_t = noisy_latents(x0, noise, t, ac)
        target = diffusion_target(prediction, x0, noise, t, ac)
        with (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
              else contextlib.nullcontext()):
            pred = denoiser(x_t, t, context)
        l_sub = diffusion_loss(pred, target)
        if reg_idx is not None:  # the paper's term (λ > 0)
            ri = reg_idx.to(device)
            l_reg = paper_preservation_loss(encoded[1:], reg_frozen[ri], reg_mask[ri])
            loss = l_sub + lam * l_reg
        elif settings.preservation == "official":
            l_reg = official_preservation_loss(encoded[0], train_frozen[0], subject_end)
            loss = l_sub + l_reg  # the authors' weights are inside the term
        else:
            l_reg = torch.zeros((), device=device)
            loss = l_sub

        # the step's one host sync: the losses to record, also tested for NaN before the update
        values = torch.stack([loss.detach(), l_sub.detach(), l_reg.detach().float()]).tolist()
        if not math.isfinite(values[0]):
            raise _diverged(step, values[1], values[2], last_checkpoint)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        for key, v in zip(("loss", "diffusion", "preservation"), values, strict=True):
            losses[key].append(v)
        done = step + 1
        if checkpoint_path and settings.checkpoint_every and done % settings.checkpoint_every == 0 \
                and done < settings.steps:
            if not all(torch.isfinite(p).all() for p in params):
                raise _diverged(step, values[1], values[2], last_checkpoint)
            save_state(_state(done, binding, fingerprints, encoder, param_names, optimizer, losses, scaler),
                       checkpoint_path)
            last_checkpoint = str(checkpoint_path)
        if progress:
            progress(done, settings.steps, {k: v[-1] for k, v in losses.items()})
    seconds = time.perf_counter() - t_start

    between()
    extraction = _Phase(EXTRACTION, len(residual_prompts), phase_progress)
    with _checked_layers(encoder, check_interrupt):
        tuned_rows = encode_subject_rows(encoder, residual_prompts, device=device, between=between,
                                         encoded=extraction, chunk=ENCODE_CHUNK)
    residual = residual_from_rows(tuned_rows, residual_frozen).cpu()
    if not torch.isfinite(residual).all():
        raise _diverged(settings.steps - 1, float("nan"), float("nan"), last_checkpoint)
    steps_run = max(0, settings.steps - step0)
    if checkpoint_path and settings.checkpoint_every and steps_run:
        save_state(_state(max(settings.steps, step0), binding, fingerprints, encoder, param_names, optimizer,
                          losses, scaler), checkpoint_path)
    meta = {
        "method": "cones2", "steps": max(settings.steps, step0), "prediction": prediction,
        "learning_rate": settings.learning_rate, "batch_size": settings.batch_size,
        "resolution": settings.resolution, "seed": settings.seed, "preservation": settings.preservation,
        "preservation_weight": lam if settings.preservation == "paper" else None, "residual_from": settings.residual_from,
        "residual_sentences": len(residual_prompts), "training_prompt": train_prompt.texts[0],
        "train_layers": settings.train_layers or n_layers, "images": len(bank), "flip": settings.flip,
        "final_loss": losses["loss"][-1] if losses["loss"] else None,
    }
    corpus_used = reg if reg is not None else residual_prompts if settings.residual_from == "corpus" else None
    if corpus_used is not None:
        meta["corpus_size"] = len(corpus_used)
    return TrainResult(residual=residual, token_ids=tuple(phrase_ids), losses=losses,
                       steps=max(settings.steps, step0), seconds=seconds, steps_run=steps_run, metadata=meta)


def _state(step, binding, fingerprints, encoder, param_names, optimizer, losses, scaler) -> TrainState:
    current = dict(encoder.named_parameters())
    return TrainState(step=step, settings=binding, fingerprints=fingerprints,
                      params={n: current[n] for n in param_names}, optimizer=optimizer.state_dict(),
                      losses=losses, scaler=scaler.state_dict() if scaler is not None else None)


def _diverged(step: int, l_sub: float, l_reg: float, checkpoint: str | None) -> TrainingDivergedError:
    where = (f"The last good checkpoint is kept: {checkpoint}; resume from it with a lower learning rate."
             if checkpoint else "No checkpoint was written (set checkpoint_every to keep one).")
    return TrainingDivergedError(
        f"the loss became NaN or infinite at step {step + 1} (diffusion {l_sub:.4g}, preservation {l_reg:.4g}); "
        f"training stopped and no residual was made. {where} Try a lower learning_rate, precision bf16 or fp32, "
        "and check that the subject images are ordinary photos.", step + 1, checkpoint)
