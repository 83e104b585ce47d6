"""A trainable copy of a text encoder: the CLIP text transformer, out of place, in plain torch.

ComfyUI's CLIP layers add residuals in place (``x += ...``), so autograd cannot run
through them; this module computes the same function out of place. The copy keeps only
the layers up to the one the UNet is conditioned on, so later layers are neither stored
nor trained: SD2 reads OpenCLIP-H's penultimate layer (23 of 24) with the final layer norm,
SD1 CLIP-L's last layer with it, SDXL the penultimate layers of CLIP-L and OpenCLIP bigG
without it, concatenated (``ConcatTextEncoder``).

Parameter names are those of a transformers ``CLIPTextModel`` (ComfyUI uses the same,
under ``text_model.``), so ``clip_h.transformer.state_dict()`` loads directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

ACTIVATIONS = {
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


@dataclass(frozen=True)
class ClipTextConfig:
    vocab_size: int = 49408
    width: int = 1024
    heads: int = 16
    mlp_width: int = 4096
    layers: int = 23  # layers kept: SD2 reads the output of layer 23 of 24
    context_length: int = 77
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    final_norm: bool = True  # the final layer norm on the output (SD1, SD2); SDXL's encoders have none


class _Embeddings(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.context_length, cfg.width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class _Attention(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = (p(x).view(b, n, self.heads, w // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class _Mlp(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_width)
        self.fc2 = nn.Linear(cfg.mlp_width, cfg.width)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = _Attention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = _Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))


class ClipTextEncoder(nn.Module):
    """A text conditioning: ``final_layer_norm(hidden state after the kept layers)`` (or the hidden state
    itself without ``final_norm``), ``[B, T, width]``.

    ``embed_prefix(ids, start)`` runs the embeddings and the first ``start`` layers;
    ``forward_from(hidden, start)`` runs the rest. With the first layers frozen, the prefix
    of a fixed prompt is computed once and only the trained layers run each step.
    """

    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.final_layer_norm = (nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps) if cfg.final_norm
                                 else nn.Identity())
        self.gradient_checkpointing = False
        self.between_layers: Callable[[], None] | None = None  # e.g. a cancel check, during long encodes

    def _after_layer(self) -> None:
        if self.between_layers is not None:
            self.between_layers()

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def embed_prefix(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        x = self.embeddings(ids)
        for layer in self.layers[:start]:
            x = layer(x)
            self._after_layer()
        return x

    def forward_from(self, hidden: torch.Tensor, start: int = 0) -> torch.Tensor:
        x = hidden
        for layer in self.layers[start:]:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
            self._after_layer()
        return self.final_layer_norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.embed_prefix(ids, 0), 0)

    def trainable_parameters(self, train_layers: int = 0) -> list[nn.Parameter]:
        """The parameters trained with ``train_layers`` (0 = everything; k = the last k layers + final norm, if any)."""
        if train_layers <= 0 or train_layers >= len(self.layers):
            return list(self.parameters())
        params = [p for layer in self.layers[len(self.layers) - train_layers:] for p in layer.parameters()]
        return params + list(self.final_layer_norm.parameters())

    def first_trained_layer(self, train_layers: int = 0) -> int:
        """Index of the first layer that trains (0 when everything trains, embeddings included)."""
        if train_layers <= 0 or train_layers >= len(self.layers):
            return 0
        return len(self.layers) - train_layers


def _strip(key: str) -> str:
    return key[len("text_model."):] if key.startswith("text_model.") else key


def config_from_state_dict(state_dict: dict, *, layer_index: int = -2, heads: int | None = None,
                           activation: str = "gelu", final_norm: bool = True) -> ClipTextConfig:
    """Infer the config of a CLIP text transformer state dict (transformers/ComfyUI names).

    ``layer_index`` picks the output layer as ComfyUI's ``hidden_states[layer_index]``
    counting the embeddings as index 0: -2 (SD2's penultimate) keeps all layers but the last.
    """
    sd = {_strip(k): v for k, v in state_dict.items()}
    try:
        vocab, width = sd["embeddings.token_embedding.weight"].shape
        context = sd["embeddings.position_embedding.weight"].shape[0]
        mlp = sd["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not a CLIP text transformer state dict (no {e.args[0]})") from None
    total = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers."))
    kept = total + 1 + layer_index if layer_index < 0 else layer_index
    if not 1 <= kept <= total:
        raise ValueError(f"layer_index {layer_index} is outside a {total}-layer encoder")
    return ClipTextConfig(vocab_size=vocab, width=width, heads=heads or max(1, width // 64), mlp_width=mlp,
                          layers=kept, context_length=context, activation=activation, final_norm=final_norm)


def encoder_from_state_dict(state_dict: dict, *, layer_index: int = -2, heads: int | None = None,
                            activation: str = "gelu", final_norm: bool = True, device=None) -> ClipTextEncoder:
    """A float32 ``ClipTextEncoder`` holding a copy of ``state_dict``'s weights (never sharing storage).

    Accepts transformers 4.x names (``text_model.`` prefix), 5.x names (none) and ComfyUI's;
    ignores ``text_projection``, ``position_ids``, the layers after the output layer and, without
    ``final_norm``, the final layer norm.
    The copy is made outside inference mode, so weights loaded inside a ComfyUI prompt
    (inference tensors) become ordinary trainable tensors.
    """
    cfg = config_from_state_dict(state_dict, layer_index=layer_index, heads=heads, activation=activation,
                                 final_norm=final_norm)
    with torch.device("meta"):
        model = ClipTextEncoder(cfg)
    wanted = model.state_dict().keys()
    sd = {}
    for key, value in state_dict.items():
        k = _strip(key)
        if k in wanted:
            sd[k] = value
    missing = sorted(set(wanted) - set(sd))
    if missing:
        raise ValueError(f"the text encoder state dict lacks {missing[:3]}{'...' if len(missing) > 3 else ''}")
    with torch.inference_mode(False):
        sd = {k: v.detach().to(device=device, dtype=torch.float32, copy=True) for k, v in sd.items()}
        model.load_state_dict(sd, assign=True)
    return model


class ConcatTextEncoder(nn.Module):
    """Text encoders that read the same token positions, their outputs concatenated along the width
    (SDXL: CLIP-L's 768 ++ OpenCLIP bigG's 1280 = 2048), with ``ClipTextEncoder``'s interface.

    The ids may come padded either way: each part sees them with its own pad id after the first
    end token (``pads``; SDXL's CLIP-L pads with the end token, bigG with 0, as ComfyUI's two
    tokenizers do). ``train_layers`` k trains the last k layers of every part (a part of k layers
    or fewer trains whole). ``layers`` are the deepest part's: a layer index ``start`` counts
    from its first layer, a shallower part starts as many layers later as it is shallower. The
    hidden state between ``embed_prefix`` and ``forward_from`` is the parts' concatenated.
    """

    def __init__(self, parts: Sequence[ClipTextEncoder], pads: Sequence[int], end: int):
        super().__init__()
        if len(parts) != len(pads) or not parts:
            raise ValueError("one pad id per part, and at least one part")
        self.parts = nn.ModuleList(parts)
        self.pads = tuple(int(p) for p in pads)
        self.end = int(end)
        self.widths = [p.config.width for p in parts]

    @property
    def layers(self) -> nn.ModuleList:
        return max(self.parts, key=lambda p: len(p.layers)).layers

    @property
    def gradient_checkpointing(self) -> bool:
        return all(p.gradient_checkpointing for p in self.parts)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        for p in self.parts:
            p.gradient_checkpointing = value

    @property
    def between_layers(self) -> Callable[[], None] | None:
        return self.parts[0].between_layers

    @between_layers.setter
    def between_layers(self, value: Callable[[], None] | None) -> None:
        for p in self.parts:
            p.between_layers = value

    def _start(self, part: ClipTextEncoder, start: int) -> int:
        return max(0, len(part.layers) - len(self.layers) + start)

    def part_ids(self, ids: torch.Tensor, pad: int) -> torch.Tensor:
        """``ids`` with every position after the first end token set to ``pad``."""
        is_end = (ids == self.end).long()
        after_end = (is_end.cumsum(1) - is_end) > 0
        return torch.where(after_end, torch.full_like(ids, pad), ids)

    def embed_prefix(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        return torch.cat([p.embed_prefix(self.part_ids(ids, pad), self._start(p, start))
                          for p, pad in zip(self.parts, self.pads, strict=True)], dim=-1)

    def forward_from(self, hidden: torch.Tensor, start: int = 0) -> torch.Tensor:
        pieces = torch.split(hidden, self.widths, dim=-1)
        return torch.cat([p.forward_from(h, self._start(p, start)) for p, h in zip(self.parts, pieces, strict=True)],
                         dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.embed_prefix(ids, 0), 0)

    def trainable_parameters(self, train_layers: int = 0) -> list[nn.Parameter]:
        """The parameters trained with ``train_layers`` (0 = everything; k = the last k layers of each part)."""
        return [q for p in self.parts for q in p.trainable_parameters(train_layers)]

    def first_trained_layer(self, train_layers: int = 0) -> int:
        """Index (in the deepest part's layers) of the first layer that trains (0 when everything trains)."""
        if train_layers <= 0 or train_layers >= len(self.layers):
            return 0
        return len(self.layers) - train_layers


TextEncoder = ClipTextEncoder | ConcatTextEncoder


def weights_fingerprint(model: TextEncoder) -> str:
    """A short hash of the encoder's weights (token embedding sample, first and last layer), to match checkpoints."""
    h = hashlib.sha256()
    if isinstance(model, ConcatTextEncoder):
        for part in model.parts:
            h.update(weights_fingerprint(part).encode())
        return h.hexdigest()[:16]
    picks = [model.embeddings.token_embedding.weight[::997], model.layers[0].self_attn.q_proj.weight[::61],
             model.layers[-1].mlp.fc2.weight[::61]]
    if isinstance(model.final_layer_norm, nn.LayerNorm):
        picks.append(model.final_layer_norm.weight)
    for t in picks:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
