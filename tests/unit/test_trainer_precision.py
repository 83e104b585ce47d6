"""The mixed-precision paths of the training loop (bf16/fp16 autocast, the fp16 GradScaler, fused AdamW),
run on the CPU where torch allows, and on CUDA in the GPU lane (``python -m pytest -m gpu``)."""

import pytest
import torch
from cones2.training import trainer
from cones2.training.train_checkpoint import load_state
from cones2.training.trainer import TrainSettings, resolve_precision, train_residual
from cones2_test_support import tiny_text as tt

CUDA = torch.cuda.is_available()


def quick(**kw):
    base = dict(steps=4, learning_rate=3e-3, resolution=64, corpus_size=8, sentences_per_step=2,
                gradient_checkpointing=False)
    return TrainSettings(**{**base, **kw})


def run(settings, device="cpu", **kw):
    return train_residual(encoder=tt.tiny_encoder(), tokenize=tt.tokenize, phrase="dog", images=tt.photos(),
                          encode_image=tt.encode_image_stub, denoiser=tt.TinyDenoiser().to(device),
                          alphas_cumprod=tt.schedule(), prediction="eps", settings=settings,
                          special=tt.special_tokens(), device=device, **kw)


@pytest.fixture
def recorded_scalers(monkeypatch):
    made = []

    class Recording(torch.amp.GradScaler):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(torch.amp, "GradScaler", Recording)
    return made


def test_precision_names_map_to_autocast_dtypes_and_auto_is_fp32_off_cuda():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None and resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16 and resolve_precision("fp16", cpu) is torch.float16


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_training_on_the_cpu_learns_like_fp32(precision, recorded_scalers):
    full = run(quick(precision="fp32"))
    mixed = run(quick(precision=precision))
    assert [s.get_scale() > 0 for s in recorded_scalers] == ([True] if precision == "fp16" else [])
    for key in ("loss", "diffusion"):
        assert all(torch.isfinite(torch.tensor(mixed.losses[key])))
    # the UNet runs in half precision, the encoder and the loss in fp32: the same run to a half's precision
    rel = (mixed.residual - full.residual).norm() / full.residual.norm()
    assert full.residual.abs().max() > 0 and rel < 0.1, float(rel)


def test_the_fp16_scaler_state_is_checkpointed_and_restored(tmp_path, recorded_scalers):
    path = tmp_path / "run.cones2-train.safetensors"
    recorded_scalers.clear()
    run(quick(steps=2, precision="fp16", checkpoint_every=1), checkpoint_path=path)
    saved = load_state(path).scaler
    assert saved is not None and saved["scale"] == recorded_scalers[0].get_scale()
    resumed = run(quick(steps=3, precision="fp16", checkpoint_every=1), resume_path=path)
    assert len(resumed.losses["loss"]) == 3
    # the resumed run's scaler starts from the saved state (no overflow in 3 steps, growth only every 2000)
    assert recorded_scalers[-1].get_scale() == saved["scale"] and recorded_scalers[-1] is not recorded_scalers[0]


def test_fused_adamw_gives_the_same_steps_as_the_plain_one(monkeypatch):
    plain = run(quick(steps=3))
    monkeypatch.setattr(trainer, "fused_adamw", lambda device: True)  # fused kernels exist for the CPU too
    fused = run(quick(steps=3))
    torch.testing.assert_close(fused.residual, plain.residual, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="GPU lane: needs CUDA (python -m pytest -m gpu on a GPU machine)")
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16", "fp32"])
def test_training_on_cuda_in_each_precision(precision):
    result = run(quick(precision=precision), device="cuda")
    assert all(torch.isfinite(torch.tensor(result.losses["loss"])))
    assert result.residual.device.type == "cpu" and result.residual.abs().max() > 0
