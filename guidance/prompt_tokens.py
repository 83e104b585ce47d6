"""Where each word of an encoded prompt sits in the CONDITIONING rows, and phrase lookup.

ComfyUI encodes a prompt as chunks of 77 tokens, ``[start, <=75 tokens, end, pad...]``,
concatenated: token ``i`` of chunk ``c`` is row ``c * 77 + i``. ``PromptTokens`` keeps,
for every content token, its row and its BPE piece (``'dog</w>'``). Pieces group into
words (a piece ending in ``</w>`` closes a word), and a phrase is found by matching its
words, so ``dog`` matches "a dog." but not "hotdog" or "dogs", exactly as CLIP splits
text. Phrase lookup needs no tokenizer, so layout guidance can resolve phrases from the
conditioning alone. A phrase is normalised as the host's tokenizer normalises the prompt
(``normalize_text``), and messages show words as typed (``piece_text``), not in the BPE alphabet.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

import regex

END_OF_WORD = "</w>"
EMBEDDING_PIECE = "<embedding>"  # a token slot filled by an `embedding:name` vector

# CLIP's pre-tokenizer pattern (openai/CLIP simple_tokenizer, HF CLIPTokenizer).
_CLIP_WORDS = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


_WHITESPACE = regex.compile(r"\s+")


class PhraseNotFoundError(ValueError):
    """A phrase, or the requested occurrence of it, is not in the prompt."""


@cache
def byte_encoder() -> dict[int, str]:
    """Byte -> character of the byte-level BPE alphabet that CLIP pieces are written in."""
    # GPT-2/CLIP byte-level BPE maps each byte to a printable character; pieces are in that alphabet.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@cache
def byte_decoder() -> dict[str, int]:
    return {c: b for b, c in byte_encoder().items()}


def normalize_text(text: str) -> str:
    """``text`` as CLIP's tokenizer normalises it before splitting: Unicode NFC, whitespace runs -> one
    space, lowercase. (ComfyUI's SDTokenizer wraps transformers' CLIPTokenizer, whose normalizer is
    NFC + ``\\s+`` -> ' ' + Lowercase; without ftfy the older slow tokenizer's BasicTokenizer also
    applies NFC and lowercases.) So a decomposed ``café`` (NFD, as macOS keyboards type it) matches."""
    # Unicode White_Space (the regex module's and the tokenizer's \s), not str.split()'s wider set, which
    # also takes the control characters U+001C-U+001F that CLIP keeps as tokens
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip(" ").lower()


def phrase_words(phrase: str) -> tuple[str, ...]:
    """Split ``phrase`` into words the way CLIP's tokenizer does, in the BPE piece alphabet."""
    enc = byte_encoder()
    return tuple("".join(enc[b] for b in w.encode("utf-8")) for w in _CLIP_WORDS.findall(normalize_text(phrase)))


def piece_text(piece: str) -> str:
    """A BPE piece or word (``'cafÃ©'``, ``'ðŁĲ¶</w>'``) as text (``'café'``, ``'🐶'``), for messages.

    A word cut inside a character (truncation) shows U+FFFD for the missing bytes."""
    if piece.endswith(END_OF_WORD):
        piece = piece[: -len(END_OF_WORD)]
    dec = byte_decoder()
    if not all(c in dec for c in piece):  # not in the BPE alphabet (e.g. the embedding marker): as is
        return piece
    return bytes(dec[c] for c in piece).decode("utf-8", errors="replace")


def content_tokens(chunks: Sequence[Sequence], start_id: int, end_id: int) -> Iterator[tuple[int, object, float]]:
    """``(row, token, weight)`` of every content token of ComfyUI token chunks, in order.

    Chunks are lists of ``(token, weight[, word_id])``; token ``i`` of chunk ``c`` is row
    ``c * 77 + i`` (rows count every entry of the earlier chunks). Content is what lies
    between a chunk's start token and its first end token: SD2 pads with id 0, which is also
    a real piece, so padding is recognised by position. ``token`` is an int id or, for an
    ``embedding:`` name, a tensor.
    """
    offset = 0
    for chunk in chunks:
        for i, entry in enumerate(chunk):
            token = entry[0]
            if isinstance(token, int):
                if i == 0 and token == start_id:
                    continue
                if token == end_id:
                    break
            yield offset + i, token, entry[1]
        offset += len(chunk)


@dataclass(frozen=True)
class Word:
    text: str
    rows: tuple[int, ...]


@dataclass(frozen=True)
class PromptTokens:
    """The content tokens of one encoded prompt: their rows in the conditioning and their pieces."""

    length: int  # rows in the conditioning tensor (77 * chunks)
    rows: tuple[int, ...]
    pieces: tuple[str, ...]

    def __post_init__(self):
        if len(self.rows) != len(self.pieces):
            raise ValueError("rows and pieces differ in length")

    @classmethod
    def from_chunks(cls, chunks: Sequence[Sequence], piece_of: Callable[[int], str],
                    start_id: int, end_id: int) -> PromptTokens:
        """Build from ComfyUI token chunks (see ``content_tokens``); an ``embedding:`` token is
        kept as a word that matches no phrase."""
        rows, pieces = [], []
        for row, token, _ in content_tokens(chunks, start_id, end_id):
            rows.append(row)
            pieces.append(piece_of(token) if isinstance(token, int) else EMBEDDING_PIECE + END_OF_WORD)
        return cls(length=sum(len(c) for c in chunks), rows=tuple(rows), pieces=tuple(pieces))

    def to_json(self) -> str:
        """The token map as JSON text: a plain string survives every core node that copies or saves
        conditioning (SaveConditioning keeps strings, refuses other objects)."""
        return json.dumps({"length": self.length, "rows": list(self.rows), "pieces": list(self.pieces)})

    @classmethod
    def from_json(cls, text: str) -> PromptTokens:
        """Read ``to_json``'s text; ValueError if it is not a token map."""
        try:
            data = json.loads(text)
            return cls(length=int(data["length"]), rows=tuple(int(r) for r in data["rows"]),
                       pieces=tuple(str(p) for p in data["pieces"]))
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"not a Cones 2 token map ({e})") from None

    def words(self) -> tuple[Word, ...]:
        return group_words(self.rows, self.pieces)

    def find(self, phrase: str) -> list[tuple[int, ...]]:
        """Rows of every occurrence of ``phrase``, left to right, non-overlapping."""
        target = phrase_words(phrase)
        if not target:
            raise PhraseNotFoundError(f"the phrase {phrase!r} has no words")
        words = self.words()
        found, i, n = [], 0, len(target)
        while i + n <= len(words):
            if all(words[i + k].text == target[k] for k in range(n)):
                found.append(tuple(r for w in words[i:i + n] for r in w.rows))
                i += n
            else:
                i += 1
        return found

    def occurrence(self, phrase: str, occurrence: int = 1) -> tuple[int, ...]:
        """Rows of the ``occurrence``-th (1-based) occurrence of ``phrase``."""
        if occurrence < 1:
            raise PhraseNotFoundError(f"occurrence must be 1 or more, got {occurrence}")
        found = self.find(phrase)
        if not found:
            raise PhraseNotFoundError(
                f"the phrase {phrase!r} is not in the prompt (prompt words: {self.preview()}). "
                "Type the phrase exactly as it appears in the prompt."
            )
        if occurrence > len(found):
            raise PhraseNotFoundError(
                f"the phrase {phrase!r} occurs {len(found)} time(s) in the prompt; occurrence {occurrence} "
                f"does not exist. Use an occurrence from 1 to {len(found)}."
            )
        return found[occurrence - 1]

    def preview(self, limit: int = 24) -> str:
        """The prompt's first words as text, quoted, for messages."""
        texts = [piece_text(w.text) for w in self.words()]
        shown = " ".join(texts[:limit])
        return repr(shown + (" ..." if len(texts) > limit else ""))


def group_words(rows: Sequence[int], pieces: Sequence[str]) -> tuple[Word, ...]:
    """Join BPE pieces into words (a piece ending in ``</w>`` closes one), each with its rows."""
    words, text, word_rows = [], "", []
    for row, piece in zip(rows, pieces, strict=True):
        closed = piece.endswith(END_OF_WORD)
        text += piece[: -len(END_OF_WORD)] if closed else piece
        word_rows.append(row)
        if closed:
            words.append(Word(text, tuple(word_rows)))
            text, word_rows = "", []
    if word_rows:  # a word cut by truncation: keep what is there
        words.append(Word(text, tuple(word_rows)))
    return tuple(words)
