"""Sentences containing the subject phrase: the paper's corpus, generated offline, and the authors' templates.

The paper samples 1,000 ChatGPT sentences containing the class word ("a dog on the
beach") for the preservation loss (Eq. 3) and the residual (Eq. 5). Here they are made
deterministically from styles x determiners x scenes x relations, in a fixed order that
spreads over every part list, so the same phrase always gives the same corpus. A part
that contains one of the phrase's words is left out ("tree" never meets "near a tree"),
so each sentence holds the phrase exactly once.

``OFFICIAL_TEMPLATES`` are the 27 prompts the authors' train_cones2.py averages the
residual over, verbatim ("a photo of a {}" even before a vowel).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

OFFICIAL_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

STYLES = (
    "a photo of", "a close-up photo of", "a blurry photo of", "a black and white photo of",
    "a painting of", "an oil painting of", "a watercolor painting of", "a pencil sketch of",
    "a 3D render of", "a cartoon drawing of", "a digital illustration of", "a vintage photograph of",
    "a professional photo of", "a snapshot of", "a cinematic shot of", "a high resolution photo of",
    "an illustration of", "a polaroid photo of", "a mosaic of", "a low angle photo of",
)
DETERMINERS = ("{a}", "the", "my", "our", "this")
SCENES = (
    "on the beach", "in a forest", "in the snow", "on a wooden table", "in a living room",
    "in a kitchen", "on a city street", "in a garden", "on a mountain top", "in the desert",
    "by a lake", "in a park", "on a sofa", "in front of a brick wall", "under the night sky",
    "at sunset", "in the rain", "on the grass", "in a library", "on a boat",
    "in a field of flowers", "next to a window", "on a rooftop", "in an office", "in a cafe",
    "on a bed", "in the jungle", "on a bridge", "in a museum", "at the train station",
    "in an autumn forest", "on a snowy mountain", "in a studio with soft lighting", "on a kitchen counter",
    "in a bathroom", "in a classroom", "on the moon", "underwater", "in a cave", "in a meadow",
)
RELATIONS = (
    "next to a red car", "beside a wooden chair", "in front of a house", "behind a fence",
    "near a tree", "with a blue ball", "next to a cup of coffee", "beside a stack of books",
    "under an umbrella", "on top of a box", "next to a cat", "with a small plant",
    "in front of a mirror", "next to a bicycle", "beside a lamp", "near a fountain",
    "with a red scarf", "next to a teddy bear", "beside a guitar", "under a table",
)
# Each pattern orders its parts; {s} = style, {d} = determiner + phrase, {p} = scene, {r} = relation.
PATTERNS = (
    "{s} {d} {p}",
    "{d} {r} {p}",
    "{s} {d} {r}",
    "{s} {d} {r} {p}",
    "{d} {p}",
)

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def article(phrase: str) -> str:
    """'an' before a vowel letter, else 'a' (a spelling rule; 'an hour' and 'a unicorn' are rare in class names)."""
    return "an" if phrase.strip()[:1].lower() in "aeiou" else "a"


def fill(template: str, phrase: str) -> str:
    """Put ``phrase`` at ``{}`` and its article at ``{a}``: ``'a photo of {a} {}'`` -> ``'a photo of an apple'``."""
    phrase = " ".join(phrase.split())
    return template.replace("{a}", article(phrase)).replace("{}", phrase)


def official_sentences(phrase: str) -> list[str]:
    """The authors' 27 residual templates filled with ``phrase`` (verbatim: no article fix)."""
    phrase = " ".join(phrase.split())
    return [t.format(phrase) for t in OFFICIAL_TEMPLATES]


def _parts(phrase: str) -> dict[str, tuple[str, ...]]:
    banned = words(phrase)

    def keep(options):
        kept = tuple(o for o in options if not (words(o) & banned))
        return kept or ("",)

    determiners = tuple(d.replace("{a}", article(phrase)) for d in DETERMINERS)
    return {"s": keep(STYLES), "d": keep(determiners), "p": keep(SCENES), "r": keep(RELATIONS)}


def _coprime_stride(n: int) -> int:
    stride = max(1, int(n * 0.6180339887))  # golden-ratio stride spreads consecutive picks
    while math.gcd(stride, n) != 1:
        stride += 1
    return stride


def iter_subject_sentences(phrase: str) -> Iterator[str]:
    """Every generated sentence for ``phrase``, each once, patterns interleaved, in a fixed spread order."""
    phrase = " ".join(phrase.split())
    parts = _parts(phrase)
    streams = []
    for pattern in PATTERNS:
        keys = re.findall(r"\{(\w)\}", pattern)
        sizes = [len(parts[k]) for k in keys]
        total = math.prod(sizes)
        streams.append((pattern, keys, sizes, total, _coprime_stride(total)))
    seen: set[str] = set()
    for i in range(max(s[3] for s in streams)):
        for pattern, keys, sizes, total, stride in streams:
            if i >= total:
                continue
            index = (i * stride) % total
            choice = {}
            for key, size in zip(keys, sizes, strict=True):
                index, pick = divmod(index, size)
                choice[key] = parts[key][pick]
            choice["d"] = f"{choice['d']} {phrase}".strip()
            sentence = " ".join(pattern.format(**choice).split())
            if sentence not in seen:
                seen.add(sentence)
                yield sentence


def subject_sentences(phrase: str, count: int = 1000) -> list[str]:
    """The first ``count`` generated sentences for ``phrase`` (deterministic; every one holds the phrase once)."""
    out = []
    for sentence in iter_subject_sentences(phrase):
        if len(out) >= count:
            break
        out.append(sentence)
    return out
