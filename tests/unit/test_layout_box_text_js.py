"""The box editor's JS (web/lib/layout_box_text.js) against the node's Python parser.

Runs the JS unit tests (``node --test tests/js``) and feeds the same texts to both parsers
through a long-lived node process (tests/js/layout_box_text_cli.mjs): they must accept the
same lines, read the same boxes, reject on the same line, and write the same canonical text.
Skipped where node is absent.

Known difference, left out of the generated texts: Python's ``\\d`` also matches other
scripts' digits ("٣٢"), so the node accepts "dog: ٣٢ 0 8 8"; the editor reads ASCII digits
only and shows such a line as an error (it never rewrites it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cones2.guidance.layout import Box
from cones2.guidance.layout_text import (
    BoxLine,
    LayoutTextError,
    format_box_line,
    format_box_lines,
    parse_box_lines,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed: the web editor's JS is not tested")


def test_js_unit_tests_pass():
    proc = subprocess.run([NODE, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", proc.stdout, re.M), proc.stdout[-2000:]
    assert re.search(r"^# fail 0$", proc.stdout, re.M), proc.stdout[-2000:]


class _JsBoxText:
    """A node process answering parse/format requests, one JSON line each."""

    def __init__(self):
        self.proc = subprocess.Popen([NODE, "tests/js/layout_box_text_cli.mjs"], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, encoding="utf-8")

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the JS helper exited ({self.proc.poll()})"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def js():
    helper = _JsBoxText()
    yield helper
    helper.close()


def _as_dict(b: BoxLine) -> dict:
    return {"phrase": b.phrase, "occurrence": b.occurrence, "x": b.box.x, "y": b.box.y, "width": b.box.width,
            "height": b.box.height, "gamma": b.gamma}


def _assert_agree(js: _JsBoxText, text: str) -> None:
    answer = js.ask({"parse": text})
    try:
        boxes = parse_box_lines(text)
    except LayoutTextError as e:
        line = int(re.match(r"line (\d+)", str(e)).group(1))
        assert answer["errors"], f"Python rejects line {line} ({e}) but the JS accepts {text!r}"
        assert answer["errors"][0]["line"] == line, (text, str(e), answer["errors"])
        return
    assert not answer["errors"], f"the JS rejects {text!r}: {answer['errors']}; Python reads {boxes}"
    # JSON writes a whole float like 4.2e16 as an integer literal; compare γ+ as floats
    js_boxes = [{**b, "gamma": None if b["gamma"] is None else float(b["gamma"])} for b in answer["boxes"]]
    assert js_boxes == [_as_dict(b) for b in boxes]
    canonical = answer["serialized"]
    # The JS keeps comments and blank lines as they are; its box lines are Python's canonical lines.
    kinds = _kinds(text)
    js_lines = canonical.split("\n") if kinds else [] if canonical == "" else [canonical]
    js_box_lines = [ln for ln, kind in zip(js_lines, kinds, strict=True) if kind == "box"]
    assert js_box_lines == [format_box_line(b) for b in boxes]
    # What the editor writes reads back, in Python, as the same boxes.
    assert [_as_dict(b) for b in parse_box_lines(canonical)] == [_as_dict(b) for b in boxes]


def _kinds(text: str) -> list[str]:
    return ["text" if not ln.strip() or ln.strip().startswith("#") else "box" for ln in text.splitlines()]


EXAMPLES = [
    "dog: 32 64 224 320",
    "dog #2: 288 64 224 320 2.0",
    "dog: 32 64 224 320\ndog #2: 288, 64, 224, 320, 2.0\n",
    "# two dogs\n\n   \n  dog   #  2  :32,64 ,224,\t320, 1.5,\r\n\t# indented\n  robot    toy:\t0 0 8 8  \n",
    "robot toy: 8, 8, 64, 64, 1e-1",
    "cat: +8 -0 008 16 -2.5",
    "cat: 1 2 3 4 .5",
    "cat: 1 2 3 4 5.",
    "dog: 0 0 0 0 4.285429781789418e+16",
    "\x1fdog\x85cat\x1f: 1 2 3 4",
    "dog:1,2,3,4",
    "a\u2028b: 1 2 3 4",
    "dog\x0bcat: 1 2 3 4",
    "",
    "\n\n",
    "# only a comment",
    # errors
    "dog 32 64 224 320",
    "dog: 1: 2 3 4",
    "dog: 1 2 3 4 # trailing comment",
    "#2: 1 2 3 4\ndog: x",
    " #2: 1 2 3 4",
    "a, b: 1 2 3 4",
    "dog #0: 1 2 3 4",
    "dog #-1: 1 2 3 4",
    "dog #2 #3: 1 2 3 4",
    "dog: 1 2 3",
    "dog: 1 2 3 4 5 6",
    "dog: 1.5 2 3 4",
    "dog: 1 2 3 4e1",
    "dog: 1 2 3 four",
    "dog: 1 2 3 4 1e999",
    "dog: 1 2 3 4 inf",
    "dog: 1 2 3 4 nan",
    "ok: 0 0 8 8\nbad\nworse",
    "\ufeffdog: 1 2 3 4",
]


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_agree(js, text):
    _assert_agree(js, text)


# Texts built from the grammar's pieces and its near misses; ASCII digits only (see the module docstring).
_ws = st.sampled_from([" ", "  ", "\t", "\x0b", "\x1f", "\xa0", "\u3000", "\ufeff", ""])
_sep = st.sampled_from([" ", ",", ", ", " ,", "\t", " , ", ",,", "\u2003", ""])
_word = st.text(alphabet=st.sampled_from(list("dogcatRbt-_.é中") + ["#", ",", ":"]), min_size=0, max_size=6)
_int = st.one_of(st.integers(-20, 2000).map(str), st.sampled_from(["+8", "-0", "007", "1.5", "2.", "x", "", "1e3"]))
_gamma = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(
    [".5", "5.", "1e-7", "+2.5", "-1", "1e400", "inf", "nan", "2,5", "1_0"]))


@st.composite
def _box_line(draw):
    phrase = draw(_ws) + draw(_word) + draw(st.sampled_from(["", " ", "  "])) + draw(_word) + draw(_ws)
    occ = draw(st.one_of(st.just(""), st.integers(-1, 12).map(lambda n: f"#{n}"),
                         st.sampled_from(["#", "# 2 ", "#2#3", "#x"])))
    numbers = [draw(_int) for _ in range(draw(st.integers(3, 5)))]
    if draw(st.booleans()):
        numbers[-1] = draw(_gamma)
    body = "".join(draw(_sep) + n for n in numbers) + draw(_sep)
    return phrase + occ + draw(_ws) + draw(st.sampled_from([":", "", "::"])) + body + draw(_ws)


@st.composite
def _valid_box_line(draw):
    phrase = draw(_ws) + draw(st.sampled_from(["dog", "Cat", "robot  toy", "é中", "a-b.c"])) + draw(_ws)
    occ = draw(st.one_of(st.just(""), st.integers(1, 12).map(lambda n: f"{draw(_ws)}#{draw(_ws)}{n}")))
    numbers = [str(draw(st.integers(0, 2048))) for _ in range(4)]
    if draw(st.booleans()):
        numbers.append(draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                                      st.sampled_from([".5", "5.", "1e-7", "+2.5", "-1", "2"]))))
    seps = st.sampled_from([" ", ",", ", ", "\t", " , ", "\u2003 "])
    return phrase + occ + draw(_ws) + ":" + "".join(draw(seps) + n for n in numbers) + draw(_ws)


_line = st.one_of(_valid_box_line(), _box_line(), st.sampled_from(["", "   ", "# comment", "  # x: 1 2 3 4", "#"]))
_break = st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.tuples(_line, _break), max_size=4))
def test_generated_texts_agree(js, lines):
    _assert_agree(js, "".join(line + br for line, br in lines))


@settings(max_examples=200, deadline=None)
@given(phrase=st.text(alphabet=st.characters(blacklist_characters=":#,", blacklist_categories=("Cs", "Nd", "Z", "Cc")),
                      min_size=1, max_size=12),
       occurrence=st.integers(1, 80), xywh=st.tuples(*[st.integers(0, 20000)] * 4),
       gamma=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)))
def test_canonical_format_agrees(js, phrase, occurrence, xywh, gamma):
    phrase = " ".join(phrase.split())
    if not phrase:
        return
    b = BoxLine(phrase, occurrence, Box(*xywh), gamma)
    line = js.ask({"format": _as_dict(b)})["line"]
    assert line == format_box_line(b) == format_box_lines([b])
    assert parse_box_lines(line) == [BoxLine(phrase, occurrence, Box(*xywh), gamma, 1)]
