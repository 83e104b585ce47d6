"""The text formats of layouts: box lines (Layout Boxes) and colour mappings (Layout from Color Map).

Box lines
---------
The ``boxes`` value of ``Cones2LayoutBoxes``, read and written by hand and by the box-drawing
widget. Their grammar has one home, the README's "Cones2 Layout Boxes" section: this parser,
the node's tooltip and the widget's parser (``web/lib/layout_box_text.js``) follow it.
``format_box_lines`` writes the canonical form given there; ``parse_box_lines`` reads it back.

Colour mappings
---------------
The ``colors`` value of ``Cones2LayoutFromColorMap``: which colour of the image is which subject::

    mapping    := json | line ("\\n" line)*
    line       := blank | comment | entry
    comment    := whitespace* "#" anything, except "#" + hex digits + ":" (a hex colour entry)
    entry      := colour ":" phrase ["#" occurrence] [SEP gamma]
    colour     := R SEP G SEP B  (integers 0..255)  |  "#" RRGGBB (hex)
    json       := the authors' "color_context" object, {"255,192,0": ["mug", 2.5], ...}, or a whole
                  authors' inference config holding one (keys "R,G,B" or "#RRGGBB"; a value is
                  [phrase, gamma], [phrase] or phrase; a phrase may carry "#occurrence")

e.g. ``255,192,0: mug 2.5`` or ``#ff0000: dog #2``. A trailing number is γ+, so a phrase that
ends in a number needs its γ+ written after it. A colour appears once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .layout import DEFAULT_GAMMA, Box, Layout, LayoutError, LayoutSubject, subject_key, subject_label

BOX_SYNTAX = "<phrase> [#<occurrence>]: <x> <y> <width> <height> [<gamma>]"
COLOR_SYNTAX = "<R>,<G>,<B>: <phrase> [#<occurrence>] [<gamma>]"

_SEP = re.compile(r"[\s,]+")
_INT = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_COLOR = re.compile(r"#([0-9a-fA-F]{6})")
_HEX_ENTRY = re.compile(r"\s*#[0-9a-fA-F]+\s*:")  # "#" + hex digits + ":" is a colour entry, not a comment


class LayoutTextError(LayoutError):
    """A layout text that cannot be read; the message names the line and the fix."""


@dataclass(frozen=True)
class BoxLine:
    """One parsed box line. ``gamma`` is None when the line leaves it to the node's default."""

    phrase: str
    occurrence: int
    box: Box
    gamma: float | None = None
    line: int = 0  # 1-based line number in the text it came from; 0 when built in code

    @property
    def label(self) -> str:
        return subject_label(self.phrase, self.occurrence)


@dataclass(frozen=True)
class ColorEntry:
    """One colour of a colour map and the subject it stands for."""

    color: tuple[int, int, int]
    phrase: str
    occurrence: int = 1
    gamma: float | None = None
    line: int = 0  # 1-based line number (or JSON entry number); 0 when built in code

    @property
    def label(self) -> str:
        return subject_label(self.phrase, self.occurrence)


# --- box lines ------------------------------------------------------------------------------

def parse_box_lines(text: str) -> list[BoxLine]:
    """Parse the box-line format (module docstring); raise ``LayoutTextError`` naming the line."""
    boxes = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        boxes.append(_parse_box_line(stripped, number))
    return boxes


def _parse_box_line(line: str, number: int) -> BoxLine:
    where = f"line {number} ({line!r})"
    if ":" not in line:
        raise LayoutTextError(f"{where} has no ':'; write {BOX_SYNTAX}, e.g. 'dog: 32 64 224 320'")
    head, rest = line.split(":", 1)
    if ":" in rest:
        raise LayoutTextError(f"{where} has more than one ':'; one box per line: {BOX_SYNTAX}")
    if "#" in rest:
        raise LayoutTextError(
            f"{where}: '#' after ':' is not allowed; comments go on their own line starting with '#', "
            "and the occurrence goes before ':' (e.g. 'dog #2: 288 64 224 320')")
    phrase, occurrence = _phrase_and_occurrence(head, where)
    fields = [f for f in _SEP.split(rest.strip(" \t,")) if f]
    if len(fields) not in (4, 5):
        raise LayoutTextError(
            f"{where} has {len(fields)} number(s) after ':'; give x y width height and optionally γ+: {BOX_SYNTAX}")
    x, y, w, h = (_pixels(v, name, where) for v, name in zip(fields[:4], ("x", "y", "width", "height"), strict=True))
    gamma = _gamma(fields[4], where) if len(fields) == 5 else None
    return BoxLine(phrase, occurrence, Box(x, y, w, h), gamma, number)


def _phrase_and_occurrence(text: str, where: str) -> tuple[str, int]:
    phrase, hash_, occ = text.partition("#")
    phrase = _phrase(phrase, where)
    return phrase, (_occurrence(occ, phrase, where) if hash_ else 1)


def _phrase(text: str, where: str) -> str:
    phrase = " ".join(text.split())
    if not phrase:
        raise LayoutTextError(f"{where} has no phrase; name the phrase of the prompt, e.g. 'dog' or 'robot toy'")
    if "," in phrase:
        raise LayoutTextError(f"{where}: the phrase {phrase!r} holds ','; a phrase cannot contain ',', ':' or '#'")
    return phrase


def _occurrence(text: str, phrase: str, where: str) -> int:
    occ = text.strip()
    if not re.fullmatch(r"[0-9]+", occ) or int(occ) < 1:
        raise LayoutTextError(
            f"{where}: '#{occ}' is not an occurrence; write '#' and a whole number from 1, e.g. '{phrase} #2'")
    return int(occ)


def _pixels(value: str, name: str, where: str) -> int:
    if _INT.fullmatch(value):
        return int(value)
    if _NUMBER.fullmatch(value):
        raise LayoutTextError(f"{where}: {name}={value} is not a whole number of pixels; round it, e.g. "
                              f"{round(float(value))}")
    raise LayoutTextError(f"{where}: {name} {value!r} is not a number; write {BOX_SYNTAX}")


def _gamma(value: str, where: str) -> float:
    if not _NUMBER.fullmatch(value) or not math.isfinite(float(value)):
        raise LayoutTextError(f"{where}: γ+ {value!r} is not a number; write it like 2.5, or leave it out")
    return float(value)


def format_box_line(box: BoxLine) -> str:
    """The canonical text of one box line."""
    b = box.box
    gamma = f" {format_number(box.gamma)}" if box.gamma is not None else ""
    return f"{box.label}: {b.x} {b.y} {b.width} {b.height}{gamma}"


def format_box_lines(boxes: Iterable[BoxLine]) -> str:
    """The canonical text of several box lines, one per line."""
    return "\n".join(format_box_line(b) for b in boxes)


def format_number(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` ("2.5", "2", "1e-07")."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def layout_from_box_lines(boxes: Iterable[BoxLine], width: int, height: int,
                          gamma: float = DEFAULT_GAMMA, base: Layout | None = None) -> Layout:
    """A layout of ``boxes`` on a ``width x height`` canvas, appended to ``base`` if given.

    Every box must lie inside the canvas and have an area; each phrase occurrence has one box
    (also across ``base``). Errors name the line.
    """
    if base is not None and (base.width, base.height) != (width, height):
        raise LayoutTextError(
            f"the chained layout's canvas is {base.width}x{base.height} but this one is {width}x{height}; "
            f"set width and height to {base.width}x{base.height} (box coordinates are pixels of one canvas)")
    if base is None:
        base = Layout(width, height)
    taken = {subject_key(s.phrase, s.occurrence): f"the chained layout ({s.label!r})" for s in base.subjects}
    subjects = list(base.subjects)
    for bl in boxes:
        where = f"line {bl.line} ({bl.label!r})" if bl.line else f"box {bl.label!r}"
        _check_box(bl.box, width, height, where)
        key = subject_key(bl.phrase, bl.occurrence)
        if key in taken:
            raise LayoutTextError(
                f"{where}: this phrase occurrence already has a box, on {taken[key]}; one box per occurrence: "
                f"for another one write '{bl.phrase} #{bl.occurrence + 1}', or use a mask for a free-form region")
        taken[key] = f"line {bl.line}" if bl.line else f"box {bl.label!r}"
        subjects.append(LayoutSubject(bl.phrase, bl.occurrence, box=bl.box,
                                      gamma=float(gamma if bl.gamma is None else bl.gamma)))
    return Layout(width, height, tuple(subjects))


def _check_box(b: Box, width: int, height: int, where: str) -> None:
    if b.width <= 0 or b.height <= 0:
        raise LayoutTextError(f"{where}: the box is {b.width}x{b.height}, zero area; give it a width and height of 1 "
                              "or more")
    problems = []
    if b.x < 0:
        problems.append(f"x={b.x} is left of the canvas")
    if b.y < 0:
        problems.append(f"y={b.y} is above the canvas")
    if b.x + b.width > width:
        problems.append(f"its right edge x+width={b.x + b.width} is past the canvas width {width}")
    if b.y + b.height > height:
        problems.append(f"its bottom edge y+height={b.y + b.height} is past the canvas height {height}")
    if problems:
        raise LayoutTextError(f"{where}: the box reaches outside the {width}x{height} canvas: {'; '.join(problems)}. "
                              "Move or shrink it, or enlarge the canvas")


# --- colour mappings ------------------------------------------------------------------------

def parse_color_mapping(text: str) -> list[ColorEntry]:
    """Parse a colour mapping (module docstring): lines, or the authors' JSON ``color_context``."""
    if text.lstrip().startswith(("{", "[")):
        entries = _parse_color_json(text)
    else:
        entries = []
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or (stripped.startswith("#") and not _HEX_ENTRY.match(stripped)):
                continue
            entries.append(_parse_color_line(stripped, number))
    seen: dict[tuple[int, int, int], ColorEntry] = {}
    for e in entries:
        if e.color in seen:
            raise LayoutTextError(
                f"{_entry_where(e)}: the colour {format_color(e.color)} is already {seen[e.color].label!r} on "
                f"{_entry_where(seen[e.color])}; a colour stands for one subject: give one of them another colour")
        seen[e.color] = e
    return entries


def _entry_where(e: ColorEntry) -> str:
    return f"line {e.line}" if e.line > 0 else f"entry {-e.line}" if e.line < 0 else f"colour {format_color(e.color)}"


def _parse_color_line(line: str, number: int) -> ColorEntry:
    where = f"line {number} ({line!r})"
    if ":" not in line:
        raise LayoutTextError(f"{where} has no ':'; write {COLOR_SYNTAX}, e.g. '255,192,0: mug 2.5'")
    head, rest = line.split(":", 1)
    color = parse_color(head, where)
    phrase, occurrence, gamma = _subject_spec(rest, where)
    return ColorEntry(color, phrase, occurrence, gamma, number)


def _subject_spec(text: str, where: str) -> tuple[str, int, float | None]:
    """``phrase [#occurrence] [gamma]`` of a colour entry line."""
    if ":" in text:
        raise LayoutTextError(f"{where} has more than one ':'; one colour per line: {COLOR_SYNTAX}")
    head, hash_, tail = text.partition("#")
    fields = [f for f in _SEP.split(head.strip(" \t,")) if f]
    if not fields or (len(fields) == 1 and not hash_ and _NUMBER.fullmatch(fields[0])):
        raise LayoutTextError(f"{where} has no phrase after ':'; write {COLOR_SYNTAX}, e.g. '255,192,0: mug'")
    phrase = " ".join(fields)
    occurrence, gamma = 1, None
    if hash_:
        after = [f for f in _SEP.split(tail.strip(" \t,")) if f]
        if not after or len(after) > 2:
            raise LayoutTextError(f"{where}: after '#' give the occurrence and optionally γ+, e.g. 'dog #2 2.5'")
        occurrence = _occurrence(after[0], phrase, where)
        gamma = _gamma(after[1], where) if len(after) == 2 else None
    elif len(fields) >= 2 and _NUMBER.fullmatch(fields[-1]):
        gamma = _gamma(fields[-1], where)
        phrase = " ".join(fields[:-1])
    return phrase, occurrence, gamma


def parse_color(text: str, where: str = "the colour") -> tuple[int, int, int]:
    """``R,G,B`` / ``R G B`` (0..255, optionally in parentheses) or ``#RRGGBB`` as an ``(r, g, b)`` tuple."""
    value = text.strip()
    hexm = _HEX_COLOR.fullmatch(value)
    if hexm:
        h = hexm.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    parts = [p for p in _SEP.split(value.strip("()[] \t,")) if p]
    if len(parts) != 3 or not all(re.fullmatch(r"[0-9]+", p) for p in parts) or any(int(p) > 255 for p in parts):
        raise LayoutTextError(
            f"{where}: {value!r} is not a colour; write three whole numbers 0..255 as R,G,B (e.g. 255,192,0) "
            "or a hex colour (e.g. #ffc000)")
    r, g, b = (int(p) for p in parts)
    return r, g, b


def parse_color_list(text: str, what: str = "background") -> list[tuple[int, int, int]]:
    """Colours separated by ';' or line breaks (e.g. ``255,255,255; #000000``); empty text = none."""
    return [parse_color(part, f"{what} colour {i}") for i, part in
            enumerate((p for p in re.split(r"[;\n]", text) if p.strip()), start=1)]


def format_color(color: tuple[int, int, int]) -> str:
    return ",".join(str(c) for c in color)


def _parse_color_json(text: str) -> list[ColorEntry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LayoutTextError(
            f"the colour mapping starts like JSON but is not valid JSON ({e.msg} at line {e.lineno}, column "
            f"{e.colno}); fix it, or write one '{COLOR_SYNTAX}' per line") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict) and "color_context" in data:
        data = data["color_context"]
    if not isinstance(data, dict):
        raise LayoutTextError(
            'the JSON colour mapping must be an object {"R,G,B": [phrase, gamma], ...} (the authors\' '
            '"color_context"), or an authors\' inference config holding one')
    entries = []
    for i, (key, value) in enumerate(data.items(), start=1):
        where = f"entry {i} ({key!r})"
        color = parse_color(str(key), where)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not 1 <= len(value) <= 2 or not isinstance(value[0], str) or (
                len(value) == 2 and (isinstance(value[1], bool) or not isinstance(value[1], int | float))):
            raise LayoutTextError(f"{where}: the value must be [phrase, gamma], e.g. [\"mug\", 2.5]; got {value!r}")
        phrase, occurrence = _phrase_and_occurrence(value[0], where)
        gamma = None
        if len(value) == 2:
            gamma = float(value[1])
            if not math.isfinite(gamma):
                raise LayoutTextError(f"{where}: γ+ must be a finite number, got {value[1]!r}")
        entries.append(ColorEntry(color, phrase, occurrence, gamma, -i))
    return entries
