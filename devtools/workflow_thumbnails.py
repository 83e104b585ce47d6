"""The template browser's thumbnail of each workflow (``workflows/<name>.jpg``), drawn from its spec.

What a thumbnail shows is read from the graph, so it follows the spec: the layout of its first
Cones2LayoutBoxes (or Layout from Color Map, with the colour image's regions) drawn as Cones2
Layout Preview draws it (grey canvas, each subject's region translucent and outlined in its
preview colour; no labels, which would need a font), with the subjects' placeholder photos
fitted into their boxes when the graph starts from them; a graph with no layout (training) shows
its subject's placeholder photo. Standard library only, integer arithmetic: the same bytes on
every machine (``make_workflows --check`` compares them).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .jpeg_file import jpeg_file
from .placeholder_images import CUTOUTS
from .workflow_builder import Graph, Output

WIDTH = 256
GREY = (128, 128, 128)  # Layout Preview's blank canvas (0.5)
LAYOUT_PREVIEW = Path(__file__).resolve().parents[1] / "guidance" / "layout_preview.py"
_BOX_LINE = re.compile(r"^\s*([^:#,]+?)\s*(?:#\s*(\d+)\s*)?:[\s,]*(\d+)[\s,]+(\d+)[\s,]+(\d+)[\s,]+(\d+)")
_COLOUR_LINE = re.compile(r"^\s*(\d+)[\s,]+(\d+)[\s,]+(\d+)\s*:")


def preview_palette() -> tuple[tuple[int, int, int], ...]:
    """``guidance.layout_preview.PALETTE``, read from its source (its one home; importing it needs torch)."""
    tree = ast.parse(LAYOUT_PREVIEW.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "PALETTE":
            return ast.literal_eval(node.value)
    raise LookupError(f"no PALETTE in {LAYOUT_PREVIEW}")


def _layout(graph: Graph, colour_images: dict) -> tuple[int, int, list[tuple[str, tuple[int, int, int, int]]]] | None:
    """(canvas width, height, [(phrase, (x0, y0, x1, y1)), ...]) of the graph's first layout node."""
    by_id = {n.id: n for n in graph.nodes}
    for node in graph.nodes:
        if node.class_type == "Cones2LayoutBoxes":
            boxes = []
            for line in node.inputs.get("boxes", "").splitlines():
                m = _BOX_LINE.match(line)
                if m and not line.lstrip().startswith("#"):
                    x, y, w, h = (int(v) for v in m.groups()[2:])
                    boxes.append((m[1], (x, y, x + w, y + h)))
            return node.inputs.get("width", 512), node.inputs.get("height", 512), boxes
        if node.class_type == "Cones2LayoutFromColorMap" and isinstance(node.inputs.get("image"), Output):
            name = by_id[node.inputs["image"].node].inputs.get("image")
            if name not in colour_images:
                continue
            width, height, _, regions = colour_images[name]
            order = [tuple(int(v) for v in m.groups()) for line in node.inputs.get("colors", "").splitlines()
                     if (m := _COLOUR_LINE.match(line))]
            listed = sorted((r for r in regions if r[0] in order), key=lambda r: order.index(r[0]))
            return width, height, [(str(colour), box) for colour, box in listed]
    return None


def _photos(graph: Graph) -> dict[str, str]:
    """phrase -> the placeholder cut-out a Cones2SubjectPhoto of the graph shows it with."""
    by_id = {n.id: n for n in graph.nodes}
    out = {}
    for node in graph.nodes:
        image = node.inputs.get("image")
        if node.class_type == "Cones2SubjectPhoto" and isinstance(image, Output):
            name = by_id[image.node].inputs.get("image")
            if name in CUTOUTS:
                out[node.inputs.get("phrase", "")] = name
    return out


def _fit(pixels: list, width: int, cutout: str, box: tuple[int, int, int, int]) -> None:
    """Paste a cut-out into ``box`` (thumbnail pixels), scaled to fit keeping its aspect, centred."""
    w, h, paint = CUTOUTS[cutout]
    x0, y0, x1, y1 = box
    # scale = num/den, the largest that fits
    num, den = (x1 - x0, w) if (x1 - x0) * h <= (y1 - y0) * w else (y1 - y0, h)
    sw, sh = w * num // den, h * num // den
    ox, oy = x0 + (x1 - x0 - sw) // 2, y0 + (y1 - y0 - sh) // 2
    for y in range(sh):
        for x in range(sw):
            colour = paint(x * den // num, y * den // num)
            if colour is not None:
                pixels[(oy + y) * width + ox + x] = colour


def thumbnail(graph: Graph, colour_images: dict) -> bytes:
    """The JPEG thumbnail of ``graph`` (``colour_images``: make_workflows.IMAGES, the colour layouts)."""
    layout = _layout(graph, colour_images)
    if layout is None:  # no layout: the subject's photo
        pixels = [GREY] * WIDTH * WIDTH
        _fit(pixels, WIDTH, "dog_photo.png", (WIDTH // 8, WIDTH // 8, WIDTH * 7 // 8, WIDTH * 7 // 8))
        return jpeg_file(WIDTH, WIDTH, pixels)
    canvas_w, canvas_h, regions = layout
    height = WIDTH * canvas_h // canvas_w
    pixels = [GREY] * WIDTH * height
    boxes = [(phrase, tuple(v * WIDTH // canvas_w for v in box)) for phrase, box in regions]
    photos = _photos(graph)
    for phrase, box in boxes:
        if phrase in photos:
            _fit(pixels, WIDTH, photos[phrase], box)
    palette = preview_palette()
    line = 2
    for index, (_, (x0, y0, x1, y1)) in enumerate(boxes):
        colour = palette[index % len(palette)]
        for y in range(y0, y1):
            for x in range(x0, x1):
                edge = x < x0 + line or x >= x1 - line or y < y0 + line or y >= y1 - line
                old = pixels[y * WIDTH + x]
                # Layout Preview's default opacity 0.4: 3/5 of the canvas, 2/5 of the colour
                pixels[y * WIDTH + x] = colour if edge else tuple(
                    (3 * o + 2 * c + 2) // 5 for o, c in zip(old, colour, strict=True))
    return jpeg_file(WIDTH, height, pixels)
