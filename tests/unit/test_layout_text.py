"""The layout text formats: box lines (Layout Boxes) and colour mappings (Layout from Color Map)."""

import json

import pytest
from cones2.guidance.layout import Box, Layout, LayoutError, LayoutSubject
from cones2.guidance.layout_text import (
    BoxLine,
    ColorEntry,
    LayoutTextError,
    format_box_line,
    format_box_lines,
    format_number,
    layout_from_box_lines,
    parse_box_lines,
    parse_color,
    parse_color_list,
    parse_color_mapping,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# --- box lines: parsing ----------------------------------------------------------------------


def test_examples_of_the_issue():
    boxes = parse_box_lines("dog: 32 64 224 320\ndog #2: 288 64 224 320 2.0\nrobot toy: 8, 8, 64, 64")
    assert boxes == [
        BoxLine("dog", 1, Box(32, 64, 224, 320), None, 1),
        BoxLine("dog", 2, Box(288, 64, 224, 320), 2.0, 2),
        BoxLine("robot toy", 1, Box(8, 8, 64, 64), None, 3),
    ]


def test_comments_blank_lines_separators_and_spacing():
    text = ("# two dogs\n\n   \n  dog   #  2  :32,64 ,224,\t320, 1.5,\r\n"
            "\t# indented comment\n  robot    toy:\t0 0 8 8  \n")
    assert parse_box_lines(text) == [
        BoxLine("dog", 2, Box(32, 64, 224, 320), 1.5, 4),
        BoxLine("robot toy", 1, Box(0, 0, 8, 8), None, 6),
    ]
    assert parse_box_lines("") == [] and parse_box_lines("# only a comment\n\n") == []


@pytest.mark.parametrize("gamma,value", [("2", 2.0), ("2.5", 2.5), ("-1", -1.0), ("1e-1", 0.1), (".5", 0.5),
                                         ("+3.", 3.0)])
def test_gamma_forms(gamma, value):
    assert parse_box_lines(f"dog: 0 0 8 8 {gamma}")[0].gamma == value


@pytest.mark.parametrize("line,fragment", [
    ("dog 32 64 224 320", "has no ':'"),
    ("dog: 32 64 224", "has 3 number(s)"),
    ("dog: 32 64 224 320 2.5 7", "has 6 number(s)"),
    ("dog: 32 64 2x4 320", "width '2x4' is not a number"),
    ("dog: 32.5 64 224 320", "x=32.5 is not a whole number of pixels"),
    ("dog: 32 64 224 320 abc", "γ+ 'abc' is not a number"),
    ("dog: 32 64 224 320 nan", "γ+ 'nan' is not a number"),
    (": 32 64 224 320", "has no phrase"),
    ("dog #two: 32 64 224 320", "'#two' is not an occurrence"),
    ("dog #0: 32 64 224 320", "'#0' is not an occurrence"),
    ("dog #2 #3: 32 64 224 320", "is not an occurrence"),
    ("dog: 32 64 224 320  # left dog", "comments go on their own line"),
    ("dog: 1 2 3 4: 5", "more than one ':'"),
    ("red, dog: 32 64 224 320", "cannot contain ','"),
])
def test_malformed_lines_name_the_line_and_the_fix(line, fragment):
    with pytest.raises(LayoutTextError) as err:
        parse_box_lines(f"# header\n{line}")
    message = str(err.value)
    assert message.startswith("line 2 "), message
    assert fragment in message, message


# --- box lines: round trips ------------------------------------------------------------------

_phrase_word = st.text(alphabet=st.characters(blacklist_characters=":#,", blacklist_categories=("Cs", "Zs", "Cc",
                                                                                                  "Zl", "Zp")),
                       min_size=1, max_size=8)
phrases = st.lists(_phrase_word, min_size=1, max_size=3).map(" ".join)
gammas = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
box_lines = st.builds(
    BoxLine, phrases, st.integers(1, 99),
    st.builds(Box, st.integers(-5, 4096), st.integers(-5, 4096), st.integers(0, 4096), st.integers(0, 4096)),
    gammas)


@settings(max_examples=300, deadline=None)
@given(st.lists(box_lines, max_size=8))
def test_format_then_parse_gives_the_same_boxes(boxes):
    parsed = parse_box_lines(format_box_lines(boxes))
    assert [(b.phrase, b.occurrence, b.box, b.gamma) for b in parsed] == \
           [(b.phrase, b.occurrence, b.box, b.gamma) for b in boxes]
    assert [b.line for b in parsed] == list(range(1, len(boxes) + 1))


@settings(max_examples=200, deadline=None)
@given(box_lines, st.sampled_from([" ", "  ", "\t", ",", ", ", " ,"]), st.sampled_from(["", " ", "  "]))
def test_any_separator_parses_like_the_canonical_form(box, sep, pad):
    b = box.box
    fields = [str(v) for v in (b.x, b.y, b.width, b.height)]
    if box.gamma is not None:
        fields.append(format_number(box.gamma))
    occ = f"{pad}#{pad}{box.occurrence}" if box.occurrence != 1 else ""
    text = f"{pad}{box.phrase}{occ}{pad}:{pad}{sep.join(fields)}{pad}"
    assert parse_box_lines(text) == parse_box_lines(format_box_line(box))


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_number_reads_back_exactly(value):
    assert float(format_number(value)) == value


def test_canonical_form():
    assert format_box_line(BoxLine("dog", 1, Box(32, 64, 224, 320))) == "dog: 32 64 224 320"
    assert format_box_line(BoxLine("dog", 2, Box(288, 64, 224, 320), 2.0)) == "dog #2: 288 64 224 320 2"
    assert format_box_line(BoxLine("robot toy", 1, Box(0, 0, 8, 8), 2.5)) == "robot toy: 0 0 8 8 2.5"


# --- box lines: to a layout --------------------------------------------------------------------

def test_layout_from_lines_applies_the_default_gamma_and_keeps_order():
    layout = layout_from_box_lines(parse_box_lines("dog: 32 64 224 320\ndog #2: 288 64 224 320 2.0"), 512, 512,
                                   gamma=3.0)
    assert (layout.width, layout.height) == (512, 512)
    assert [(s.phrase, s.occurrence, s.box, s.gamma) for s in layout.subjects] == [
        ("dog", 1, Box(32, 64, 224, 320), 3.0), ("dog", 2, Box(288, 64, 224, 320), 2.0)]


def test_no_lines_give_an_empty_layout():
    layout = layout_from_box_lines(parse_box_lines("# nothing yet\n"), 640, 384)
    assert layout.subjects == () and (layout.width, layout.height) == (640, 384)
    assert layout.region_masks(12, 20).shape == (0, 12, 20)


def test_chaining_appends_to_the_base_layout():
    base = layout_from_box_lines(parse_box_lines("dog: 0 0 64 64"), 512, 512)
    layout = layout_from_box_lines(parse_box_lines("cat: 64 0 64 64"), 512, 512, base=base)
    assert [s.phrase for s in layout.subjects] == ["dog", "cat"]
    assert [s.phrase for s in base.subjects] == ["dog"]  # the input is not modified


@pytest.mark.parametrize("line,fragment", [
    ("dog: 448 0 128 64", "right edge x+width=576 is past the canvas width 512"),
    ("dog: 0 400 64 128", "bottom edge y+height=528 is past the canvas height 512"),
    ("dog: -8 0 64 64", "x=-8 is left of the canvas"),
    ("dog: 0 -1 64 64", "y=-1 is above the canvas"),
    ("dog: 0 0 0 64", "zero area"),
    ("dog: 0 0 64 0", "zero area"),
])
def test_boxes_outside_the_canvas_or_without_area(line, fragment):
    with pytest.raises(LayoutTextError) as err:
        layout_from_box_lines(parse_box_lines(f"cat: 0 0 8 8\n\n{line}"), 512, 512)
    assert str(err.value).startswith("line 3 ('dog')"), str(err.value)
    assert fragment in str(err.value)


def test_a_box_touching_the_canvas_edges_is_inside():
    layout = layout_from_box_lines(parse_box_lines("dog: 0 0 512 384"), 512, 384)
    assert layout.region_masks(3, 4).all()


def test_one_box_per_phrase_occurrence():
    with pytest.raises(LayoutTextError, match=r"line 3 \('Dog'\): this phrase occurrence already has a box, on "
                                              r"line 1.*'Dog #2'"):
        layout_from_box_lines(parse_box_lines("dog: 0 0 8 8\ndog #2: 8 0 8 8\nDog: 16 0 8 8"), 64, 64)
    base = layout_from_box_lines(parse_box_lines("robot  toy: 0 0 8 8"), 64, 64)
    with pytest.raises(LayoutTextError, match="already has a box, on the chained layout"):
        layout_from_box_lines(parse_box_lines("Robot Toy: 8 8 8 8"), 64, 64, base=base)


def test_chained_canvas_must_match():
    base = Layout(512, 512)
    with pytest.raises(LayoutTextError, match="chained layout's canvas is 512x512 but this one is 768x512; set width "
                                              "and height to 512x512"):
        layout_from_box_lines([], 768, 512, base=base)


def test_layout_itself_rejects_two_regions_for_one_occurrence():
    layout = Layout(64, 64).add(LayoutSubject("dog", 1, box=Box(0, 0, 8, 8)))
    with pytest.raises(LayoutError, match="'dog' has two regions"):
        layout.add(LayoutSubject("dog", 1, box=Box(8, 8, 8, 8)))
    assert len(layout.add(LayoutSubject("dog", 2, box=Box(8, 8, 8, 8))).subjects) == 2


# --- colour mappings ---------------------------------------------------------------------------

def test_colour_lines():
    text = ("# the authors' example\n255,192,0: mug 2.5\n255 0 0: dog\n#00ff00: robot toy #2 1.5\n"
            "(0, 0, 255): dog #2\n  #0000Fe :cat, 3\n")
    assert parse_color_mapping(text) == [
        ColorEntry((255, 192, 0), "mug", 1, 2.5, 2),
        ColorEntry((255, 0, 0), "dog", 1, None, 3),
        ColorEntry((0, 255, 0), "robot toy", 2, 1.5, 4),
        ColorEntry((0, 0, 255), "dog", 2, None, 5),
        ColorEntry((0, 0, 254), "cat", 1, 3.0, 6),
    ]


def test_authors_json_colour_context_and_whole_config():
    context = {"255,192,0": ["mug", 2.5], "255,0,0": ["dog", 2.5], "#00FF00": "cat", "0, 0, 255": ["dog #2"]}
    expected = [ColorEntry((255, 192, 0), "mug", 1, 2.5, -1), ColorEntry((255, 0, 0), "dog", 1, 2.5, -2),
                ColorEntry((0, 255, 0), "cat", 1, None, -3), ColorEntry((0, 0, 255), "dog", 2, None, -4)]
    assert parse_color_mapping(json.dumps(context, indent=2)) == expected
    config = [{"prompt": "a mug and a dog", "color_context": context, "guidance_weight": 0.08}]
    assert parse_color_mapping(json.dumps(config)) == expected


@pytest.mark.parametrize("text,fragment", [
    ("255,192: mug", "'255,192' is not a colour"),
    ("255,192,256: mug", "'255,192,256' is not a colour"),
    ("#ffc00: mug", "'#ffc00' is not a colour"),
    ("255,192,0 mug", "has no ':'"),
    ("255,192,0:", "has no phrase"),
    ("255,192,0: 2.5", "has no phrase"),
    ("255,192,0: mug #x", "'#x' is not an occurrence"),
    ("255,192,0: mug #2 2.5 3", "after '#' give the occurrence"),
    ("255,192,0: mug #2 abc", "γ+ 'abc' is not a number"),
])
def test_malformed_colour_lines(text, fragment):
    with pytest.raises(LayoutTextError) as err:
        parse_color_mapping("\n" + text)
    assert str(err.value).startswith("line 2 ") and fragment in str(err.value), str(err.value)


def test_a_colour_stands_for_one_subject():
    with pytest.raises(LayoutTextError, match=r"line 2: the colour 255,0,0 is already 'dog' on line 1"):
        parse_color_mapping("255,0,0: dog\n#ff0000: cat")


@pytest.mark.parametrize("text,fragment", [
    ('{"255,0,0": ["dog", 2.5]', "not valid JSON"),
    ('["dog"]', "must be an object"),
    ('{"255,0,0": ["dog", "2.5"]}', "the value must be [phrase, gamma]"),
    ('{"255,0,0": [1]}', "the value must be [phrase, gamma]"),
    ('{"red": ["dog"]}', "'red' is not a colour"),
])
def test_malformed_json(text, fragment):
    with pytest.raises(LayoutTextError) as err:
        parse_color_mapping(text)
    assert fragment in str(err.value), str(err.value)


def test_colour_lists():
    assert parse_color("255, 255, 255") == (255, 255, 255) and parse_color("#0a0B0c") == (10, 11, 12)
    assert parse_color_list("255,255,255; #000000\n0 0 1") == [(255, 255, 255), (0, 0, 0), (0, 0, 1)]
    assert parse_color_list("") == [] and parse_color_list(" ; ") == []
    with pytest.raises(LayoutTextError, match="background colour 2: 'white' is not a colour"):
        parse_color_list("0,0,0; white")
