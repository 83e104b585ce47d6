"""A picture of a layout: each subject's region filled translucent in its own colour, outlined and labelled.

Pure torch, except the label glyphs, which Pillow's default font draws (a bitmap of the
text, composited here). Regions are rasterised with ``Layout.region_masks`` at the output
size, so the picture shows exactly the cells guidance uses at that resolution.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

from .layout import Layout, LayoutSubject
from .layout_text import format_number

# One colour per subject, in layout order, cycling (matplotlib's tab10). The box-drawing widget
# uses the same list, so a subject looks the same in the editor and in the preview.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
BLANK = 0.5  # grey canvas when there is no image
DEFAULT_OPACITY = 0.4


def subject_color(index: int) -> tuple[int, int, int]:
    """The preview colour of the ``index``-th subject (0-based)."""
    return PALETTE[index % len(PALETTE)]


def subject_caption(subject: LayoutSubject) -> str:
    """The label drawn on a region: ``dog #2  γ+ 2.5`` (written ``gamma``: the default font has no γ)."""
    return f"{subject.label}  gamma {format_number(subject.gamma)}"


def render_layout_preview(layout: Layout, image: torch.Tensor | None = None,
                          opacity: float = DEFAULT_OPACITY) -> torch.Tensor:
    """``[B, H, W, 3]`` float in 0..1: ``image`` (``[B, H, W, C]`` or ``[H, W, C]``, 0..1) with the layout drawn over it.

    Without an image: a grey canvas of the layout's size. With one: the layout is drawn at the
    image's size; if the aspect ratios differ it is stretched, and a warning line says so.
    """
    if image is None:
        base = torch.full((1, layout.height, layout.width, 3), BLANK)
    else:
        base = image if image.ndim == 4 else image[None]
        base = base.detach().to("cpu", torch.float32)
        base = base[..., :3] if base.shape[-1] >= 3 else base[..., :1].expand(*base.shape[:3], 3)
    _, height, width, _ = base.shape
    canvas = _Layers(height, width)
    masks = layout.region_masks(height, width) if layout.subjects else torch.zeros(0, height, width, dtype=torch.bool)
    line = max(1, round(min(height, width) / 256))
    corners = []
    for index, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(ys) == 0:
            corners.append(None)
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        crop = mask[y0:y1, x0:x1]
        color = subject_color(index)
        canvas.over(crop.float() * opacity, color, y0, x0)
        canvas.over(_outline(crop, line).float(), color, y0, x0)
        corners.append((x0 + line, y0 + line))
    font_px = max(10, min(32, round(min(height, width) / 40)))
    for index, (corner, subject) in enumerate(zip(corners, layout.subjects, strict=True)):
        if corner is not None:
            _label(canvas, subject_caption(subject), *corner, subject_color(index), font_px)
    if not layout.subjects:
        _label(canvas, f"empty layout ({layout.width}x{layout.height}, no subjects)", 0, 0, (40, 40, 40), font_px)
    if abs(layout.width * height - layout.height * width) > max(width, height):
        _label(canvas, f"canvas {layout.width}x{layout.height} stretched onto a {width}x{height} image", 0,
               height - 1, (200, 30, 30), font_px, anchor_bottom=True)
    return (base * canvas.keep + canvas.paint).clamp(0, 1)


class _Layers:
    """Layers composited "over" one another, kept as ``out = image * keep + paint`` so that a batch
    of images shares the work."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.keep = torch.ones(height, width, 1)
        self.paint = torch.zeros(height, width, 3)

    def over(self, alpha: torch.Tensor, color, y: int, x: int) -> None:
        """Composite ``color`` with coverage ``alpha`` ``[h, w]`` whose top-left pixel is (x, y)."""
        h, w = alpha.shape
        a = alpha[..., None]
        keep, paint = self.keep[y:y + h, x:x + w], self.paint[y:y + h, x:x + w]
        keep.mul_(1 - a)
        paint.mul_(1 - a).add_(a * (torch.tensor(color, dtype=torch.float32) / 255))


def _outline(mask: torch.Tensor, thickness: int) -> torch.Tensor:
    """Pixels of ``mask`` within ``thickness`` of its border; beyond the crop is outside (so the image
    edge counts as a border too)."""
    outside = F.pad((~mask).float()[None, None], (thickness,) * 4, value=1.0)
    near_outside = F.max_pool2d(outside, 2 * thickness + 1, stride=1)[0, 0] > 0
    return mask & near_outside


def _label(canvas: _Layers, text: str, x: int, y: int, color, font_px: int, anchor_bottom: bool = False) -> None:
    """A tag in ``color`` with ``text`` in black or white, its corner at (x, y), kept inside the image."""
    glyphs = _text_bitmap(text, font_px)
    pad = max(2, font_px // 5)
    tag_h, tag_w = glyphs.shape[0] + 2 * pad, glyphs.shape[1] + 2 * pad
    x = max(0, min(x, canvas.width - tag_w))
    y = max(0, min(y - tag_h + 1 if anchor_bottom else y, canvas.height - tag_h))
    h, w = min(tag_h, canvas.height - y), min(tag_w, canvas.width - x)
    if h <= 0 or w <= 0:
        return
    canvas.over(torch.ones(h, w), color, y, x)
    ink = torch.zeros(h, w)
    gh, gw = max(0, min(glyphs.shape[0], h - pad)), max(0, min(glyphs.shape[1], w - pad))
    ink[pad:pad + gh, pad:pad + gw] = glyphs[:gh, :gw]
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    canvas.over(ink, (0, 0, 0) if luminance > 150 else (255, 255, 255), y, x)


@cache
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def _text_bitmap(text: str, size: int) -> torch.Tensor:
    """``text`` as coverage ``[h, w]`` in 0..1, drawn with Pillow's default font."""
    from PIL import Image, ImageDraw

    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), text, fill=255, font=font)
    return torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).view(canvas.height, canvas.width) / 255.0
