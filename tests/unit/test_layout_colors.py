"""Colour-coded layouts: the authors' example PNG, anti-aliased edges, unknown and missing colours."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cones2.guidance.layout import Layout, LayoutError
from cones2.guidance.layout_colors import (
    BACKGROUND,
    UNKNOWN,
    layout_from_color_map,
    match_colors,
    to_rgb8,
)
from cones2.guidance.layout_text import ColorEntry, parse_color_mapping

# The authors' example is never copied into the repository: read it where the project keeps it.
_CANDIDATES = [os.environ.get("CONES2_OFFICIAL_EXAMPLE", ""), Path(__file__).resolve().parents[3] / "shared" /
               "official-example", "/work/shared/official-example"]
OFFICIAL = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), Path("official-example-not-found"))

MUG, DOG, WHITE = (255, 192, 0), (255, 0, 0), (255, 255, 255)


def image01(rgb8: np.ndarray) -> torch.Tensor:
    """An 8-bit RGB array as ComfyUI's IMAGE values ([H, W, 3] float in 0..1, as LoadImage makes them)."""
    return torch.from_numpy(rgb8.astype(np.float32) / 255.0)


def canvas(h, w, color=WHITE):
    return np.tile(np.array(color, dtype=np.uint8), (h, w, 1))


@pytest.fixture(scope="module")
def official():
    png, config = OFFICIAL / "layout_example.png", OFFICIAL / "guidance_config_example.json"
    if not png.is_file() or not config.is_file():
        pytest.skip(f"the authors' example is not at {OFFICIAL} (it is not shipped in the repository)")
    from PIL import Image

    return np.array(Image.open(png).convert("RGB")), config.read_text()


def test_official_example_nearest_mode_recovers_whole_rectangles(official):
    rgb, config = official
    entries = parse_color_mapping(config)  # the authors' whole inference config, pasted as is
    assert [(e.color, e.phrase, e.gamma) for e in entries] == [(MUG, "mug", 2.5), (DOG, "dog", 2.5)]
    layout = layout_from_color_map(image01(rgb), entries)
    assert (layout.width, layout.height) == (768, 768)
    for subject, color in zip(layout.subjects, (MUG, DOG), strict=True):
        inside = subject.mask > 0.5
        exact = torch.from_numpy((rgb == color).all(axis=-1))
        ys, xs = torch.nonzero(inside, as_tuple=True)
        bbox = torch.zeros_like(inside)
        bbox[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        assert torch.equal(inside, bbox), f"{subject.phrase}: the region is not a solid rectangle"
        assert bool(inside[exact].all()), "every exactly coloured pixel is inside"
        gained = int(inside.sum() - exact.sum())
        assert 300 < gained < 3000, f"{subject.phrase}: {gained} anti-aliased edge pixels recovered"
    assert not bool((layout.subjects[0].mask.bool() & layout.subjects[1].mask.bool()).any())


def test_official_example_exact_mode_is_the_authors_match(official):
    rgb, config = official
    layout = layout_from_color_map(image01(rgb), parse_color_mapping(config), tolerance=0)
    for subject, color in zip(layout.subjects, (MUG, DOG), strict=True):
        assert torch.equal(subject.mask > 0.5, torch.from_numpy((rgb == color).all(axis=-1)))


def test_official_example_every_pixel_is_explained(official):
    rgb, _ = official
    for tolerance in (0, 24):
        match = match_colors(to_rgb8(image01(rgb)), [MUG, DOG], [WHITE], tolerance)
        assert match.unknown_colors == ()
        assert not bool((match.labels == UNKNOWN).any())


def test_blends_go_to_the_nearer_colour():
    rgb = canvas(4, 8)
    rgb[:, 4:] = DOG
    for col, share in ((2, 0.3), (3, 0.6), (4, 0.45), (5, 0.8)):  # share of red mixed into white
        rgb[:, col] = np.round(np.array(WHITE) * (1 - share) + np.array(DOG) * share)
    labels = match_colors(to_rgb8(image01(rgb)), [DOG], [WHITE], 24).labels
    assert labels[0].tolist() == [BACKGROUND, BACKGROUND, BACKGROUND, 0, BACKGROUND, 0, 0, 0]


def test_a_blend_between_two_subject_colours_splits_at_the_middle():
    rgb = canvas(1, 5)
    rgb[0, 0], rgb[0, 4] = MUG, DOG
    rgb[0, 1] = (255, 150, 0)  # 22% of the way from mug to dog
    rgb[0, 2] = (255, 100, 0)  # 48%
    rgb[0, 3] = (255, 90, 0)  # 53%
    labels = match_colors(to_rgb8(image01(rgb)), [MUG, DOG], [WHITE], 24).labels
    assert labels[0].tolist() == [0, 0, 0, 1, 1]


def test_noise_within_tolerance_is_matched():
    g = torch.Generator().manual_seed(0)
    rgb = canvas(32, 32)
    rgb[8:24, 8:24] = MUG
    noisy = np.clip(rgb.astype(np.int64) + torch.randint(-8, 9, rgb.shape, generator=g).numpy(), 0, 255)
    layout = layout_from_color_map(image01(noisy.astype(np.uint8)), [ColorEntry(MUG, "mug")])
    expected = torch.zeros(32, 32)
    expected[8:24, 8:24] = 1
    assert torch.equal(layout.subjects[0].mask, expected)


def test_exact_mode_drops_shades():
    rgb = canvas(40, 40)
    rgb[2:6, 2:6] = MUG
    rgb[2, 2] = (255, 190, 0)  # a shade (a stray pixel: background, as in the authors' code)
    layout = layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")], tolerance=0)
    assert int(layout.subjects[0].mask.sum()) == 15
    layout = layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")], tolerance=24)
    assert int(layout.subjects[0].mask.sum()) == 16


def test_gamma_and_occurrence_come_from_the_entries():
    rgb = canvas(16, 16)
    rgb[:8, :8], rgb[8:, 8:] = MUG, DOG
    layout = layout_from_color_map(image01(rgb), parse_color_mapping("255,192,0: dog #2 1.5\n255,0,0: dog"),
                                   gamma=3.0)
    assert [(s.phrase, s.occurrence, s.gamma) for s in layout.subjects] == [("dog", 2, 1.5), ("dog", 1, 3.0)]


def test_an_unlisted_colour_region_is_an_error():
    rgb = canvas(100, 100)
    rgb[:50, :50] = MUG
    rgb[60:, 60:] = (0, 128, 255)  # 16% of the image, listed nowhere
    with pytest.raises(LayoutError) as err:
        layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")])
    message = str(err.value)
    assert "16.0% of the image is in colours the mapping does not list: 0,128,255 (16.0%)" in message
    assert "'0,128,255: <phrase>'" in message and "background" in message


def test_a_few_stray_pixels_are_background():
    rgb = canvas(100, 100)
    rgb[:50, :50] = MUG
    rgb[90:93, 90:93] = (0, 128, 255)  # 0.09%
    match = match_colors(to_rgb8(image01(rgb)), [MUG], [WHITE])
    assert match.unknown_colors == (((0, 128, 255), 9),)
    layout = layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")])
    assert int(layout.subjects[0].mask.sum()) == 2500


def test_a_listed_colour_missing_from_the_image_is_an_error():
    rgb = canvas(10, 10)
    rgb[:4] = MUG
    with pytest.raises(LayoutError, match=r"the colour 255,0,0 \('dog'\) is not in the image; its main colours are "
                                          r"255,255,255 \(60.0%\), 255,192,0 \(40.0%\)"):
        layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug"), ColorEntry(DOG, "dog")])


def test_other_bad_mappings():
    rgb = canvas(10, 10)
    rgb[:5] = MUG
    with pytest.raises(LayoutError, match="lists no colours"):
        layout_from_color_map(image01(rgb), [])
    with pytest.raises(LayoutError, match="255,255,255 of 'snow' is also a background colour"):
        layout_from_color_map(image01(rgb), [ColorEntry(WHITE, "snow")])
    with pytest.raises(LayoutError, match="'Mug' \\(colour 255,255,255\\) already has a region"):
        layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug"), ColorEntry(WHITE, "Mug")], background=[])


def test_a_black_background_can_be_declared():
    rgb = canvas(10, 10, (0, 0, 0))
    rgb[:5] = MUG
    with pytest.raises(LayoutError, match="0,0,0 \\(50.0%\\)"):
        layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")])
    layout = layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")], background=[(0, 0, 0)])
    assert int(layout.subjects[0].mask.sum()) == 50


def test_chaining_rescales_to_the_base_canvas_or_refuses_another_aspect():
    rgb = canvas(96, 96)
    rgb[48:, 12:60] = MUG
    base = Layout(64, 64)
    layout = layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")], base=base)
    expected = torch.zeros(64, 64)
    expected[32:, 8:40] = 1
    assert (layout.width, layout.height) == (64, 64) and torch.equal(layout.subjects[0].mask, expected)
    with pytest.raises(LayoutError, match="the colour map is 96x96 but the canvas is 64x48"):
        layout_from_color_map(image01(rgb), [ColorEntry(MUG, "mug")], base=Layout(64, 48))


def test_a_photo_like_image_is_handled_in_chunks_and_rejected():
    g = torch.Generator().manual_seed(1)
    photo = torch.rand(256, 256, 3, generator=g)  # ~65k distinct colours
    with pytest.raises(LayoutError, match="of the image is in colours the mapping does not list"):
        layout_from_color_map(photo, [ColorEntry(MUG, "mug"), ColorEntry(DOG, "dog")])


def test_rgba_and_grey_images():
    rgb = canvas(8, 8)
    rgb[:4] = MUG
    rgba = torch.cat([image01(rgb), torch.ones(8, 8, 1)], dim=-1)
    assert int(layout_from_color_map(rgba, [ColorEntry(MUG, "mug")]).subjects[0].mask.sum()) == 32
    grey = torch.zeros(8, 8, 1)
    grey[:, :2] = 1.0
    layout = layout_from_color_map(grey, [ColorEntry((0, 0, 0), "cat")])
    assert int(layout.subjects[0].mask.sum()) == 48
