"""The training-cost benchmark's counters (benchmarks/cost_counting.py) count exactly on small cases."""

import gc

import pytest
import torch
from cones2.benchmarks.cost_counting import CostMeter, LiveBytes
from hypothesis import given, settings
from hypothesis import strategies as st


def _linear_step(batch: int, d_in: int, d_out: int):
    lin = torch.nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=True)
    return lin, x


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 9), d_in=st.integers(1, 40), d_out=st.integers(1, 40), fake=st.booleans())
def test_a_linear_forward_and_backward_costs_six_flops_per_weight_and_row(batch, d_in, d_out, fake):
    with CostMeter(fake=fake) as meter:
        lin, x = _linear_step(batch, d_in, d_out)
        meter.start()
        lin(x).sum().backward()
        cost = meter.stop()
    # forward 2·B·I·O; backward: grad of the input 2·B·I·O and of the weight 2·B·I·O
    assert cost.flops == 6 * batch * d_in * d_out
    assert cost.flops_by_module["Linear"] == cost.flops


def test_only_the_stretch_between_start_and_stop_is_counted():
    with CostMeter(fake=True) as meter:
        lin, x = _linear_step(4, 8, 16)
        lin(x)  # before start: not counted
        meter.start()
        lin(x)
        cost = meter.stop()
        lin(x)  # after stop: not counted either
    assert cost.flops == 2 * 4 * 8 * 16


def test_live_bytes_follow_a_known_sequence_of_allocations_and_frees():
    with LiveBytes() as live:
        a = torch.empty(1000, dtype=torch.float32)  # 4,000 bytes
        b = torch.empty(500, dtype=torch.float16)  # 1,000
        assert (live.live, live.peak) == (5000, 5000)
        view = a[10:20]  # a view shares a's storage: nothing new
        assert live.live == 5000
        del a
        gc.collect()
        assert live.live == 5000  # the view keeps the storage alive
        del view
        gc.collect()
        assert (live.live, live.peak) == (1000, 5000)
        c = torch.empty(250, dtype=torch.float64)  # 2,000
        assert (live.live, live.peak) == (3000, 5000)
        live.reset_peak()
        assert live.peak == 3000
        del b, c
        gc.collect()
        assert live.live == 0


def test_a_tensor_made_before_the_mode_counts_once_added():
    outside = torch.empty(64, dtype=torch.float32)
    with LiveBytes() as live:
        live.add(outside)
        live.add(outside[:8])  # same storage
        assert live.live == 256


@pytest.mark.parametrize("train_all", [True, False])
def test_fake_counting_equals_the_same_run_on_real_tensors(train_all):
    """A small training step (MLP, AdamW, two steps): FakeTensorMode sees the same FLOPs and live bytes."""

    def run(fake: bool):
        with CostMeter(fake=fake) as meter:
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
            params = list(net.parameters()) if train_all else list(net[2].parameters())
            net.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=1e-3, foreach=False)
            x = torch.randn(16, 32)
            for step in range(2):
                if step == 1:
                    meter.start()
                loss = ((net(x) - 1) ** 2).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            return meter.stop()

    real, fake = run(False), run(True)
    assert (fake.flops, fake.peak_bytes, fake.start_bytes) == (real.flops, real.peak_bytes, real.start_bytes)
    params = (32 * 64 + 64 + 64 * 8 + 8) if train_all else (64 * 8 + 8)
    # weights, input, and AdamW's two moments (+ a step counter each) live before the second step
    assert real.start_bytes >= (32 * 64 + 64 + 64 * 8 + 8) * 4 + 16 * 32 * 4 + 2 * params * 4
    assert real.peak_bytes > real.start_bytes + params * 4  # the gradients at least come on top


def test_fake_tensors_answer_reads_of_their_values_with_a_fixed_number():
    with CostMeter(fake=True):
        loss = torch.randn(3).sum()
        assert float(loss) == 1.0
        assert bool(torch.isfinite(loss).all()) is True
        assert int(torch.randint(0, 5, ())) == 0
        assert torch.stack([loss, loss]).tolist() == [1.0, 1.0]


def test_moving_a_fake_module_to_its_own_device_is_a_no_op():
    with CostMeter(fake=True):
        emb = torch.nn.Embedding(10, 4)
        weight = emb.weight
        assert emb.to("cpu") is emb and emb.weight is weight
        assert emb.to(device=torch.device("cpu")).weight is weight


@pytest.mark.parametrize("fake", [False, True])
def test_fused_attention_on_the_cpu_counts_as_torch_counts_the_gpu_kernels(fake):
    b, h, n, m, d = 2, 3, 16, 24, 8
    with CostMeter(fake=fake) as meter:
        q = torch.randn(b, h, n, d, requires_grad=True)
        k = torch.randn(b, h, m, d, requires_grad=True)
        v = torch.randn(b, h, m, d, requires_grad=True)
        meter.start()
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
        cost = meter.stop()
    # forward: Q·K^T and P·V (2·b·h·n·m·d each); backward: 2.5 times that (torch's sdpa_backward_flop_count)
    forward = 4 * b * h * n * m * d
    assert cost.flops == forward + forward * 5 // 2
