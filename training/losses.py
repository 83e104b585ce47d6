"""The training losses of Cones 2: the diffusion loss (Eq. 2) and both preservation regularizers.

Noise follows the discrete DDPM schedule the UNet was trained with:
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` (``a_t`` = alphas_cumprod[t]); the target
follows what the model predicts: ``eps``, or ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0``.
"""

from __future__ import annotations

import torch

PREDICTIONS = ("eps", "v")
OFFICIAL_BOS_WEIGHT = 1e-2  # train_cones2.py, README command: --loss_rate_first=1e-2
OFFICIAL_AFTER_WEIGHT = 1e-3  # --loss_rate_second=1e-3


def _per_sample(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return coef.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``sqrt(a_t) x0 + sqrt(1 - a_t) noise`` per sample."""
    a = alphas_cumprod.to(x0.device)[t]
    return _per_sample(a.sqrt(), x0) * x0 + _per_sample((1 - a).sqrt(), x0) * noise


def diffusion_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                     alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """What the model should output: the noise (``eps``) or the velocity (``v``)."""
    if prediction == "eps":
        return noise
    if prediction == "v":
        a = alphas_cumprod.to(x0.device)[t]
        return _per_sample(a.sqrt(), x0) * noise - _per_sample((1 - a).sqrt(), x0) * x0
    raise ValueError(f"unknown prediction type {prediction!r}; expected one of {PREDICTIONS}")


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: the mean squared error over every latent element (as the authors' F.mse_loss)."""
    return torch.mean((prediction.float() - target.float()) ** 2)


def paper_preservation_loss(tuned: torch.Tensor, frozen: torch.Tensor, subject_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3: mean over sentences of ``sum over non-subject rows of ||E_custom(c)_p - E(c)_p||_2^2``.

    ``tuned``/``frozen``: ``[N, T, D]`` encodings of N sentences; ``subject_mask``: ``[N, T]``
    True at the subject's rows. Every other row counts, the start, end and padding rows
    included: the UNet attends to all of them.
    """
    keep = (~subject_mask).to(tuned.dtype).unsqueeze(-1)
    return (((tuned - frozen) ** 2) * keep).sum(dim=(1, 2)).mean()


def official_preservation_loss(tuned: torch.Tensor, frozen: torch.Tensor, subject_end: int,
                               bos_weight: float = OFFICIAL_BOS_WEIGHT,
                               after_weight: float = OFFICIAL_AFTER_WEIGHT) -> torch.Tensor:
    """The authors' regularizer on the training prompt (train_cones2.py).

    ``bos_weight * ||Δ row 0||_2 + after_weight * ||Δ rows subject_end..||_2``: plain (not
    squared) Frobenius norms of the change of the start row and of every row after the
    subject (end token and padding included). ``tuned``/``frozen``: ``[T, D]`` or
    ``[1, T, D]``; ``subject_end`` = first row after the subject.
    """
    delta = (tuned - frozen).reshape(-1, tuned.shape[-1])
    # vector_norm's gradient at 0 is 0, not NaN (the first step, where tuned == frozen)
    norm = torch.linalg.vector_norm
    return bos_weight * norm(delta[:1]) + after_weight * norm(delta[subject_end:])
