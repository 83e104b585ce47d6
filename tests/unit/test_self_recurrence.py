"""Segments of a self-recurrent run, and the re-noise scale."""

import math

from cones2.guidance.self_recurrence import Segment, plan_segments, renoise_scale
from cones2.guidance.step_range import StepRange
from hypothesis import given
from hypothesis import strategies as st

SIGMAS = [14.6, 8.0, 4.0, 2.0, 1.0, 0.5, 0.0]


def test_every_guided_step_runs_twice_and_the_unguided_tail_once():
    plan = plan_segments(SIGMAS, StepRange(sigma_start=1e9, sigma_end=2.0).guides)
    assert plan == [Segment(0, 1, 2), Segment(1, 2, 2), Segment(2, 3, 2), Segment(3, 6, 1)]


def test_a_range_in_the_middle():
    plan = plan_segments(SIGMAS, StepRange(sigma_start=4.0, sigma_end=1.0).guides)
    assert plan == [Segment(0, 2, 1), Segment(2, 3, 2), Segment(3, 4, 2), Segment(4, 6, 1)]


def test_nothing_guided_is_one_segment():
    assert plan_segments(SIGMAS, lambda s: False) == [Segment(0, 6, 1)]
    assert plan_segments([1.0], lambda s: True) == []


@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_segments_cover_each_step_once_in_order(flags):
    sigmas = [float(len(flags) - i) for i in range(len(flags) + 1)]
    plan = plan_segments(sigmas, lambda s: flags[len(flags) - int(s)])
    steps = [i for seg in plan for i in range(seg.start, seg.end)]
    assert steps == list(range(len(flags)))
    for seg in plan:
        guided = flags[seg.start]
        assert seg.passes == (2 if guided else 1)
        assert (seg.end - seg.start == 1) if guided else not any(flags[seg.start:seg.end])


def test_renoise_scale_brings_the_noise_level_back():
    assert renoise_scale(5.0, 3.0) == 4.0
    assert renoise_scale(2.0, 0.0) == 2.0
    assert renoise_scale(1.0, 1.0) == 0.0
    assert math.isclose(math.hypot(3.0, renoise_scale(5.0, 3.0)), 5.0)
