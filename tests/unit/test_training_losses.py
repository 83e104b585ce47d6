"""The losses equal their formulas; the residual equals Eq. 5; photos become latent crops."""

import pytest
import torch
from cones2.training import losses
from cones2.training.prompt_ids import encode_prompts, phrase_token_ids
from cones2.training.residual_extraction import encode_subject_rows, gather_subject_rows, residual_from_rows
from cones2.training.subject_images import (
    ImageInputError,
    LatentBank,
    build_latent_bank,
    check_images,
    resize_for_training,
)
from cones2_test_support import tiny_text as tt
from hypothesis import given, settings
from hypothesis import strategies as st


def test_noisy_latents_and_targets_follow_the_ddpm_formulas():
    g = torch.Generator().manual_seed(0)
    ac = tt.schedule()
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    xt = losses.noisy_latents(x0, eps, t, ac)
    for i in range(3):
        a = ac[t[i]]
        torch.testing.assert_close(xt[i], a.sqrt() * x0[i] + (1 - a).sqrt() * eps[i])
        v = losses.diffusion_target("v", x0, eps, t, ac)[i]
        torch.testing.assert_close(v, a.sqrt() * eps[i] - (1 - a).sqrt() * x0[i])
        # the v identities: x0 = sqrt(a) x_t - sqrt(1-a) v ; eps = sqrt(1-a) x_t + sqrt(a) v
        torch.testing.assert_close(a.sqrt() * xt[i] - (1 - a).sqrt() * v, x0[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((1 - a).sqrt() * xt[i] + a.sqrt() * v, eps[i], atol=1e-5, rtol=1e-5)
    assert torch.equal(losses.diffusion_target("eps", x0, eps, t, ac), eps)
    with pytest.raises(ValueError, match="unknown prediction type"):
        losses.diffusion_target("x0", x0, eps, t, ac)


def test_diffusion_loss_is_the_mean_squared_error():
    a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.isclose(losses.diffusion_loss(a, b), ((a - b) ** 2).sum() / a.numel())


def test_paper_preservation_is_the_sum_over_non_subject_rows_of_squared_norms_averaged_over_sentences():
    g = torch.Generator().manual_seed(1)
    tuned, frozen = torch.randn(3, 77, 16, generator=g), torch.randn(3, 77, 16, generator=g)
    mask = torch.zeros(3, 77, dtype=torch.bool)
    mask[0, 2] = mask[1, 5] = mask[1, 6] = mask[2, 1] = True
    want = 0.0
    for n in range(3):
        want += sum(float(((tuned[n, p] - frozen[n, p]) ** 2).sum()) for p in range(77) if not mask[n, p])
    want /= 3
    assert losses.paper_preservation_loss(tuned, frozen, mask).item() == pytest.approx(want, rel=1e-5)
    # the subject rows are free: changing them changes nothing
    moved = tuned.clone()
    moved[mask] += 100
    assert losses.paper_preservation_loss(moved, frozen, mask).item() == pytest.approx(want, rel=1e-5)


def test_official_preservation_is_the_authors_weighted_plain_norms():
    g = torch.Generator().manual_seed(2)
    tuned, frozen = torch.randn(77, 16, generator=g), torch.randn(77, 16, generator=g)
    d = tuned - frozen
    want = 1e-2 * d[:1].flatten().norm() + 1e-3 * d[3:].flatten().norm()  # bare "robot toy": rows 1-2 are free
    got = losses.official_preservation_loss(tuned[None], frozen[None], subject_end=3)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # at the first step tuned == frozen: finite, zero gradient (no NaN from the norm at 0)
    x = frozen.clone().requires_grad_(True)
    losses.official_preservation_loss(x, frozen, 2).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_residual_extraction_equals_eq5():
    sp = tt.special_tokens()
    pid = phrase_token_ids(tt.tokenize, "robot toy", sp)
    prompts = encode_prompts(tt.tokenize, ["a robot toy", "my robot toy on the grass", "robot toy"], pid, sp)
    base, tuned = tt.tiny_encoder(seed=0), tt.tiny_encoder(seed=5)
    frozen_rows = encode_subject_rows(base, prompts, chunk=2)
    tuned_rows = encode_subject_rows(tuned, prompts, chunk=2)
    got = residual_from_rows(tuned_rows, frozen_rows)
    want = torch.zeros(2, 32)
    with torch.no_grad():
        for i in range(len(prompts)):
            s = int(prompts.subject_start[i])
            ids = prompts.ids[i:i + 1]
            want += (tuned(ids)[0, s:s + 2] - base(ids)[0, s:s + 2]) / len(prompts)
    torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(gather_subject_rows(base(prompts.ids), prompts), frozen_rows)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (40, 600)])
def test_tiny_photos_are_refused_with_their_size(size):
    imgs = [torch.rand(128, 128, 3), torch.rand(size[0], size[1], 3)]
    with pytest.raises(ImageInputError, match=rf"image 2 is {size[1]}x{size[0]} px; subject photos must be at least 64"):
        check_images(imgs)


def test_no_photos_is_refused_with_a_hint():
    with pytest.raises(ImageInputError, match="no subject images. Connect 3-5 photos"):
        check_images([])


@settings(max_examples=30, deadline=None)
@given(st.integers(64, 400), st.integers(64, 400), st.sampled_from([64, 128, 192]))
def test_resized_photos_have_the_resolution_as_short_side_and_sides_on_the_latent_grid(h, w, res):
    out = resize_for_training(torch.rand(h, w, 3), res)
    oh, ow = out.shape[:2]
    assert min(oh, ow) == res and oh % 8 == 0 and ow % 8 == 0
    assert max(oh, ow) <= 2 * res + 8  # very long photos are center-cropped to 2:1 first
    if h == w:
        assert oh == ow == res


def test_latent_bank_crops_are_deterministic_and_cover_the_long_side():
    imgs = [torch.rand(64, 128, 3), torch.rand(96, 64, 3)]
    bank = build_latent_bank(imgs, tt.encode_image_stub, 64, flip=True)
    assert [tuple(lat.shape) for lat in bank.latents] == [(4, 8, 16), (4, 12, 8)]
    a = bank.sample([0, 1, 0], torch.Generator().manual_seed(3))
    b = bank.sample([0, 1, 0], torch.Generator().manual_seed(3))
    assert a.shape == (3, 4, 8, 8) and torch.equal(a, b)
    lefts = set()
    for seed in range(40):
        crop = bank.sample([0], torch.Generator().manual_seed(seed))[0]
        for src in (bank.latents[0], bank.flipped[0]):
            for left in range(9):
                if torch.equal(src[:, :, left:left + 8], crop):
                    lefts.add(left)
    assert len(lefts) > 4  # random crops move along the long side
    center = LatentBank(bank.latents, None, 8, random_crop=False).sample([0], torch.Generator())[0]
    assert torch.equal(center, bank.latents[0][:, :, 4:12])


def test_a_bad_resolution_is_refused():
    with pytest.raises(ImageInputError, match="multiple of 8"):
        build_latent_bank([torch.rand(64, 64, 3)], tt.encode_image_stub, 100)
