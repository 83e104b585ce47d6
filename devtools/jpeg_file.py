"""A baseline JPEG encoder in integer arithmetic (standard library only), for the workflows' thumbnails.

ComfyUI's frontend asks for a custom-node template's thumbnail as ``<name>.jpg`` (1.27 and 1.58
alike). The generator writes them and ``--check`` compares bytes, so they must come out the same
on every machine and Python: no libjpeg (whose output may change with its version), no floats.
Baseline sequential DCT, 4:4:4, the standard (Annex K) quantisation and Huffman tables, JFIF.
Thumbnails are flat shapes, so identical 8x8 blocks are transformed once.
"""

from __future__ import annotations

import math
import struct

ZIGZAG = (0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
          7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
          39, 46, 53, 60, 61, 54, 47, 55, 62, 63)

LUMA_Q = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
          14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
          49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
CHROMA_Q = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
            47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32

_AC_LUMA_VALS = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
    "24336272820 90a161718191a25262728292a3435363738393a434445464748494a"
    "535455565758595a636465666768696a737475767778797a838485868788898a"
    "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6"
    "c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa".replace(" ", ""))
_AC_CHROMA_VALS = bytes.fromhex(
    "00010203110405213106124151076171132232810814429" "1a1b1c109233352f0"
    "156272d10a162434e125f11718191a262728292a35363738393a434445464748"
    "494a535455565758595a636465666768696a737475767778797a828384858687"
    "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3"
    "c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa")
# (class, id) -> (counts of codes of length 1..16, symbols): ITU-T T.81 Annex K.3.
HUFFMAN = {
    (0, 0): ((0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0), bytes(range(12))),
    (0, 1): ((0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0), bytes(range(12))),
    (1, 0): ((0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D), _AC_LUMA_VALS),
    (1, 1): ((0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77), _AC_CHROMA_VALS),
}
_SCALE = 13  # DCT basis in fixed point: round(2**13 * c(u)/2 * cos((2x+1)u*pi/16))
_BASIS = tuple(tuple(round((1 << _SCALE) * (math.sqrt(0.5) if u == 0 else 1.0) / 2
                           * math.cos((2 * x + 1) * u * math.pi / 16)) for x in range(8)) for u in range(8))


def _codes(counts, symbols) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length), the canonical codes of Annex C."""
    table, code, k = {}, 0, 0
    for length, n in enumerate(counts, start=1):
        for _ in range(n):
            table[symbols[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return table


def _quant_table(base, quality: int) -> tuple[int, ...]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (q * scale + 50) // 100)) for q in base)


def _div_round(a: int, b: int) -> int:
    """a / b rounded half away from zero, for b > 0."""
    return (a + b // 2) // b if a >= 0 else -((-a + b // 2) // b)


def _quantized(block: tuple[int, ...], quant: tuple[int, ...]) -> tuple[int, ...]:
    """The block's DCT coefficients divided by ``quant``, in zigzag order (the block is level-shifted)."""
    rows = [[sum(b * block[8 * y + x] for x, b in enumerate(basis)) for basis in _BASIS] for y in range(8)]
    coef = [sum(b * rows[y][u] for y, b in enumerate(_BASIS[v])) for v in range(8) for u in range(8)]
    return tuple(_div_round(coef[i], quant[i] << (2 * _SCALE)) for i in ZIGZAG)


class _Bits:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, code: int, length: int) -> None:
        self.acc = (self.acc << length) | code
        self.n += length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)  # byte stuffing
        self.acc &= (1 << self.n) - 1

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def _magnitude(value: int) -> tuple[int, int]:
    """(category, the bits JPEG writes for ``value``)."""
    size = abs(value).bit_length()
    return size, (value if value >= 0 else value + (1 << size) - 1)


def _encode_block(bits: _Bits, coefs, previous_dc: int, dc_codes, ac_codes) -> int:
    size, extra = _magnitude(coefs[0] - previous_dc)
    bits.put(*dc_codes[size])
    if size:
        bits.put(extra, size)
    run = 0
    for value in coefs[1:]:
        if value == 0:
            run += 1
            continue
        while run > 15:
            bits.put(*ac_codes[0xF0])
            run -= 16
        size, extra = _magnitude(value)
        bits.put(*ac_codes[(run << 4) | size])
        bits.put(extra, size)
        run = 0
    if run:
        bits.put(*ac_codes[0x00])
    return coefs[0]


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def jpeg_file(width: int, height: int, pixels, quality: int = 90) -> bytes:
    """A JPEG of ``pixels`` (row-major ``(r, g, b)`` tuples, ``width * height`` of them)."""
    planes = ([], [], [])
    for r, g, b in pixels:
        planes[0].append(((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) - 128)
        planes[1].append((-11059 * r - 21709 * g + 32768 * b + 32768) >> 16)
        planes[2].append((32768 * r - 27439 * g - 5329 * b + 32768) >> 16)
    quants = (_quant_table(LUMA_Q, quality), _quant_table(CHROMA_Q, quality))
    codes = {key: _codes(*table) for key, table in HUFFMAN.items()}
    bits, previous, cache = _Bits(), [0, 0, 0], {}
    for by in range(0, height, 8):
        for bx in range(0, width, 8):
            for c, plane in enumerate(planes):
                # edge blocks repeat the last row/column (as libjpeg pads)
                block = tuple(plane[min(by + y, height - 1) * width + min(bx + x, width - 1)]
                              for y in range(8) for x in range(8))
                table = 0 if c == 0 else 1
                key = (table, block)
                if key not in cache:
                    cache[key] = _quantized(block, quants[table])
                previous[c] = _encode_block(bits, cache[key], previous[c], codes[(0, table)], codes[(1, table)])
    dqt = b"".join(bytes([t]) + bytes(q[i] for i in ZIGZAG) for t, q in enumerate(quants))
    dht = b"".join(bytes([cls << 4 | ident]) + bytes(counts) + symbols
                   for (cls, ident), (counts, symbols) in HUFFMAN.items())
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes((1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1))
    sos = bytes((3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0))
    return (b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + _segment(0xDB, dqt) + _segment(0xC0, sof) + _segment(0xC4, dht) + _segment(0xDA, sos)
            + bits.flush() + b"\xff\xd9")
