"""The guided step range and the start/end percents it is made from."""

import math

import pytest
from cones2.guidance.step_range import StepRange, check_percents


def test_step_range_uses_an_inclusive_start_and_exclusive_end():
    r = StepRange(sigma_start=10.0, sigma_end=1.0)
    assert r.guides(10.0) and r.guides(5.0) and r.guides(1.0001)
    assert not r.guides(10.0001) and not r.guides(1.0) and not r.guides(0.5)
    everything = StepRange(sigma_start=999999999.9, sigma_end=0.0)
    assert everything.guides(14.6) and everything.guides(0.0292) and not everything.guides(0.0)
    assert StepRange().guides(math.inf) is True


@pytest.mark.parametrize("start,end", [(0.5, 0.5), (0.6, 0.4), (-0.1, 1.0), (0.0, 1.1)])
def test_bad_percent_ranges_are_refused(start, end):
    with pytest.raises(ValueError, match="start_percent"):
        check_percents(start, end)


@pytest.mark.parametrize("start,end", [(0.0, 1.0), (0.2, 0.6), (0.0, math.ulp(0.0))])
def test_a_range_is_refused_exactly_where_it_leaves_0_to_1_or_empties(start, end):
    assert check_percents(start, end) is None
    for bad in ((start, start), (end, start), (-math.ulp(0.0), end), (start, 1.0 + math.ulp(1.0))):
        with pytest.raises(ValueError, match="start_percent"):
            check_percents(*bad)
