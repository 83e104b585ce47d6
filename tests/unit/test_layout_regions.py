"""Rasterising layout regions to an attention layer's grid: exact coverage, any size, no bleeding."""

from fractions import Fraction

import pytest
import torch
from cones2.guidance.layout import Box, Layout, LayoutError, LayoutSubject, fit_mask
from hypothesis import assume, given, settings
from hypothesis import strategies as st


def reference_masks(layout: Layout, h: int, w: int) -> torch.Tensor:
    """The rule, written out with exact fractions: inside iff more than half of the cell is covered;
    a region covering no cell that much keeps its best-covered cells."""
    out = torch.zeros(len(layout.subjects), h, w, dtype=torch.bool)
    cell_h, cell_w = Fraction(layout.height, h), Fraction(layout.width, w)

    def overlap(lo, hi, a, b):
        return max(Fraction(0), min(hi, b) - max(lo, a))

    for k, s in enumerate(layout.subjects):
        if s.box is not None:
            b = s.box
            cov = [[overlap(i * cell_h, (i + 1) * cell_h, b.y, b.y + b.height) *
                    overlap(j * cell_w, (j + 1) * cell_w, b.x, b.x + b.width) / (cell_h * cell_w)
                    for j in range(w)] for i in range(h)]
        else:
            inside = (s.mask > 0.5).tolist()
            cov = [[sum(overlap(i * cell_h, (i + 1) * cell_h, y, y + 1) * overlap(j * cell_w, (j + 1) * cell_w, x, x + 1)
                        for y in range(layout.height) for x in range(layout.width) if inside[y][x]) / (cell_h * cell_w)
                    for j in range(w)] for i in range(h)]
        best = max(max(row) for row in cov)
        for i in range(h):
            for j in range(w):
                out[k, i, j] = cov[i][j] > Fraction(1, 2) if best > Fraction(1, 2) else (cov[i][j] == best > 0)
    return out


@st.composite
def canvas_and_box(draw, max_side=160):
    width, height = draw(st.integers(8, max_side)), draw(st.integers(8, max_side))
    x, y = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    return width, height, Box(x, y, draw(st.integers(1, width - x)), draw(st.integers(1, height - y)))


@settings(max_examples=200, deadline=None)
@given(canvas_and_box(), st.integers(1, 23), st.integers(1, 23))
def test_box_regions_match_the_exact_rule_at_any_grid(cb, h, w):
    width, height, box = cb
    layout = Layout(width, height, (LayoutSubject("dog", box=box),))
    assert torch.equal(layout.region_masks(h, w), reference_masks(layout, h, w))


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 16), st.integers(8, 16), st.integers(1, 11), st.integers(1, 11), st.data())
def test_mask_regions_match_the_exact_rule_at_any_grid(width, height, h, w, data):
    bits = data.draw(st.lists(st.booleans(), min_size=width * height, max_size=width * height))
    assume(any(bits))
    mask = torch.tensor(bits, dtype=torch.float32).view(height, width)
    layout = Layout(width, height, (LayoutSubject("dog", mask=mask),))
    assert torch.equal(layout.region_masks(h, w), reference_masks(layout, h, w))


@settings(max_examples=80, deadline=None)
@given(canvas_and_box(max_side=520), st.integers(1, 70), st.integers(1, 70))
def test_a_mask_of_a_box_rasterises_exactly_as_the_box(cb, h, w):
    width, height, b = cb
    mask = torch.zeros(height, width)
    mask[b.y:b.y + b.height, b.x:b.x + b.width] = 1
    as_box = Layout(width, height, (LayoutSubject("dog", box=b),)).region_masks(h, w)
    as_mask = Layout(width, height, (LayoutSubject("dog", mask=mask),)).region_masks(h, w)
    assert torch.equal(as_box, as_mask)


@settings(max_examples=80, deadline=None)
@given(st.integers(16, 520), st.integers(16, 520), st.data(), st.integers(1, 70), st.integers(1, 70))
def test_regions_that_do_not_overlap_never_share_a_cell(width, height, data, h, w):
    """Side-by-side boxes (and a mask beside them) rasterise to disjoint cells at every grid: nothing bleeds."""
    split = data.draw(st.integers(1, width - 1))
    row = data.draw(st.integers(1, height - 1))
    mask = torch.zeros(height, width)
    mask[row:, split:] = 1
    layout = Layout(width, height, (
        LayoutSubject("dog", box=Box(0, 0, split, height)),
        LayoutSubject("cat", box=Box(split, 0, width - split, row)),
        LayoutSubject("mug", mask=mask),
    ))
    masks = layout.region_masks(h, w)
    fallbacks = torch.tensor([not bool((c > 0.5).any()) for c in _coverages(layout, h, w)])
    assert bool((masks.flatten(1).sum(dim=1) > 0).all())  # every region keeps at least one cell
    # regions of majority-covered cells are disjoint; only a tiny region's best cell (fallback) may be shared
    assert int(masks[~fallbacks].sum(dim=0).max()) <= 1


def _coverages(layout, h, w):
    return [layout._coverage(s, h, w) for s in layout.subjects]


def test_an_exactly_half_covered_cell_is_outside():
    # canvas 512 split at 256 into 3 columns: the middle column is half dog, half cat
    layout = Layout(512, 512, (LayoutSubject("dog", box=Box(0, 0, 256, 512)),
                               LayoutSubject("cat", box=Box(256, 0, 256, 512))))
    masks = layout.region_masks(1, 3)
    assert masks[0, 0].tolist() == [True, False, False]
    assert masks[1, 0].tolist() == [False, False, True]


def test_odd_sizes_and_aspect_ratios():
    layout = Layout(517, 389, (LayoutSubject("dog", box=Box(0, 0, 259, 389)),))
    for h, w in [(49, 65), (25, 33), (13, 17), (7, 9), (1, 1)]:
        m = layout.region_masks(h, w)[0]
        assert m.shape == (h, w)
        cols = m.any(dim=0)
        # the box covers 259/517 = 50.1% of the width: the columns it covers more than half of, and no other
        expected = [((min(259, (j + 1) * 517 / w) - j * 517 / w) / (517 / w)) > 0.5 for j in range(w)]
        if not any(expected):
            expected = [j == 0 for j in range(w)]
        assert cols.tolist() == expected, (h, w)
        assert m.all(dim=0).tolist() == cols.tolist()  # full height


def test_a_tiny_region_keeps_its_best_cell():
    layout = Layout(512, 512, (LayoutSubject("ant", box=Box(300, 40, 8, 8)),))
    m = layout.region_masks(4, 4)
    assert m.sum() == 1 and m[0, 0, 2]


# --- fitting a mask to a canvas --------------------------------------------------------------

def test_fit_mask_same_size_is_identity():
    m = torch.rand(40, 60)
    assert fit_mask(m, 60, 40) is m


def test_fit_mask_rescales_a_same_aspect_mask_by_coverage():
    m = torch.zeros(768, 768)
    m[384:, 96:480] = 1
    fitted = fit_mask(m, 512, 512)
    assert fitted.shape == (512, 512)
    expected = torch.zeros(512, 512)
    expected[256:, 64:320] = 1
    assert torch.equal(fitted, expected)


def test_fit_mask_allows_one_pixel_of_rounding():
    m = torch.ones(341, 512)  # 1024x683 scaled to 512 wide
    assert fit_mask(m, 1024, 683).shape == (683, 1024)


def test_fit_mask_rejects_another_aspect_ratio():
    with pytest.raises(LayoutError, match=r"the mask is 640x480 but the canvas is 512x512, a different aspect ratio "
                                          r"\(1.333 vs 1.000\)"):
        fit_mask(torch.ones(480, 640), 512, 512)


def test_a_subject_keeps_its_own_copy_of_the_mask():
    # a MASK view that a later node edits in place must not move the region
    masks = torch.zeros(2, 16, 16)
    masks[0, :8] = 1.0
    layout = Layout(16, 16, (LayoutSubject("dog", mask=masks[0]),))
    before = layout.region_masks(16, 16).clone()
    masks[0].fill_(0.0)
    assert torch.equal(layout.region_masks(16, 16), before) and before[0, :8].all()
    assert layout.subjects[0].mask.dtype == torch.float32
