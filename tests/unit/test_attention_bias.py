"""The layout bias M against a direct per-cell, per-token implementation of method.md §3."""

import pytest
import torch
from cones2.guidance.attention_bias import (
    SuppressionScope,
    bias_matrix,
    finite_floor,
    subject_maps,
)
from cones2.guidance.layout import Box, Layout, LayoutSubject
from cones2_test_support.guidance_oracle import oracle_bias
from hypothesis import given, settings
from hypothesis import strategies as st

OFFICIAL = SuppressionScope.OUTSIDE_OWN_REGION
PAPER = SuppressionScope.OTHER_SUBJECTS


def two_subjects(gamma2=2.5):
    return Layout(96, 64, (
        LayoutSubject("dog", 1, box=Box(0, 0, 48, 64)),
        LayoutSubject("cat", 1, box=Box(40, 16, 56, 32), gamma=gamma2),  # overlaps the dog's box
    ))


def build(layout, rows, h, w, length, suppression, scope, total=None):
    maps = subject_maps(layout.region_masks(h, w), [s.gamma for s in layout.subjects], suppression, scope)
    return bias_matrix(maps, rows, length, total)


@pytest.mark.parametrize("scope", [OFFICIAL, PAPER])
@pytest.mark.parametrize("h,w", [(8, 12), (5, 7), (3, 5), (1, 2)])
def test_bias_matches_the_direct_formula_at_any_grid(scope, h, w):
    layout = two_subjects(gamma2=3.0)
    rows = [(2,), (5, 6)]
    got = build(layout, rows, h, w, 77, -1e8, scope)
    assert torch.equal(got, oracle_bias(layout, rows, h, w, 77, -1e8, scope))


def test_official_scope_suppresses_the_background_and_paper_scope_does_not():
    layout = Layout(64, 64, (LayoutSubject("dog", box=Box(0, 0, 32, 32)), LayoutSubject("cat", box=Box(32, 32, 32, 32))))
    rows = [(2,), (5,)]
    off = build(layout, rows, 2, 2, 77, -7.0, OFFICIAL).view(2, 2, 77)
    pap = build(layout, rows, 2, 2, 77, -7.0, PAPER).view(2, 2, 77)
    # dog at top-left, cat at bottom-right, background top-right and bottom-left
    assert off[:, :, 2].tolist() == [[2.5, -7.0], [-7.0, -7.0]]
    assert pap[:, :, 2].tolist() == [[2.5, 0.0], [0.0, -7.0]]
    assert pap[:, :, 5].tolist() == [[-7.0, 0.0], [0.0, 2.5]]
    # every other token column is 0
    others = [t for t in range(77) if t not in (2, 5)]
    assert not off[:, :, others].any() and not pap[:, :, others].any()


def test_own_region_wins_where_regions_overlap():
    layout = two_subjects()
    regions = layout.region_masks(8, 12)
    both = regions[0] & regions[1]
    assert both.any()
    m = build(layout, [(2,), (5,)], 8, 12, 77, -1e8, PAPER).view(8, 12, 77)
    assert torch.all(m[:, :, 2][both] == 2.5) and torch.all(m[:, :, 5][both] == 2.5)


def test_regions_are_resized_without_bleeding():
    # odd grid, box edges between cells: only the three values ever appear, never a blend
    layout = Layout(100, 60, (LayoutSubject("dog", box=Box(13, 7, 41, 29)), LayoutSubject("cat", box=Box(60, 30, 40, 30))))
    for h, w in [(3, 5), (7, 11), (15, 25)]:
        m = build(layout, [(1,), (3,)], h, w, 77, -1e8, PAPER)
        assert set(m.unique().tolist()) <= {2.5, -1e8, 0.0}
        assert torch.equal((m[:, 1] == 2.5).view(h, w), layout.region_masks(h, w)[0])


def test_tiling_repeats_each_token_bias_at_every_copy():
    layout = two_subjects()
    rows = [(2, 3), (70,)]
    m77 = build(layout, rows, 4, 6, 77, -1e8, OFFICIAL)
    m231 = build(layout, rows, 4, 6, 77, -1e8, OFFICIAL, total=231)
    assert m231.shape == (24, 231)
    for r in range(3):
        assert torch.equal(m231[:, r * 77:(r + 1) * 77], m77)


def test_multi_chunk_prompt_rows_and_bad_tiling_are_checked():
    layout = two_subjects()
    m = build(layout, [(80,), (150,)], 2, 3, 154, -1e8, OFFICIAL)  # a 2-chunk prompt: rows past 77
    assert m[:, 80].abs().sum() > 0 and m[:, 150].abs().sum() > 0
    with pytest.raises(ValueError, match="not a multiple"):
        build(layout, [(1,), (2,)], 2, 3, 77, -1e8, OFFICIAL, total=100)
    with pytest.raises(ValueError, match="outside the prompt"):
        build(layout, [(1,), (77,)], 2, 3, 77, -1e8, OFFICIAL)


def test_a_subject_absent_from_the_prompt_gets_no_column():
    m = build(two_subjects(), [(2,), ()], 4, 6, 77, -1e8, OFFICIAL)
    assert m[:, 2].abs().sum() > 0
    assert not torch.cat([m[:, :2], m[:, 3:]], 1).any()


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), x=st.integers(0, 60), y=st.integers(0, 40),
       bw=st.integers(1, 40), bh=st.integers(1, 24), gamma=st.floats(0.1, 10), neg=st.floats(-1e9, -1e-3),
       paper=st.booleans())
def test_bias_matches_the_direct_formula_for_random_layouts(h, w, x, y, bw, bh, gamma, neg, paper):
    bw, bh = min(bw, 100 - x), min(bh, 64 - y)
    layout = Layout(100, 64, (LayoutSubject("a", box=Box(x, y, bw, bh), gamma=gamma),
                              LayoutSubject("b", box=Box(100 - bw, 64 - bh, bw, bh))))
    scope = PAPER if paper else OFFICIAL
    rows = [(1, 2), (4,)]
    assert torch.equal(build(layout, rows, h, w, 77, neg, scope), oracle_bias(layout, rows, h, w, 77, neg, scope))


def test_the_mask_floor_is_finite_in_every_float_type():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        floor = finite_floor(dtype)
        value = torch.tensor(floor, dtype=dtype)
        assert torch.isfinite(value) and torch.isfinite(value + torch.tensor(-100.0, dtype=dtype))
        assert torch.softmax(torch.tensor([0.0, floor], dtype=torch.float32), 0)[1] == 0
