"""Layout guidance during one sampling run: which rows to guide, the cached biases, the guided attention.

A ``GuidanceRun`` lives for one sampling call. It is made with the host's attention function
(``attend``) and the source of the guider's positive entries (``positive``: the entries as
sampling holds them, read at each model call). The sampler-level hook then checks the
latent size (``check_latent``) and binds the positive entries once (``bind``: each entry's
uuid and recorded token map). Before each model evaluation, ``model_call`` is told the
batch's conditioning and σ: which (branch, uuid) chunks are positive entries, whatever
branch index the guider gives the positive (DualCFGGuider puts it last), and whether the
step is guided. Every cross-attention call then goes through ``attention``, which computes
the whole batch exactly as without the pack and recomputes only the positive chunks with
the official formula

    softmax((S + η·M) · d^-0.5) · V,   S = Q·Kᵀ,   η = w · log(1 + σ²) · std(S)   (official schedule)

either explicitly in float32 (``S`` is needed for the std anyway; the default off the CPU)
or through the host's masked attention with the additive mask ``η·M·d^-0.5`` and the std
computed without ``S`` (the default on the CPU). Nothing here imports ComfyUI: the
attention function is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from . import conditioning_keys
from .attention_bias import SuppressionScope, bias_matrix, finite_floor, subject_maps
from .layout import Layout
from .prompt_tokens import PhraseNotFoundError, PromptTokens
from .step_range import StepRange
from .strength import SigmaSchedule, eta, logit_std

DEFAULT_WEIGHT = 0.08  # "guidance_weight" in the authors' example config
DEFAULT_SUPPRESSION = -1e8  # "weight_negative" in the authors' code and config
ASPECT_TOLERANCE = 0.01  # relative difference of canvas and latent aspect ratios accepted
ATTENTION_PATHS = ("auto", "explicit", "masked")

# attend(q, k, v, mask, extra_options) -> out: the host's attention on projected q/k/v (heads
# and options from the attn2 call's extra_options), mask an additive bias on the scaled logits or None.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, dict], torch.Tensor]
# positive() -> the guider's positive entries as sampling holds them now (None: match by uuid alone)
PositiveSource = Callable[[], Sequence[dict] | None]


class LayoutGuidanceError(ValueError):
    """Layout guidance cannot run with these inputs; the message says what to change."""


@dataclass(frozen=True)
class GuidanceSettings:
    weight: float = DEFAULT_WEIGHT
    suppression: float = DEFAULT_SUPPRESSION
    scope: SuppressionScope = SuppressionScope.OUTSIDE_OWN_REGION
    schedule: SigmaSchedule = SigmaSchedule.OFFICIAL


@dataclass(frozen=True)
class PromptBinding:
    """Where the layout's subjects sit in one positive conditioning entry."""

    length: int  # rows of the entry's own conditioning tensor (before batch tiling)
    rows: tuple[tuple[int, ...], ...]  # per layout subject, its token rows; () if absent here

    @property
    def guided(self) -> bool:
        return any(self.rows)


def bind_prompt(layout: Layout, tokens: PromptTokens, length: int | None = None) -> PromptBinding:
    """Resolve every layout subject in one prompt; a subject missing from it gets ``()``.

    Raises ``LayoutGuidanceError`` when two subjects share a token (their biases would add).
    """
    length = tokens.length if length is None else int(length)
    rows = []
    for s in layout.subjects:
        try:
            rows.append(tuple(tokens.occurrence(s.phrase, s.occurrence)))
        except PhraseNotFoundError:
            rows.append(())
    owner: dict[int, str] = {}
    for s, r in zip(layout.subjects, rows, strict=True):
        for row in r:
            if row in owner:
                raise LayoutGuidanceError(
                    f"the layout subjects {owner[row]!r} and {s.label!r} use the same word of the prompt; "
                    "each subject needs its own phrase occurrence (e.g. 'dog' and 'dog #2')"
                )
            owner[row] = s.label
        if r and max(r) >= length:
            raise LayoutGuidanceError(
                f"subject {s.label!r} sits at token {max(r)} but the conditioning has {length} rows; "
                "was the prompt changed after Cones2ApplyResidual encoded it?"
            )
    return PromptBinding(length, tuple(rows))


class GuidanceRun:
    """The state of layout guidance for one sampling call (freed with it)."""

    def __init__(self, layout: Layout, settings: GuidanceSettings, steps: StepRange, node: str, *,
                 attend: Attend, positive: PositiveSource, path: str = "auto"):
        """``attend``: the host's attention (see ``Attend``); ``positive``: where the guider's
        positive entries are read, at ``bind`` and at every model call (see ``PositiveSource``).
        ``path``: how guided rows are computed. "explicit": ``softmax((S + η·M)·d^-0.5)·V`` in
        float32 from ``S`` materialised once (it also gives the std); "masked": the std without
        ``S`` (Gram form) and the host's masked attention with ``η·M·d^-0.5`` as the mask;
        "auto": masked on the CPU (measured faster there), explicit elsewhere."""
        if not layout.subjects:
            raise LayoutGuidanceError(f"{node}: the layout is empty; add at least one subject's box or mask")
        if path not in ATTENTION_PATHS:
            raise ValueError(f"unknown attention path {path!r}; one of {ATTENTION_PATHS}")
        self.path = path
        self.layout = layout
        self.settings = settings
        self.steps = steps
        self.node = node
        self.attend = attend
        self.positive = positive
        self.bindings: dict[Hashable, PromptBinding] = {}
        self._guided: frozenset = frozenset()  # (branch, uuid) of this model call's guided chunks
        self._maps: dict[tuple, torch.Tensor] = {}
        self._biases: dict[tuple, torch.Tensor] = {}
        self._step: tuple | None = None  # (σ tensor it was made for, guided?, σ as float32 [B])

    # --- inputs from the sampling call ----------------------------------------------------
    def check_latent(self, height: int, width: int, scale: int = 8) -> None:
        """Reject a latent of ``height x width`` cells whose aspect differs from the canvas's."""
        canvas = self.layout.width / self.layout.height
        latent = width / height
        if abs(canvas - latent) > ASPECT_TOLERANCE * latent:
            raise LayoutGuidanceError(
                f"{self.node}: the layout canvas is {self.layout.width}x{self.layout.height} (aspect "
                f"{canvas:.3f}) but the image being sampled is {width * scale}x{height * scale} (aspect "
                f"{latent:.3f}). Set the layout's width and height to the image size (or any size with "
                "the same aspect: regions scale with the canvas)."
            )

    def bind(self) -> None:
        """Map each of the guider's positive entries (ComfyUI's converted conditioning dicts:
        ``uuid``, ``cross_attn``, the token map Cones2ApplyResidual records) to its subjects'
        token rows."""
        positive = list(self.positive() or ())
        tokens_of = {}
        for c in positive:
            try:
                tokens = conditioning_keys.prompt_tokens(c)
            except ValueError as e:
                raise LayoutGuidanceError(
                    f"{self.node}: the positive prompt's recorded token map cannot be read ({e}); encode "
                    "the prompt again with 'Cones2 Apply Residual (Text Encode)'."
                ) from None
            if tokens is not None:
                tokens_of[id(c)] = tokens
        tokened = [c for c in positive if id(c) in tokens_of]
        if positive and not tokened:
            raise LayoutGuidanceError(
                f"{self.node}: the positive prompt was not encoded by Cones2ApplyResidual, so the layout's "
                "phrases cannot be found in it. Encode the positive prompt with 'Cones2 Apply Residual "
                "(Text Encode)' (it encodes exactly like CLIPTextEncode, residuals optional)."
            )
        bindings = {}
        for c in tokened:
            tokens = tokens_of[id(c)]
            cross = c.get("cross_attn")
            length = cross.shape[1] if isinstance(cross, torch.Tensor) and cross.ndim == 3 else tokens.length
            try:
                bindings[c.get("uuid")] = bind_prompt(self.layout, tokens, length)
            except LayoutGuidanceError as e:
                raise LayoutGuidanceError(f"{self.node}: {e}") from None
        for i, s in enumerate(self.layout.subjects):
            if tokened and not any(b.rows[i] for b in bindings.values()):
                tokens = tokens_of[id(tokened[0])]
                try:
                    tokens.occurrence(s.phrase, s.occurrence)
                    reason = "it is not in any positive prompt; fix the phrase in the layout or the prompt."
                except PhraseNotFoundError as e:
                    reason = str(e)
                raise LayoutGuidanceError(
                    f"{self.node}: layout subject {s.label!r}: {reason}"
                )
        self.bindings = bindings
        self._guided = frozenset()
        self._biases.clear()

    def model_call(self, conds: Sequence, sigma: torch.Tensor) -> None:
        """Before each model evaluation: which of its chunks are guided, and whether σ is.

        ``conds``: what ComfyUI's ``calc_cond_batch`` receives, one list of entries per branch
        (the ``cond_or_uncond`` value of their chunks); the guider decides the order (CFGGuider
        ``[positive, negative]``, DualCFGGuider ``[negative, middle, positive]``). An entry is
        guided only if it is one of the guider's positive entries now (by identity), so a copy
        made for another branch (ComfyUI copies an area entry into the opposite list, uuid
        included) is not. ``sigma`` (``[B]``) is read on the host here, once per model call,
        which keeps the attention layers free of device syncs.
        """
        positive = self.positive()
        ids = None if positive is None else {id(c) for c in positive}
        pairs = set()
        for branch, entries in enumerate(conds):
            for c in entries or ():
                uid = c.get("uuid")
                binding = self.bindings.get(uid)
                if binding is not None and binding.guided and (ids is None or id(c) in ids):
                    pairs.add((branch, uid))
        self._guided = frozenset(pairs)
        self._step = self._step_for(sigma)

    def _step_for(self, sigma: torch.Tensor) -> tuple:
        flat = sigma.flatten()
        guided = self.steps.guides(float(flat.max()))
        return sigma, guided, flat.float() if guided else None

    # --- the attention call ---------------------------------------------------------------
    def guided_chunks(self, cond_or_uncond: Sequence[int], uuids: Sequence) -> list[tuple[int, Hashable]]:
        """(chunk index, uuid) of every chunk of a positive entry that has subjects to guide."""
        return [(j, uid) for j, (branch, uid) in enumerate(zip(cond_or_uncond, uuids, strict=False))
                if (branch, uid) in self._guided]

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict,
                  previous: Callable | None = None) -> torch.Tensor:
        """Cross-attention for a whole batch: unchanged rows as without guidance, positive rows guided.

        ``previous(q, k, v, extra_options)``: an attn2 replacement that was on the model before
        (chained: its output is kept, and the positive rows get ``+ (guided − plain)``).
        """
        attend = self.attend
        base = previous(q, k, v, extra_options) if previous is not None else attend(q, k, v, None, extra_options)
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return base
        # a layer called outside a model call the hook announced decides for its own σ
        step = self._step if self._step is not None and self._step[0] is sigmas else self._step_for(sigmas)
        _, guided_step, sigma = step
        if not guided_step:
            return base
        branches = list(extra_options.get("cond_or_uncond") or ())
        chunks = self.guided_chunks(branches, extra_options.get("uuids") or ())
        if not chunks:
            return base
        batch = q.shape[0] // len(branches)
        height, width = (int(x) for x in extra_options["activations_shape"][-2:])
        if height * width != q.shape[1]:
            return base  # not a spatial image grid (e.g. a video/temporal block): leave it alone
        heads = int(extra_options["n_heads"])
        scale = int(extra_options["dim_head"]) ** -0.5
        sigma = sigma.to(q.device)
        sigma = sigma if sigma.numel() == batch else sigma[:1].expand(batch)

        parts = [slice(j * batch, (j + 1) * batch) for j, _ in chunks]

        def take(t):
            return t[parts[0]] if len(parts) == 1 else torch.cat([t[p] for p in parts])

        qg, kg, vg = take(q), take(k), take(v)
        uids = [uid for _, uid in chunks]
        if self.explicit(q.device):
            guided, plain = self._explicit(qg, kg, vg, uids, heads, scale, sigma, height, width,
                                           with_plain=previous is not None)
        else:
            mask = self._mask(qg, kg, uids, heads, scale, sigma, height, width)
            guided = attend(qg, kg, vg, mask, extra_options)
            plain = attend(qg, kg, vg, None, extra_options) if previous is not None else None
        if previous is not None:
            guided = take(base) + (guided - plain)
            base = base.clone()
        for i, p in enumerate(parts):
            base[p] = guided[i * batch:(i + 1) * batch]
        return base

    def explicit(self, device) -> bool:
        """Whether guided rows are computed explicitly (``path``; "auto": everywhere but the CPU)."""
        return self.path == "explicit" or (self.path == "auto" and torch.device(device).type != "cpu")

    def _explicit(self, q, k, v, uids, heads: int, scale: float, sigma, height: int, width: int,
                  with_plain: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``softmax((S + η·M)·d^-0.5)·V`` for guided chunks, in float32, from ``S`` materialised once.

        ``S`` gives the std too, so no mask tensor is built and no attention kernel is asked to
        apply one. Returns the guided rows and, if ``with_plain``, the same rows without bias.
        """
        b, n, c = q.shape
        d = c // heads
        qh, kh, vh = (t.float().view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        logits = qh @ kh.transpose(-1, -2)  # [b, heads, N, T]
        plain = None
        if with_plain:
            plain = ((logits * scale).softmax(-1) @ vh).transpose(1, 2).reshape(b, n, c).to(q.dtype)
        batch = b // len(uids)
        s = self.settings
        for i, uid in enumerate(uids):
            rows = logits[i * batch:(i + 1) * batch]
            length = self.bindings[uid].length
            std = rows[..., :length].reshape(batch, -1).std(dim=1) if s.schedule.uses_std else None
            bias = self._bias(uid, height, width, k.shape[1], q.device)
            rows.addcmul_(eta(s.schedule, s.weight, sigma, std).view(batch, 1, 1, 1), bias)
        probs = logits.mul_(scale).softmax(-1)
        return (probs @ vh).transpose(1, 2).reshape(b, n, c).to(q.dtype), plain

    def _mask(self, q, k, uids, heads: int, scale: float, sigma, height: int, width: int) -> torch.Tensor:
        """The additive mask ``η·M·d^-0.5`` ``[b, N, T]`` for the host's masked attention, in q's dtype."""
        batch = q.shape[0] // len(uids)
        s = self.settings
        masks = []
        for i, uid in enumerate(uids):
            rows = slice(i * batch, (i + 1) * batch)
            length = self.bindings[uid].length
            std = logit_std(q[rows], k[rows, :length], heads) if s.schedule.uses_std else None
            strength = eta(s.schedule, s.weight, sigma, std) * scale
            bias = self._bias(uid, height, width, k.shape[1], q.device)
            masks.append(bias[None] * strength[:, None, None])
        mask = masks[0] if len(masks) == 1 else torch.cat(masks)
        if torch.finfo(q.dtype).max < torch.finfo(torch.float32).max:  # fp16: keep γ−·η finite
            mask = mask.clamp_(min=finite_floor(q.dtype))
        return mask.to(q.dtype)

    def _bias(self, uid, height: int, width: int, total_length: int, device) -> torch.Tensor:
        """``M`` for one positive entry at one layer shape, ``[h*w, T]`` float32, built once per run."""
        key = (uid, height, width, total_length, str(device))
        bias = self._biases.get(key)
        if bias is None:
            binding = self.bindings[uid]
            if total_length % binding.length:
                raise LayoutGuidanceError(
                    f"{self.node}: the batched conditioning has {total_length} tokens, not a multiple of the "
                    f"positive prompt's {binding.length}; this conditioning cannot be guided"
                )
            maps = self._subject_maps(height, width, device)
            bias = bias_matrix(maps, binding.rows, binding.length, total_length)
            self._biases[key] = bias
        return bias

    def _subject_maps(self, height: int, width: int, device) -> torch.Tensor:
        key = (height, width, str(device))
        maps = self._maps.get(key)
        if maps is None:
            regions = self.layout.region_masks(height, width)
            gammas = [s.gamma for s in self.layout.subjects]
            s = self.settings
            maps = subject_maps(regions, gammas, s.suppression, s.scope).to(device)
            self._maps[key] = maps
        return maps
