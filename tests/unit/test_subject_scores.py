"""The scores' math: region crops at any aspect, fitting to a square, cosines, MuDI's D&C, ranking."""

import json

import pytest
import torch
from cones2.guidance.layout import Box, Layout, LayoutSubject
from cones2.scoring.references import SubjectPhotos, add_photos, match_layout
from cones2.scoring.score_report import CRITERIA, ScoreReport, heatmap
from cones2.scoring.subject_scores import (
    PAD_VALUE,
    ScoreError,
    clip_t,
    cosine_matrix,
    encoder_scores,
    fit_square,
    mixing_scores,
    mudi_detect_and_compare,
    rank,
    region_pixel_box,
    subject_boxes,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_mudi_figure_10_examples():
    """MuDI Fig. 10: separated [[.72,.28],[.27,.71]] -> .44 + .44; mixed [[.72,.29],[.52,.40]] -> .43 - .12."""
    separated = ((0.72, 0.28), (0.27, 0.71))
    mixed = ((0.72, 0.29), (0.52, 0.40))
    assert mudi_detect_and_compare(separated) == pytest.approx(0.88)
    assert mudi_detect_and_compare(mixed) == pytest.approx(0.31)
    # the layout-aware sum agrees with Algorithm 3 whenever each crop is nearest its own subject or mixes
    assert sum(mixing_scores(separated)) == pytest.approx(0.88)
    assert sum(mixing_scores(mixed)) == pytest.approx(0.31)
    assert mixing_scores(mixed) == pytest.approx((0.43, -0.12))


def test_swapped_subjects_are_negative_with_the_layout_but_not_for_mudi():
    swapped = ((0.3, 0.7), (0.7, 0.3))  # each region shows the other subject
    assert mixing_scores(swapped) == pytest.approx((-0.4, -0.4))
    assert mudi_detect_and_compare(swapped) == pytest.approx(0.8)  # Algorithm 3 ignores whose region it is


def test_one_subject_has_no_mixing_score():
    assert mixing_scores(((0.9,),)) is None


@given(st.lists(st.lists(st.floats(-1, 1), min_size=3, max_size=3), min_size=3, max_size=3))
def test_mixing_is_own_minus_best_other(matrix):
    m = mixing_scores(matrix)
    for i in range(3):
        assert m[i] == matrix[i][i] - max(matrix[i][j] for j in range(3) if j != i)


def test_cosine_matrix_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g)
    expected = [[float(torch.dot(x, y) / (x.norm() * y.norm())) for y in b] for x in a]
    torch.testing.assert_close(cosine_matrix(a, b), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(cosine_matrix(a * 7.0, b), cosine_matrix(a, b))  # scale-free
    with pytest.raises(ScoreError, match="different widths"):
        cosine_matrix(a, torch.randn(2, 6))


def test_encoder_scores_from_constructed_embeddings():
    """Crop A is subject B's photo: it is nearer B, so A's mixing is negative and B's positive."""
    e_a, e_b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    refs = [torch.stack([e_a, e_a]), torch.stack([e_b, e_b * 2])]
    crops = torch.stack([e_b, e_b + 0.1 * e_a])
    s = encoder_scores(crops, refs, whole_embedding=e_a + e_b)
    assert s.similarity[0][1] == pytest.approx(1.0) and s.similarity[0][0] == pytest.approx(0.0)
    assert s.mixing[0] < 0 < s.mixing[1]
    assert s.per_reference[1][1] == pytest.approx((s.similarity[1][1],) * 2)
    assert s.whole_image == pytest.approx((2 ** -0.5, 2 ** -0.5))
    assert s.fidelity == pytest.approx((0.0 + s.similarity[1][1]) / 2)
    assert json.loads(json.dumps(s.as_dict()))["mixing"] == pytest.approx(list(s.mixing))
    assert clip_t(e_a, e_a + e_b) == pytest.approx(2 ** -0.5)


@settings(max_examples=60, deadline=None)
@given(st.integers(16, 300), st.integers(16, 300), st.data())
def test_a_box_crop_covers_its_region_at_any_image_scale(cw, ch, data):
    x = data.draw(st.integers(0, cw - 1))
    y = data.draw(st.integers(0, ch - 1))
    w = data.draw(st.integers(1, cw - x))
    h = data.draw(st.integers(1, ch - y))
    scale = data.draw(st.sampled_from([1, 2, 3]))
    b = region_pixel_box(cw, ch, cw * scale, ch * scale, box=Box(x, y, w, h))
    assert (b.left, b.top, b.right, b.bottom) == (x * scale, y * scale, (x + w) * scale, (y + h) * scale)
    half = region_pixel_box(cw, ch, max(1, cw // 2), max(1, ch // 2), box=Box(x, y, w, h))
    sx, sy = max(1, cw // 2) / cw, max(1, ch // 2) / ch  # rounded outward: the region lies inside the crop
    assert half.left <= x * sx + 1e-6 and half.right >= min(max(1, cw // 2), (x + w) * sx - 1e-6)
    assert half.top <= y * sy + 1e-6 and half.bottom >= min(max(1, ch // 2), (y + h) * sy - 1e-6)


def test_a_mask_region_crops_to_its_bounding_box():
    mask = torch.zeros(60, 100)
    mask[10:20, 30:35] = 1
    mask[40:45, 70:90] = 0.8  # two blobs: one box around both
    assert region_pixel_box(100, 60, 200, 120, mask=mask).__dict__ == {"top": 20, "left": 60, "bottom": 90,
                                                                        "right": 180}
    with pytest.raises(ScoreError, match="empty"):
        region_pixel_box(100, 60, 100, 60, mask=torch.full((60, 100), 0.5))


def test_images_of_another_aspect_than_the_layout_are_refused():
    layout = Layout(512, 256, (LayoutSubject("dog", box=Box(0, 0, 64, 64)),))
    assert subject_boxes(layout, layout.subjects, 256, 128)[0].width == 32
    with pytest.raises(ScoreError, match="another aspect ratio"):
        subject_boxes(layout, layout.subjects, 256, 256)


def test_fit_square_modes_keep_identical_pixels_identical():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(30, 60, 3, generator=g)
    padded = fit_square(img, 60, "pad")
    assert padded.shape == (60, 60, 3)
    assert torch.equal(padded[15:45], img) and bool((padded[:15] == PAD_VALUE).all())
    assert torch.equal(fit_square(img, 30, "center crop"), img[:, 15:45])
    assert fit_square(img, 24, "stretch").shape == (24, 24, 3)
    assert torch.equal(fit_square(img.clone(), 24, "pad"), fit_square(img, 24, "pad"))
    assert fit_square(torch.rand(8, 8, 4), 8).shape == (8, 8, 3)  # alpha dropped
    with pytest.raises(ScoreError, match="unknown fit"):
        fit_square(img, 24, "zoom")


def test_rank_is_best_first_and_stable():
    assert rank([0.1, 0.5, 0.5, -1.0, 0.9], 3) == [4, 1, 2]
    assert rank([0.3], 5) == [0]


def photos(phrase, n, occurrence=1):
    return SubjectPhotos(phrase, occurrence, tuple(torch.rand(8, 8, 3) for _ in range(n)), (None,) * n)


def test_references_merge_and_match_the_layout_in_layout_order():
    layout = Layout(64, 64, (LayoutSubject("cat", box=Box(0, 0, 8, 8)), LayoutSubject("Dog", box=Box(8, 8, 8, 8)),
                             LayoutSubject("dog", 2, box=Box(16, 16, 8, 8))))
    chain = add_photos(add_photos(add_photos((), photos("dog", 2)), photos("cat", 1)), photos(" DOG ", 3))
    assert [len(p.images) for p in chain] == [5, 1]
    subjects, matched = match_layout(layout, chain)
    assert [s.label for s in subjects] == ["cat", "Dog"]  # "dog #2" has no photos: left out
    assert [len(p.images) for p in matched] == [1, 5]
    with pytest.raises(ScoreError, match=r"'bird', which the layout does not have \(its subjects: 'cat', 'Dog', "):
        match_layout(layout, (*chain, photos("bird", 1)))
    with pytest.raises(ScoreError, match="no reference photos"):
        match_layout(layout, ())


def report(encoders=("clip",), n_subjects=2, clip_t_values=None):
    g = torch.Generator().manual_seed(2)
    refs = [torch.randn(2, 4, generator=g) for _ in range(n_subjects)]
    images = tuple({e: encoder_scores(torch.randn(n_subjects, 4, generator=g), refs, torch.randn(4, generator=g))
                    for e in encoders} for _ in range(3))
    return ScoreReport(tuple(f"s{i}" for i in range(n_subjects)), (2,) * n_subjects, encoders, images, clip_t_values,
                       ("CLIP-T not computed: no CLIP connected.",) if clip_t_values is None else ())


def test_report_values_and_their_errors():
    r = report()
    assert r.values("separation (CLIP)") == [img["clip"].separation for img in r.images]
    assert r.values("MuDI D&C (CLIP)") == [img["clip"].mudi_dc for img in r.images]
    with pytest.raises(ScoreError, match="needs the DINOv2; connect it"):
        r.values("fidelity (DINOv2)")
    with pytest.raises(ScoreError, match="CLIP-T was not computed: CLIP-T not computed: no CLIP connected"):
        r.values("CLIP-T")
    with pytest.raises(ScoreError, match="needs two subjects"):
        report(n_subjects=3).values("MuDI D&C (CLIP)")
    assert report(n_subjects=3).values("separation (CLIP)")
    with pytest.raises(ScoreError, match="at least two subjects"):
        report(n_subjects=1).values("separation (CLIP)")
    assert set(CRITERIA) >= {"CLIP-T", "separation (DINOv2)"}


def test_json_table_and_heatmap_of_a_report():
    r = report(encoders=("clip", "dinov2"), clip_t_values=(0.1, 0.2, 0.3))
    data = json.loads(r.to_json())
    assert [img["clip_t"] for img in data["images"]] == [0.1, 0.2, 0.3]
    assert data["images"][1]["dinov2"]["similarity"] == [list(row) for row in r.images[1]["dinov2"].similarity]
    assert "image 2  CLIP-T 0.300" in r.table()
    maps = heatmap(r)
    assert maps.shape[0] == 3 and maps.shape[-1] == 3 and maps.shape[2] == 120 + 56 * 4
    assert maps.min() >= 0 and maps.max() <= 1
