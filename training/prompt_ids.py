"""Token ids of training prompts, padded as the model's tokenizer pads them, and the rows of the subject phrase.

A tokenizer here is any callable ``text -> content token ids`` (no start/end tokens): the
nodes pass ComfyUI's own tokenizer of the model's family, tests a small CLIP tokenizer. A prompt becomes
``[start, content..., end, pad, ...]`` of the context length (77): token ``i`` of the
content sits at row ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from .errors import TrainingInputError

Tokenize = Callable[[str], Sequence[int]]


class PromptError(TrainingInputError):
    """A phrase or prompt that cannot be used for training; the message says why."""


@dataclass(frozen=True)
class SpecialTokens:
    start: int = 49406
    end: int = 49407
    pad: int = 0  # SD2 pads with id 0 (ComfyUI and the authors' diffusers tokenizer alike); SD1's CLIP-L with the end
    length: int = 77

    @property
    def max_content(self) -> int:
        return self.length - 2


SD2_SPECIAL = SpecialTokens()


@dataclass(frozen=True)
class PromptBatch:
    """Padded ids ``[N, length]`` of N prompts and, for each, the rows of the one subject occurrence."""

    texts: tuple[str, ...]
    ids: torch.Tensor  # [N, length] int64
    subject_start: torch.Tensor  # [N] int64: row of the phrase's first token
    n_subject: int  # tokens in the phrase (same in every prompt)

    def __len__(self) -> int:
        return len(self.texts)

    def subject_mask(self) -> torch.Tensor:
        """``[N, length]`` bool, True at the subject's rows."""
        rows = torch.arange(self.ids.shape[1])
        start = self.subject_start[:, None]
        return (rows >= start) & (rows < start + self.n_subject)

    def subject_rows(self) -> torch.Tensor:
        """``[N, n_subject]`` row indices of the subject in each prompt."""
        return self.subject_start[:, None] + torch.arange(self.n_subject)

    def select(self, index) -> PromptBatch:
        index = torch.as_tensor(index, dtype=torch.long)
        return PromptBatch(tuple(self.texts[i] for i in index.tolist()), self.ids[index],
                           self.subject_start[index], self.n_subject)


def phrase_token_ids(tokenize: Tokenize, phrase: str, special: SpecialTokens = SD2_SPECIAL) -> tuple[int, ...]:
    """The content token ids of ``phrase``; raise PromptError if it has none or too many."""
    ids = tuple(int(t) for t in tokenize(phrase))
    if not phrase.strip() or not ids:
        raise PromptError(
            f"the phrase {phrase!r} has no tokens. Type the subject's class word or phrase, e.g. 'dog' or "
            "'robot toy' (the word the subject replaces in prompts)."
        )
    if len(ids) > special.max_content // 2:
        raise PromptError(
            f"the phrase {phrase!r} is {len(ids)} tokens long; a subject phrase is a short class name "
            "(1 to a few words), not a whole prompt."
        )
    return ids


def occurrences(ids: Sequence[int], phrase_ids: Sequence[int]) -> list[int]:
    """Start positions of every (non-overlapping) occurrence of ``phrase_ids`` in ``ids``."""
    n, found, i = len(phrase_ids), [], 0
    target = list(phrase_ids)
    ids = list(ids)
    while i + n <= len(ids):
        if ids[i:i + n] == target:
            found.append(i)
            i += n
        else:
            i += 1
    return found


def pad_ids(content: Sequence[int], special: SpecialTokens) -> list[int]:
    body = [special.start, *content, special.end]
    return body + [special.pad] * (special.length - len(body))


def encode_prompts(tokenize: Tokenize, texts: Iterable[str], phrase_ids: Sequence[int],
                   special: SpecialTokens = SD2_SPECIAL, *, limit: int | None = None,
                   strict: bool = True) -> PromptBatch:
    """Tokenize prompts that each hold the phrase once; keep up to ``limit`` of them.

    With ``strict`` a prompt without exactly one occurrence, or too long for one chunk, is
    an error naming it; otherwise it is skipped (for generated corpora).
    """
    kept_texts, rows, starts = [], [], []
    for text in texts:
        if limit is not None and len(kept_texts) >= limit:
            break
        content = [int(t) for t in tokenize(text)]
        where = occurrences(content, phrase_ids)
        problem = None
        if len(content) > special.max_content:
            problem = f"is {len(content)} tokens long; prompts used for training must fit {special.max_content}"
        elif len(where) != 1:
            problem = (f"holds the phrase {len(where)} times; it must hold it exactly once"
                       if where else "does not contain the phrase")
        if problem:
            if strict:
                raise PromptError(f"the prompt {text!r} {problem}.")
            continue
        kept_texts.append(text)
        rows.append(pad_ids(content, special))
        starts.append(where[0] + 1)
    if not kept_texts:
        raise PromptError("no usable prompt holds the phrase exactly once")
    return PromptBatch(tuple(kept_texts), torch.tensor(rows, dtype=torch.long),
                       torch.tensor(starts, dtype=torch.long), len(phrase_ids))
