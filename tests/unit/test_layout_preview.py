"""The layout preview picture: sizes, colours inside and outside regions, outlines, labels."""

import torch
from cones2.guidance.layout import Box, Layout, LayoutSubject
from cones2.guidance.layout_preview import (
    BLANK,
    PALETTE,
    render_layout_preview,
    subject_caption,
    subject_color,
)
from cones2.guidance.layout_text import layout_from_box_lines, parse_box_lines


def two_dogs(width=512, height=512):
    return layout_from_box_lines(parse_box_lines("dog: 32 64 224 320\ndog #2: 288 64 192 320 2.0"), width, height)


def tint(base, color, opacity):
    return base * (1 - opacity) + torch.tensor(color, dtype=torch.float32) / 255 * opacity


def test_without_an_image_it_is_a_grey_canvas_of_the_layout_size():
    out = render_layout_preview(two_dogs(640, 384))
    assert out.shape == (1, 384, 640, 3) and out.dtype == torch.float32
    assert torch.equal(out[0, 380, 600], torch.full((3,), BLANK))  # background untouched


def test_box_centres_carry_each_subjects_colour():
    out = render_layout_preview(two_dogs(), opacity=0.4)[0]
    for index, (cx, cy) in enumerate([(32 + 112, 64 + 160), (288 + 96, 64 + 160)]):
        expected = tint(torch.full((3,), BLANK), PALETTE[index], 0.4)
        assert torch.allclose(out[cy, cx], expected, atol=1e-6), index
    assert subject_color(0) != subject_color(1)


def test_over_an_image_batch_outside_is_unchanged_and_inside_is_tinted():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 256, 256, 3, generator=g)
    original = image.clone()
    layout = Layout(512, 512, (LayoutSubject("dog", box=Box(256, 256, 256, 256)),))
    out = render_layout_preview(layout, image, opacity=0.5)
    assert torch.equal(image, original)  # inputs are shared between nodes: never modified
    assert out.shape == (2, 256, 256, 3)
    assert torch.equal(out[:, :120, :120], image[:, :120, :120])
    assert torch.allclose(out[:, 200:250, 200:250], tint(image[:, 200:250, 200:250], PALETTE[0], 0.5), atol=1e-6)


def test_regions_are_outlined_in_solid_colour_also_at_the_image_edge():
    layout = Layout(512, 512, (LayoutSubject("dog", box=Box(256, 100, 256, 200)),))
    out = render_layout_preview(layout)[0]
    solid = torch.tensor(PALETTE[0], dtype=torch.float32) / 255
    for y, x in [(299, 400), (200, 256), (200, 511)]:  # bottom edge, left edge, right edge = image edge
        assert torch.allclose(out[y, x], solid, atol=1e-6), (y, x)
    assert torch.equal(out[301, 400], torch.full((3,), BLANK))  # just outside


def test_each_region_gets_a_label_tag_at_its_top_left_corner():
    layout = two_dogs()
    out = render_layout_preview(layout, opacity=0.0)[0]
    for index, (x, y) in enumerate([(32, 64), (288, 64)]):
        tag = out[y + 3:y + 14, x + 3:x + 60]
        solid = torch.tensor(PALETTE[index], dtype=torch.float32) / 255
        is_tag = (tag - solid).abs().amax(-1) < 1e-6
        assert is_tag.float().mean() > 0.5, index  # mostly the tag colour ...
        assert (~is_tag).any(), index  # ... with text on it
    assert subject_caption(layout.subjects[1]) == "dog #2  gamma 2"
    assert subject_caption(layout.subjects[0]) == "dog  gamma 2.5"


def test_later_subjects_are_drawn_over_earlier_ones():
    layout = Layout(64, 64, (LayoutSubject("a", box=Box(0, 0, 48, 48)), LayoutSubject("b", box=Box(16, 16, 48, 48))))
    out = render_layout_preview(layout, opacity=0.5)[0]
    expected = tint(tint(torch.full((3,), BLANK), PALETTE[0], 0.5), PALETTE[1], 0.5)
    assert torch.allclose(out[40, 40], expected, atol=1e-6)


def test_mask_regions():
    mask = torch.zeros(100, 100)
    yy, xx = torch.meshgrid(torch.arange(100), torch.arange(100), indexing="ij")
    mask[(yy - 50) ** 2 + (xx - 50) ** 2 < 30 ** 2] = 1
    out = render_layout_preview(Layout(100, 100, (LayoutSubject("ball", mask=mask),)), opacity=0.5)[0]
    assert torch.allclose(out[60, 60], tint(torch.full((3,), BLANK), PALETTE[0], 0.5), atol=1e-6)
    assert torch.equal(out[95, 95], torch.full((3,), BLANK))  # outside the disc, inside its bounding box corner


def test_an_empty_layout_says_so():
    image = torch.zeros(1, 128, 128, 3)
    out = render_layout_preview(Layout(128, 128), image)
    assert out.shape == (1, 128, 128, 3)
    assert out[0, :20].abs().sum() > 0  # the note at the top
    assert torch.equal(out[0, 40:], image[0, 40:])


def test_a_stretched_canvas_is_flagged():
    image = torch.zeros(1, 120, 320, 3)
    out = render_layout_preview(two_dogs(), image, opacity=0.0)
    assert (out[0, 100:, :40] != 0).any()  # the warning tag at the bottom left
    same_aspect = render_layout_preview(two_dogs(), torch.zeros(1, 256, 256, 3), opacity=0.0)
    assert torch.equal(same_aspect[0, 236:], torch.zeros(20, 256, 3))


def test_single_channel_and_unbatched_images():
    out = render_layout_preview(two_dogs(), torch.full((64, 64, 1), 0.25))
    assert out.shape == (1, 64, 64, 3)
    assert torch.equal(out[0, 63, 0], torch.full((3,), 0.25))


def test_many_subjects_cycle_the_palette():
    lines = "\n".join(f"s{i}: {i * 100} 0 100 100" for i in range(12))
    layout = layout_from_box_lines(parse_box_lines(lines), 1200, 100)
    out = render_layout_preview(layout, opacity=1.0)[0]
    for i in range(12):
        assert torch.allclose(out[90, i * 100 + 50], torch.tensor(PALETTE[i % 10], dtype=torch.float32) / 255,
                              atol=1e-6), i
