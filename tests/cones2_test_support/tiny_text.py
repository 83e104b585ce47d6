"""Small real pieces for testing the training core without ComfyUI or model downloads.

- ``tiny_tokenizer()``: a transformers ``CLIPTokenizer`` (the real class) over the byte-level
  base alphabet plus a few merges, so "dog" is one token and "robot toy" two, while other
  words split into characters, as unknown words do in CLIP's BPE.
- ``tiny_encoder()``: a 2-layer ``ClipTextEncoder`` with random weights; ``tiny_concat_encoder()``:
  SDXL's shape in small, a 2-layer and a 3-layer encoder without final norm side by side, the
  first padding with the end token, the second with id 0.
- ``TinyDenoiser``: a frozen cross-attention denoiser whose output has a constant offset the
  context can learn to cancel: the training loss can fall only through the text encoder.
"""

from __future__ import annotations

import json
import math
import tempfile
from functools import cache
from pathlib import Path

import torch
from cones2.guidance.prompt_tokens import byte_encoder
from torch import nn

START, END, PAD = "<|startoftext|>", "<|endoftext|>", "!"
MERGES = ("d o", "do g</w>", "r o", "ro b", "rob o", "robo t</w>", "t o", "to y</w>", "c a", "ca t</w>")


@cache
def tokenizer_files() -> Path:
    chars = list(byte_encoder().values())
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in MERGES] + [START, END]
    folder = Path(tempfile.mkdtemp(prefix="cones2-tiny-tok-"))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return folder


@cache
def tiny_tokenizer():
    from transformers import CLIPTokenizer

    folder = tokenizer_files()
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def tokenize(text: str) -> list[int]:
    """Content ids (no start/end) of ``text``."""
    return tiny_tokenizer()(text)["input_ids"][1:-1]


def special_tokens():
    from cones2.training.prompt_ids import SpecialTokens

    tok = tiny_tokenizer()
    return SpecialTokens(start=tok.convert_tokens_to_ids(START), end=tok.convert_tokens_to_ids(END),
                         pad=tok.convert_tokens_to_ids(PAD), length=77)


def vocab_size() -> int:
    return len(tiny_tokenizer().get_vocab())


def tiny_encoder(width: int = 32, layers: int = 2, seed: int = 0):
    from cones2.training.clip_text import ClipTextConfig, ClipTextEncoder

    torch.manual_seed(seed)
    cfg = ClipTextConfig(vocab_size=vocab_size(), width=width, heads=2, mlp_width=2 * width, layers=layers)
    enc = ClipTextEncoder(cfg)
    with torch.no_grad():
        enc.embeddings.token_embedding.weight.mul_(0.5)
        enc.embeddings.position_embedding.weight.mul_(0.1)
    return enc


def tiny_concat_encoder(widths=(16, 24), layers=(2, 3), seed: int = 0):
    from cones2.training.clip_text import ClipTextConfig, ClipTextEncoder, ConcatTextEncoder

    parts = []
    for i, (width, depth) in enumerate(zip(widths, layers, strict=True)):
        torch.manual_seed(seed + i)
        cfg = ClipTextConfig(vocab_size=vocab_size(), width=width, heads=2, mlp_width=2 * width, layers=depth,
                             final_norm=False)
        enc = ClipTextEncoder(cfg)
        with torch.no_grad():
            enc.embeddings.token_embedding.weight.mul_(0.5)
            enc.embeddings.position_embedding.weight.mul_(0.1)
        parts.append(enc)
    end = special_tokens().end
    return ConcatTextEncoder(parts, pads=(end, 0), end=end)


class TinyDenoiser(nn.Module):
    """``pred = conv(x_t) + attention(x_t -> context) + offset``, frozen."""

    def __init__(self, context_dim: int = 32, channels: int = 4, hidden: int = 16, offset: float = 1.0, seed: int = 1,
                 sharpness: float = 0.25):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, channels, 1)
        self.q = nn.Linear(channels, hidden)
        self.k = nn.Linear(context_dim, hidden)
        self.v = nn.Linear(context_dim, channels)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1] if p.ndim > 1 else 4))
        self.offset = offset
        self.sharpness = sharpness
        self.requires_grad_(False)
        self.calls = 0

    def forward(self, x_t, t, context):
        self.calls += 1
        b, c, h, w = x_t.shape
        tokens = x_t.flatten(2).transpose(1, 2)  # [B, HW, C]
        attn = torch.softmax(self.q(tokens) @ self.k(context).transpose(1, 2) * self.sharpness, dim=-1)
        out = (attn @ self.v(context)).transpose(1, 2).reshape(b, c, h, w)
        return self.conv(x_t) * 0.1 + out + self.offset


def schedule(steps: int = 1000) -> torch.Tensor:
    """SD's scaled-linear alphas_cumprod (beta 0.00085 .. 0.012)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def encode_image_stub(pixels: torch.Tensor) -> torch.Tensor:
    """A deterministic 'VAE': 8x average pooling of the pixels to 4 channels (for shape and flow tests)."""
    x = pixels.permute(0, 3, 1, 2) * 2 - 1
    pooled = torch.nn.functional.avg_pool2d(x, 8)
    return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)


def photos(n: int = 3, size=(64, 80), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(size[0], size[1], 3, generator=g) for _ in range(n)]
