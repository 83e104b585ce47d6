"""Residuals land on exactly their phrase occurrence's rows (Eq. 6), nothing else changes."""

import pytest
import torch
from cones2.guidance.prompt_tokens import PhraseNotFoundError, PromptTokens
from cones2.guidance.residual_placement import (
    Placement,
    ResidualBinding,
    ResidualPlacementError,
    add_residuals,
    locate_bindings,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def prompt(*words_rows):
    """PromptTokens from (piece, row) pairs."""
    rows = tuple(r for _, r in words_rows)
    pieces = tuple(p for p, _ in words_rows)
    return PromptTokens(length=154, rows=rows, pieces=pieces)


DOGS = prompt(("a</w>", 1), ("dog</w>", 2), ("and</w>", 3), ("a</w>", 4), ("dog</w>", 5),
              ("robot</w>", 80), ("toy</w>", 81))


def test_two_residuals_on_two_occurrences_of_the_same_word():
    d1, d2 = torch.full((1, 1024), 1.0), torch.full((1, 1024), 2.0)
    bindings = [ResidualBinding("dog1", d1, "dog", 1), ResidualBinding("dog2", d2, "dog", 2, strength=0.5)]
    placements = locate_bindings(DOGS, bindings)
    assert [p.rows for p in placements] == [(2,), (5,)]
    cond = torch.randn(1, 154, 1024)
    out = add_residuals(cond, placements, [d1, d2])
    assert torch.equal(out[0, 2], cond[0, 2] + 1.0)
    assert torch.equal(out[0, 5], cond[0, 5] + 1.0)  # 2.0 * strength 0.5
    other = [r for r in range(154) if r not in (2, 5)]
    assert torch.equal(out[0, other], cond[0, other])


def test_row_i_of_a_multi_token_residual_goes_to_token_i():
    delta = torch.stack([torch.full((1024,), 3.0), torch.full((1024,), -7.0)])
    placements = locate_bindings(DOGS, [ResidualBinding("toy", delta, "robot toy")])
    assert placements[0].rows == (80, 81)
    cond = torch.zeros(2, 154, 1024)  # batch of two: both get it
    out = add_residuals(cond, placements, [delta])
    assert (out[:, 80] == 3.0).all() and (out[:, 81] == -7.0).all()
    assert out[:, :80].abs().sum() == 0 and out[:, 82:].abs().sum() == 0


def test_input_is_never_modified_in_place():
    cond = torch.randn(1, 154, 1024)
    before = cond.clone()
    delta = torch.ones(1, 1024)
    add_residuals(cond, locate_bindings(DOGS, [ResidualBinding("d", delta, "dog")]), [delta])
    assert torch.equal(cond, before) and torch.equal(delta, torch.ones(1, 1024))


def test_bindings_on_the_same_rows_add_up():
    delta = torch.ones(1, 1024)
    bindings = [ResidualBinding("a", delta, "dog"), ResidualBinding("b", delta, "dog", strength=2.0)]
    out = add_residuals(torch.zeros(1, 154, 1024), locate_bindings(DOGS, bindings), [delta, delta])
    assert (out[0, 2] == 3.0).all()


def test_token_count_mismatch_names_the_residual_and_the_fix():
    with pytest.raises(ResidualPlacementError, match="'dog.pt' has 1 token row.*'robot toy' is 2 token.*trained on"):
        locate_bindings(DOGS, [ResidualBinding("dog.pt", torch.zeros(1, 1024), "robot toy")])


def test_missing_phrase_propagates_the_lookup_error():
    with pytest.raises(PhraseNotFoundError, match="occurs 2 time"):
        locate_bindings(DOGS, [ResidualBinding("d", torch.zeros(1, 1024), "dog", 3)])


def test_rows_beyond_the_conditioning_are_an_error():
    p = Placement("d", "dog", 1, (200,), 1.0)
    with pytest.raises(ResidualPlacementError, match="row 200, past the conditioning's 154 rows"):
        add_residuals(torch.zeros(1, 154, 1024), [p], [torch.zeros(1, 1024)])


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.integers(0, 153), min_size=1, max_size=4, unique=True),
       strength=st.floats(-10, 10, allow_nan=False), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_only_the_bound_rows_change(rows, strength, dtype):
    cond = torch.randn(1, 154, 1024).to(dtype)
    delta = torch.randn(len(rows), 1024)
    out = add_residuals(cond, [Placement("x", "p", 1, tuple(rows), strength)], [delta])
    assert out.dtype == dtype
    untouched = [r for r in range(154) if r not in rows]
    assert torch.equal(out[0, untouched], cond[0, untouched])
    expected = cond[0, rows] + (delta * strength).to(dtype)
    assert torch.allclose(out[0, rows].float(), expected.float(), atol=1e-2 if dtype == torch.float16 else 1e-5)
