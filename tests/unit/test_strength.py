"""η schedules and the logits' std without materialising Q·Kᵀ."""


import pytest
import torch
from cones2.guidance.strength import (
    SigmaSchedule,
    eta,
    logit_std,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

METHODS = ["gram", "direct", "auto"]


def direct_std(q, k, heads):
    """torch.std (unbiased) of S = Q·Kᵀ per head, over heads x queries x keys, per batch element."""
    b, n, c = q.shape
    d = c // heads
    qh = q.double().view(b, n, heads, d).transpose(1, 2)
    kh = k.double().view(b, k.shape[1], heads, d).transpose(1, 2)
    s = qh @ kh.transpose(-1, -2)
    return torch.stack([s[i].std() for i in range(b)])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n,length,heads,d", [(64, 77, 5, 64), (45, 154, 10, 64), (9, 3, 2, 8), (1, 2, 1, 4)])
def test_logit_std_equals_torch_std_of_the_materialised_logits(n, length, heads, d, method):
    g = torch.Generator().manual_seed(n)
    q = torch.randn(2, n, heads * d, generator=g)
    k = torch.randn(2, length, heads * d, generator=g)
    torch.testing.assert_close(logit_std(q, k, heads, method).double(), direct_std(q, k, heads), rtol=2e-5, atol=0)


def test_an_unknown_std_method_is_refused():
    with pytest.raises(ValueError, match="unknown std method"):
        logit_std(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), 1, "fast")


@pytest.mark.parametrize("method", METHODS)
def test_logit_std_keeps_its_precision_when_the_logits_have_a_large_mean(method):
    # E[S²] − E[S]² would cancel catastrophically here; the centred form does not
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 256, 320, generator=g) * 0.01 + 30.0
    k = torch.randn(1, 77, 320, generator=g) * 0.01 + 30.0
    want = direct_std(q, k, 5)
    got = logit_std(q, k, 5, method).double()
    assert want.item() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_logit_std_of_half_inputs_is_computed_in_float32(method):
    g = torch.Generator().manual_seed(1)
    q = (torch.randn(1, 100, 320, generator=g) * 4).half()
    k = (torch.randn(1, 77, 320, generator=g) * 4).half()
    got = logit_std(q, k, 5, method)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), direct_std(q.float(), k.float(), 5), rtol=1e-5, atol=0)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), n=st.integers(1, 40), length=st.integers(1, 20), heads=st.integers(1, 4),
       d=st.sampled_from([1, 4, 16]), shift=st.floats(-5, 5), scale=st.floats(0.1, 10),
       method=st.sampled_from(["gram", "direct"]))
def test_logit_std_for_random_shapes(b, n, length, heads, d, shift, scale, method):
    assume(n * length * heads >= 2)  # a std needs two logits
    g = torch.Generator().manual_seed(n * 31 + length)
    q = torch.randn(b, n, heads * d, generator=g) * scale + shift
    k = torch.randn(b, length, heads * d, generator=g)
    want = direct_std(q, k, heads)
    torch.testing.assert_close(logit_std(q, k, heads, method).double(), want, rtol=1e-4, atol=1e-5)


def test_each_image_gets_its_own_std():
    g = torch.Generator().manual_seed(2)
    q = torch.cat([torch.randn(1, 30, 64, generator=g), 5 * torch.randn(1, 30, 64, generator=g)])
    k = torch.randn(2, 77, 64, generator=g)
    got = logit_std(q, k, 1)
    assert got[1] > 3 * got[0]
    torch.testing.assert_close(got.double(), direct_std(q, k, 1), rtol=1e-5, atol=0)


def test_eta_schedules():
    sigma = torch.tensor([14.6, 1.0, 0.0])
    std = torch.tensor([2.0, 3.0, 4.0])
    official = eta(SigmaSchedule.OFFICIAL, 0.08, sigma, std)
    torch.testing.assert_close(official, 0.08 * torch.log(1 + sigma**2) * std)
    assert official[2] == 0  # σ = 0: no bias at all
    torch.testing.assert_close(eta(SigmaSchedule.LOG_SIGMA, 0.5, sigma, None), 0.5 * torch.log(1 + sigma**2))
    torch.testing.assert_close(eta(SigmaSchedule.CONSTANT, 0.1, sigma, std), 0.1 * std)
    assert not SigmaSchedule.LOG_SIGMA.uses_std and SigmaSchedule.OFFICIAL.uses_std and SigmaSchedule.CONSTANT.uses_std
