"""MuDI's initial latent, the pure parts: subject photos, the layout-placed Seg-Mix composition,
the latent mask and the sampler's scale."""

import math

import pytest
import torch
from cones2.guidance.init_latent import (
    InitLatentError,
    SubjectPhoto,
    compose_subjects,
    fit_inside,
    full_denoise_scale,
    latent_mask,
    sampler_latent,
    subject_photo,
)
from cones2.guidance.layout import Box, Layout, LayoutSubject
from hypothesis import given, settings
from hypothesis import strategies as st

RED, GREEN = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)


def photo_of(colour, width, height, subject: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """An IMAGE [1, H, W, 3] that is grey with a ``colour`` rectangle, and the rectangle's MASK [1, H, W]."""
    image = torch.full((1, height, width, 3), 0.5)
    mask = torch.zeros(1, height, width)
    ys, xs = slice(subject.y, subject.y + subject.height), slice(subject.x, subject.x + subject.width)
    image[0, ys, xs] = torch.tensor(colour)
    mask[0, ys, xs] = 1.0
    return image, mask


def where(composite, colour) -> torch.Tensor:
    return (composite.image - torch.tensor(colour)).abs().amax(dim=-1) < 1e-4


def bbox(inside: torch.Tensor) -> Box:
    ys = torch.nonzero(inside.any(dim=1)).flatten()
    xs = torch.nonzero(inside.any(dim=0)).flatten()
    return Box(int(xs[0]), int(ys[0]), int(xs[-1]) - int(xs[0]) + 1, int(ys[-1]) - int(ys[0]) + 1)


def inside_box(inner: Box, outer: Box) -> bool:
    return (outer.x <= inner.x and outer.y <= inner.y and inner.x + inner.width <= outer.x + outer.width
            and inner.y + inner.height <= outer.y + outer.height)


# --- composition -----------------------------------------------------------------------------

boxes = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(4, 60), st.integers(4, 60))


@settings(max_examples=60, deadline=None)
@given(box=boxes, photo=st.tuples(st.integers(8, 90), st.integers(8, 90)), frac=st.tuples(
    st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.floats(0.3, 1.0), st.floats(0.3, 1.0)))
def test_a_cut_out_fills_its_box_keeping_its_aspect_and_stays_inside(box, photo, frac):
    bx, by, bw, bh = box
    layout = Layout(128, 128, (LayoutSubject("dog", box=Box(bx, by, bw, bh)),))
    pw, ph = photo
    sx, sy = int(frac[0] * pw), int(frac[1] * ph)
    sw, sh = max(1, min(pw - sx, int(frac[2] * pw))), max(1, min(ph - sy, int(frac[3] * ph)))
    image, mask = photo_of(RED, pw + 1, ph + 1, Box(sx, sy, sw, sh))  # a background row and column at least
    out = compose_subjects(layout, (subject_photo("dog", 1, image, mask),), 128, 128)
    target = Box(bx, by, bw, bh)  # the canvas is the composite's size: the region is the box itself
    (label, placed), = out.placed
    assert label == "dog" and inside_box(placed, target)
    assert placed.width == bw or placed.height == bh  # as large as fits
    # one side fills the box exactly, the other is rounded to whole pixels (at least 1): off by under one pixel,
    # so the aspect is off by at most 1/h (height exact) or a/h (width exact)
    assert abs(placed.width / placed.height - sw / sh) <= max(1.0, sw / sh) / placed.height + 1e-9
    assert abs((placed.x - bx) - (bx + bw - placed.x - placed.width)) <= 1  # centred
    assert abs((placed.y - by) - (by + bh - placed.y - placed.height)) <= 1
    covered = out.mask > 0
    assert covered.any() and inside_box(bbox(covered), target)  # nothing outside the region
    assert inside_box(bbox(where(out, RED)), target)
    grey = ((out.image - 0.5).abs().amax(dim=-1) < 1e-3) & (out.mask > 0.99)
    assert not grey.any()  # the photo's background was cut away


def test_two_subjects_land_in_their_own_boxes_at_another_canvas_size():
    layout = Layout(512, 256, (LayoutSubject("dog", box=Box(0, 0, 256, 256)),
                               LayoutSubject("flower", box=Box(320, 64, 128, 192))))
    dog = subject_photo("dog", 1, *photo_of(RED, 300, 200, Box(50, 20, 200, 160)))
    flower = subject_photo("flower", 1, *photo_of(GREEN, 64, 200, Box(10, 10, 40, 180)))
    out = compose_subjects(layout, (dog, flower), 256, 128)  # half the canvas size
    assert out.image.shape == (128, 256, 3) and out.mask.shape == (128, 256)
    red, green = bbox(where(out, RED)), bbox(where(out, GREEN))
    assert inside_box(red, Box(0, 0, 128, 128)) and red.width == 128  # 200x160 -> 128x102, centred
    assert (red.height, red.y) == (102, 13)
    assert inside_box(green, Box(160, 32, 64, 96)) and green.height == 96 and green.width == 21
    assert float(out.mask[where(out, RED)].min()) == pytest.approx(1.0)
    assert float(out.mask.sum()) == pytest.approx(128 * 102 + 21 * 96, rel=1e-5)
    assert float(out.image[~(out.mask > 0)].abs().max()) == 0.0  # an empty (black) canvas around them


def test_a_mask_region_gets_the_cut_out_fitted_into_its_bounding_box():
    region = torch.zeros(64, 64)
    region[10:30, 20:60] = 1.0  # an L shape: its bounding box is 40x40 at (20, 10)
    region[30:50, 20:35] = 1.0
    layout = Layout(64, 64, (LayoutSubject("dog", mask=region),))
    out = compose_subjects(layout, (subject_photo("dog", 1, *photo_of(RED, 30, 30, Box(5, 5, 20, 10))),), 64, 64)
    (_, placed), = out.placed
    assert placed == Box(20, 20, 40, 20)


def test_subjects_without_a_photo_get_nothing_and_later_subjects_go_on_top():
    layout = Layout(64, 64, (LayoutSubject("dog", box=Box(0, 0, 40, 40)), LayoutSubject("cat", box=Box(0, 0, 64, 64)),
                             LayoutSubject("barn", box=Box(20, 20, 44, 44))))
    out = compose_subjects(layout, (subject_photo("barn", 1, *photo_of(GREEN, 10, 10, Box(1, 1, 8, 8))),
                                    subject_photo("dog", 1, *photo_of(RED, 10, 10, Box(1, 1, 8, 8)))), 64, 64)
    assert [label for label, _ in out.placed] == ["dog", "barn"]  # layout order, cat has no photo
    assert bool(where(out, GREEN)[20:40, 20:40].all())  # barn pasted after dog, over their overlap
    assert bool(where(out, RED)[:20, :40].all()) and float(out.mask.sum()) == 40 * 40 + 44 * 44 - 20 * 20


def test_a_soft_mask_blends_over_the_black_canvas():
    image = torch.ones(1, 8, 8, 3)
    mask = torch.ones(1, 8, 8)
    mask[0, 7] = 0.0  # the bottom row is background
    mask[0, 3, 3] = 0.25  # an edge pixel of a segmentation
    out = compose_subjects(Layout(8, 8, (LayoutSubject("dog", box=Box(0, 0, 8, 8)),)),
                           (subject_photo("dog", 1, image, mask),), 8, 8)
    assert float(out.image[0, 0, 0]) == 1.0 and float(out.image[3, 3, 0]) == 0.25 and float(out.mask[3, 3]) == 0.25


def test_photos_must_name_layout_subjects_once():
    layout = Layout(64, 64, (LayoutSubject("dog", box=Box(0, 0, 32, 32)), LayoutSubject("dog", 2, box=Box(32, 0, 32, 32))))
    photo = photo_of(RED, 16, 16, Box(0, 0, 8, 8))
    with pytest.raises(InitLatentError, match=r"a photo for 'cat' but the layout has no such subject \(its "
                                              r"subjects: 'dog', 'dog #2'\); fix the phrase or occurrence"):
        compose_subjects(layout, (subject_photo("cat", 1, *photo),), 64, 64)
    with pytest.raises(InitLatentError, match="'dog #3' but the layout has no such subject"):
        compose_subjects(layout, (subject_photo("dog", 3, *photo),), 64, 64)
    with pytest.raises(InitLatentError, match="subject 'dog #2' has two photos"):
        compose_subjects(layout, (subject_photo("dog", 2, *photo), subject_photo(" Dog ", 2, *photo)), 64, 64)


# --- subject photos --------------------------------------------------------------------------

def test_a_photo_of_a_batch_and_its_mask():
    images = torch.rand(3, 20, 30, 3)
    masks = (torch.rand(3, 20, 30) > 0.5).float()
    p = subject_photo("robot  toy", 2, images, masks, index=2)
    assert isinstance(p, SubjectPhoto) and (p.phrase, p.occurrence, p.label) == ("robot toy", 2, "robot toy #2")
    assert torch.equal(p.image, images[2]) and torch.equal(p.mask, masks[2])
    one = subject_photo("dog", 1, images, masks[:1], index=1)  # one mask for every photo
    assert torch.equal(one.mask, masks[0]) and torch.equal(one.image, images[1])


def test_alpha_and_the_mask_conventions():
    rgba = torch.rand(1, 10, 12, 4)
    rgba[..., 3] = 0.0
    rgba[0, 2:5, 3:9, 3] = 1.0
    p = subject_photo("dog", 1, rgba)  # no mask: alpha is the subject
    assert p.image.shape == (10, 12, 3) and torch.equal(p.mask, rgba[0, ..., 3])
    load_image_mask = 1.0 - rgba[..., 3]  # what core LoadImage gives for that PNG: 1 on the background
    q = subject_photo("dog", 1, rgba[..., :3], load_image_mask, mask_is="background")
    assert torch.equal(q.mask, rgba[0, ..., 3])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mask": torch.zeros(1, 64, 64)}, r"subject 'dog': the mask is 64x64 but the photo is 30x20; give the mask of "
                                        r"this photo, at its size \(Load Image gives an empty 64x64 mask"),
    ({"mask": torch.ones(1, 20, 31)}, r"subject 'dog': the mask is 31x20 but the photo is 30x20; give the mask"),
    ({"mask": torch.zeros(1, 20, 30)}, r"subject 'dog': the mask is empty \(no value above 0.5\); mark the "
                                        r"subject \(if it marks the background, set mask_is to 'background'\)"),
    ({"mask": torch.ones(1, 20, 30), "mask_is": "background"}, r"the mask is empty .* set mask_is to 'subject'"),
    ({"mask": torch.ones(1, 20, 30)}, r"subject 'dog': the mask covers the photo's whole border, as Load Image's "
                                       r"MASK of a cut-out PNG .* set mask_is to 'background'"),
    ({}, r"subject 'dog': no mask and the photo has no alpha channel; connect a MASK of the subject"),
    ({"mask": torch.ones(2, 20, 30)}, r"the mask batch holds 2 masks for 1 photos"),
    ({"mask": torch.ones(1, 20, 30), "index": 1}, r"index 1 is outside the batch of 1 photo\(s\); give 0 to 0"),
])
def test_bad_photos_name_the_subject_and_the_fix(kwargs, message):
    with pytest.raises(InitLatentError, match=message):
        subject_photo("dog", 1, torch.rand(1, 20, 30, 3), **kwargs)


def test_an_empty_phrase_is_refused():
    with pytest.raises(InitLatentError, match="the phrase is empty; name the layout subject"):
        subject_photo("  ", 1, torch.rand(1, 8, 8, 3), torch.ones(1, 8, 8))


def test_a_photo_keeps_no_reference_to_its_inputs():
    image, mask = torch.rand(1, 8, 8, 3), torch.ones(1, 8, 8)
    mask[0, 0] = 0.0
    p = subject_photo("dog", 1, image, mask)
    image.zero_()
    mask.zero_()
    assert float(p.image.sum()) > 0 and float(p.mask.sum()) == 56


# --- the latent mask and the sampler's scale -------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(lh=st.integers(1, 17), lw=st.integers(1, 17), data=st.data())
def test_the_latent_mask_is_more_than_half_covered_cells_at_any_size(lh, lw, data):
    h, w = 8 * lh, 8 * lw
    y0 = data.draw(st.integers(0, h - 1))
    x0 = data.draw(st.integers(0, w - 1))
    y1 = data.draw(st.integers(y0 + 1, h))
    x1 = data.draw(st.integers(x0 + 1, w))
    mask = torch.zeros(h, w)
    mask[y0:y1, x0:x1] = 1.0
    got = latent_mask(mask, lh, lw)
    assert got.shape == (lh, lw)
    cells = mask.view(lh, 8, lw, 8).sum(dim=(1, 3))
    want = cells > 32
    if not want.any():  # a subject smaller than half a cell keeps its best-covered cells
        want = cells == cells.max()
    assert torch.equal(got > 0.5, want)


def test_the_latent_mask_of_an_odd_aspect_composite():
    mask = torch.zeros(56, 104)  # a 13x7 latent
    mask[:, :52] = 1.0  # the left half: 6.5 latent columns
    got = latent_mask(mask, 7, 13)
    assert torch.equal(got[0], torch.tensor([1.0] * 6 + [0.0] * 7))  # the half-covered column is outside
    assert torch.equal(got, got[:1].expand(7, 13))


def test_the_sampler_latent_undoes_comfyuis_full_denoise_noise_scaling():
    sigma = 14.614641
    assert full_denoise_scale(sigma) == pytest.approx(math.sqrt(1 + sigma * sigma))
    shift = torch.randn(1, 4, 5, 7)
    eps = torch.randn(1, 4, 5, 7)
    x = eps * math.sqrt(1 + sigma ** 2) + sampler_latent(shift, sigma)  # ComfyUI: noise_scaling, max_denoise
    unet_input = x / (sigma ** 2 + 1) ** 0.5  # EPS.calculate_input (v-prediction inherits it)
    assert torch.allclose(unet_input, shift + eps, atol=1e-5)


def test_fit_inside_centres_and_keeps_the_aspect():
    assert fit_inside(100, 50, Box(10, 10, 40, 40)) == Box(10, 20, 40, 20)
    assert fit_inside(10, 40, Box(0, 0, 64, 32)) == Box(28, 0, 8, 32)
    assert fit_inside(3, 3, Box(5, 6, 1, 1)) == Box(5, 6, 1, 1)
