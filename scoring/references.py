"""Subjects' reference photos (the CONES2_SUBJECT_REFERENCES value) and their match to a layout."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..guidance.layout import subject_key, subject_label
from .subject_scores import ScoreError


@dataclass(frozen=True, eq=False)
class SubjectPhotos:
    """One subject (phrase occurrence) and its photos: ``images [N, H, W, C]``, optional ``masks [N, H, W]``."""

    phrase: str
    occurrence: int
    images: tuple[torch.Tensor, ...]  # each [H, W, C] in 0..1 (photos may differ in size)
    masks: tuple[torch.Tensor | None, ...]  # one per image; None = the whole photo

    @property
    def label(self) -> str:
        return subject_label(self.phrase, self.occurrence)

    @property
    def key(self):
        return subject_key(self.phrase, self.occurrence)


def add_photos(chain: tuple[SubjectPhotos, ...], photos: SubjectPhotos) -> tuple[SubjectPhotos, ...]:
    """The chain with ``photos`` added; photos of a subject already in it join its list."""
    for i, existing in enumerate(chain):
        if existing.key == photos.key:
            merged = replace(existing, images=existing.images + photos.images, masks=existing.masks + photos.masks)
            return (*chain[:i], merged, *chain[i + 1:])
    return (*chain, photos)


def match_layout(layout, references: tuple[SubjectPhotos, ...]):
    """``(subjects, photos)``: the layout's subjects that have photos, in layout order, and their photos.

    Photos for a subject the layout lacks are an error; layout subjects without photos are left out.
    """
    by_key = {r.key: r for r in references}
    layout_keys = {subject_key(s.phrase, s.occurrence) for s in layout.subjects}
    unknown = [r.label for r in references if r.key not in layout_keys]
    if unknown:
        have = ", ".join(repr(s.label) for s in layout.subjects) or "none"
        raise ScoreError(f"reference photos for {', '.join(map(repr, unknown))}, which the layout does not have "
                         f"(its subjects: {have}); give the reference node a phrase and occurrence of the layout")
    subjects = [s for s in layout.subjects if subject_key(s.phrase, s.occurrence) in by_key]
    if not subjects:
        raise ScoreError("no reference photos given; connect a Cones2SubjectReference per subject")
    return subjects, [by_key[subject_key(s.phrase, s.occurrence)] for s in subjects]
