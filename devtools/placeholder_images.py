"""The placeholder images of the shipped workflows, as PNG files written with zlib alone.

``IMAGES``-style flat colour maps come from ``png_bytes``; the cut-out subject photos of
``init_latent_from_photos`` (flat shapes on a transparent background) from ``PHOTOS``.
"""

from __future__ import annotations

import struct
import zlib


def png_file(width: int, height: int, rows: list[bytes], rgba: bool) -> bytes:
    """A PNG of ``rows`` (each ``width`` pixels of RGB or RGBA bytes, unfiltered)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6 if rgba else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows), 9)) + chunk(b"IEND", b""))


def png_bytes(width: int, height: int, background, regions) -> bytes:
    """An RGB PNG of flat rectangles (no anti-aliasing)."""
    rows = []
    for y in range(height):
        row = bytearray(bytes(background) * width)
        for colour, (x0, y0, x1, y1) in regions:
            if y0 <= y < y1:
                row[3 * x0:3 * x1] = bytes(colour) * (x1 - x0)
        rows.append(bytes(row))
    return png_file(width, height, rows, rgba=False)


# --- the placeholder photos: flat shapes on a transparent background ------------------------------

def _dog(x: int, y: int):
    """A brown 'dog': body, head, ear, legs (ellipses and rectangles) on 320x256."""
    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
    if ellipse(214, 92, 20, 34) and x > 200:
        return (90, 55, 30)  # ear
    if ellipse(236, 100, 46, 42):
        return (150, 100, 55)  # head
    if ellipse(150, 150, 92, 50) or any(lx <= x < lx + 22 and 170 <= y < 236 for lx in (84, 118, 176, 206)):
        return (175, 120, 70)  # body and legs
    return None


def _flower(x: int, y: int):
    """A red 'flower' with a yellow heart on a green stem, on 192x320."""
    r2 = (x - 96) ** 2 + (y - 90) ** 2
    if r2 <= 22 ** 2:
        return (240, 200, 40)
    if r2 <= 70 ** 2:
        return (210, 40, 50)
    if 88 <= x < 104 and 150 <= y < 310 or ((x - 124) / 26) ** 2 + ((y - 220) / 12) ** 2 <= 1:
        return (50, 140, 60)
    return None


def rgba_png(width: int, height: int, paint) -> bytes:
    """An RGBA PNG: ``paint(x, y)`` gives a colour (opaque) or None (transparent)."""
    rows = [b"".join(bytes((*c, 255)) if (c := paint(x, y)) else b"\x00\x00\x00\x00" for x in range(width))
            for y in range(height)]
    return png_file(width, height, rows, rgba=True)


# name -> (width, height, paint): the cut-outs, also drawn into the workflows' thumbnails
CUTOUTS = {
    "dog_photo.png": (320, 256, _dog),
    "flower_photo.png": (192, 320, _flower),
}
PHOTOS = {name: (lambda w=w, h=h, paint=paint: rgba_png(w, h, paint)) for name, (w, h, paint) in CUTOUTS.items()}
