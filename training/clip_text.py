"""A trainable copy of SD2's text encoder: the CLIP text transformer, out of place, in plain torch.

ComfyUI's CLIP layers add residuals in place (``x += ...``), so autograd cannot run
through them; this module computes the same function out of place. SD2 conditions the
UNet on the penultimate layer's hidden state with the final layer norm applied, so the
copy keeps only the layers up to that one (23 of OpenCLIP-H's 24): the last layer never
affects the output and is neither stored nor trained.

Parameter names are those of a transformers ``CLIPTextModel`` (ComfyUI uses the same,
under ``text_model.``), so ``clip_h.transformer.state_dict()`` loads directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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
    """SD2's text conditioning: ``final_layer_norm(hidden state after the kept layers)``, ``[B, T, width]``.

    ``embed_prefix(ids, start)`` runs the embeddings and the first ``start`` layers;
    ``forward_from(hidden, start)`` runs the rest. With the first layers frozen, the prefix
    of a fixed prompt is computed once and only the trained layers run each step.
    """

    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
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
        """The parameters trained with ``train_layers`` (0 = everything; k = the last k layers + final norm)."""
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
                           activation: str = "gelu") -> ClipTextConfig:
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
                          layers=kept, context_length=context, activation=activation)


def encoder_from_state_dict(state_dict: dict, *, layer_index: int = -2, heads: int | None = None,
                            activation: str = "gelu", device=None) -> ClipTextEncoder:
    """A float32 ``ClipTextEncoder`` holding a copy of ``state_dict``'s weights (never sharing storage).

    Accepts transformers 4.x names (``text_model.`` prefix), 5.x names (none) and ComfyUI's;
    ignores ``text_projection``, ``position_ids`` and the layers after the output layer.
    The copy is made outside inference mode, so weights loaded inside a ComfyUI prompt
    (inference tensors) become ordinary trainable tensors.
    """
    cfg = config_from_state_dict(state_dict, layer_index=layer_index, heads=heads, activation=activation)
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


def weights_fingerprint(model: ClipTextEncoder) -> str:
    """A short hash of the encoder's weights (token embedding sample, first and last layer), to match checkpoints."""
    h = hashlib.sha256()
    picks = [model.embeddings.token_embedding.weight[::997], model.layers[0].self_attn.q_proj.weight[::61],
             model.layers[-1].mlp.fc2.weight[::61], model.final_layer_norm.weight]
    for t in picks:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
