"""A batch's scores: the value passed to seed picking, its table, its JSON and its heat-map."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .subject_scores import EncoderScores, ScoreError

# ranking criteria: name -> (encoder or None for CLIP-T, EncoderScores attribute)
CRITERIA = {
    "separation (DINOv2)": ("dinov2", "separation"),
    "separation (CLIP)": ("clip", "separation"),
    "MuDI D&C (DINOv2)": ("dinov2", "mudi_dc"),
    "MuDI D&C (CLIP)": ("clip", "mudi_dc"),
    "fidelity (DINOv2)": ("dinov2", "fidelity"),
    "fidelity (CLIP-I)": ("clip", "fidelity"),
    "CLIP-T": (None, "clip_t"),
}
ENCODER_NAMES = {"clip": "CLIP image encoder", "dinov2": "DINOv2"}


@dataclass(frozen=True)
class ScoreReport:
    """Scores of every image of a batch (the CONES2_SCORES value)."""

    subjects: tuple[str, ...]  # labels, layout order
    reference_counts: tuple[int, ...]
    encoders: tuple[str, ...]  # "clip" and/or "dinov2"
    images: tuple[dict[str, EncoderScores], ...]  # per image: encoder -> scores
    clip_t: tuple[float, ...] | None
    notes: tuple[str, ...] = ()

    def values(self, criterion: str) -> list[float]:
        """Each image's value of a ``CRITERIA`` entry; a ScoreError says what is missing."""
        if criterion not in CRITERIA:
            raise ScoreError(f"unknown score {criterion!r}; use one of {', '.join(CRITERIA)}")
        encoder, attribute = CRITERIA[criterion]
        if encoder is None:
            if self.clip_t is None:
                raise ScoreError("CLIP-T was not computed: " + " ".join(self.notes or ("connect a CLIP",)))
            return list(self.clip_t)
        if encoder not in self.encoders:
            raise ScoreError(f"{criterion!r} needs the {ENCODER_NAMES[encoder]}; connect it to Cones2ScoreSubjects "
                             "or pick another score")
        values = [getattr(image[encoder], attribute) for image in self.images]
        if any(v is None for v in values):
            why = "two subjects with photos" if attribute == "mudi_dc" else "at least two subjects with photos"
            raise ScoreError(f"{criterion!r} needs {why} (this layout has {len(self.subjects)}); "
                             "pick a fidelity score instead")
        return values

    def as_dict(self) -> dict:
        return {
            "subjects": list(self.subjects), "reference_counts": list(self.reference_counts),
            "encoders": list(self.encoders), "notes": list(self.notes),
            "images": [{"index": b, "clip_t": None if self.clip_t is None else self.clip_t[b],
                        **{name: scores.as_dict() for name, scores in image.items()}}
                       for b, image in enumerate(self.images)],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def table(self) -> str:
        """A plain-text table: one block per image, one line per subject and encoder."""
        lines = [f"subjects: {', '.join(f'{s} ({n} photos)' for s, n in zip(self.subjects, self.reference_counts, strict=True))}"]
        lines += [f"note: {n}" for n in self.notes]
        for b, image in enumerate(self.images):
            head = f"image {b}"
            if self.clip_t is not None:
                head += f"  CLIP-T {self.clip_t[b]:.3f}"
            for name in self.encoders:
                s = image[name]
                head += f"  {name}: fidelity {s.fidelity:.3f}"
                if s.separation is not None:
                    head += f" separation {s.separation:.3f}"
                if s.mudi_dc is not None:
                    head += f" MuDI-D&C {s.mudi_dc:.3f}"
            lines.append(head)
            for name in self.encoders:
                s = image[name]
                for i, subject in enumerate(self.subjects):
                    sims = " ".join(f"{other}={v:.3f}" for other, v in zip(self.subjects, s.similarity[i], strict=True))
                    mix = "" if s.mixing is None else f"  mixing {s.mixing[i]:+.3f}"
                    lines.append(f"  {name:6s} {subject}: own {s.similarity[i][i]:.3f}{mix}  "
                                 f"whole image {s.whole_image[i]:.3f}  vs {sims}")
        return "\n".join(lines)


CELL_W, CELL_H, LABEL_W, HEAD_H = 56, 28, 120, 34


def heatmap(report: ScoreReport) -> torch.Tensor:
    """``[B, H, W, 3]``: per image, one grid per encoder: subject crops (rows) x reference photos (columns)."""
    from PIL import Image, ImageDraw

    columns = [f"{s} {r + 1}" for s, n in zip(report.subjects, report.reference_counts, strict=True) for r in range(n)]
    grid_h = HEAD_H + CELL_H * len(report.subjects)
    width, height = LABEL_W + CELL_W * len(columns), grid_h * len(report.encoders)
    pages = []
    for image in report.images:
        page = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(page)
        for e, name in enumerate(report.encoders):
            y0 = e * grid_h
            draw.text((4, y0 + 4), name, fill=(0, 0, 0))
            for c, text in enumerate(columns):
                draw.text((LABEL_W + c * CELL_W + 3, y0 + 4 + (c % 2) * 12), text[:9], fill=(0, 0, 0))
            for i, subject in enumerate(report.subjects):
                y = y0 + HEAD_H + i * CELL_H
                draw.text((4, y + 8), subject[:18], fill=(0, 0, 0))
                values = [v for row in image[name].per_reference[i] for v in row]
                for c, v in enumerate(values):
                    x = LABEL_W + c * CELL_W
                    draw.rectangle((x, y, x + CELL_W - 2, y + CELL_H - 2), fill=_color(v))
                    draw.text((x + 6, y + 8), f"{v:.2f}", fill=(0, 0, 0) if v < 0.75 else (255, 255, 255))
        pages.append(torch.frombuffer(bytearray(page.tobytes()), dtype=torch.uint8).view(height, width, 3))
    return torch.stack(pages).float() / 255.0


def _color(v: float) -> tuple[int, int, int]:
    """White (cosine <= 0) to dark red (1)."""
    t = min(1.0, max(0.0, v))
    return (255 - round(95 * t), 255 - round(235 * t), 255 - round(235 * t))
