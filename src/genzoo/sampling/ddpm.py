"""Ancestral DDPM (Ho et al. 2020) and DDIM (Song et al. 2021) sampling over a DDPM schedule.

The loops are written over a *denoiser* `denoise(x, t) -> (x0_hat, log_variance)` that the
diffusion family builds from a predictor (it knows whether the network predicts eps, v or x0 and
how its variance is parameterised). The schedule tables are indexed by t in the (respaced) process.
The arithmetic follows ADM/DiT step by step so that a fixed seed gives their samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from genzoo.families.diffusion_schedule import extract
from genzoo.sampling.progress import steps

if TYPE_CHECKING:
    from genzoo.families.diffusion_schedule import DiffusionSchedule

Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
NoiseFn = Callable[[Tensor], Tensor]


def posterior_mean(schedule: DiffusionSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """Mean of q(x_{t-1} | x_t, x_0)."""
    return (
        extract(schedule.posterior_mean_coef1, t, x_t.ndim) * x0
        + extract(schedule.posterior_mean_coef2, t, x_t.ndim) * x_t
    )


def eps_from_x0(schedule: DiffusionSchedule, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0) / extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim
    )


def _not_last(t: Tensor, ndim: int) -> Tensor:
    """1 where t > 0, 0 at the last step (which adds no noise)."""
    return (t != 0).float().view(-1, *([1] * (ndim - 1)))


def ddpm_sample(
    denoise: Denoiser,
    schedule: DiffusionSchedule,
    x: Tensor,
    *,
    noise: NoiseFn,
    clip_denoised: bool = False,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling: x_{t-1} = mean_θ(x_t) + σ_θ(x_t) · z, for t = T-1 … 0.

    `noise(x)` is called once per step, the last one included (its draw is multiplied by 0 there),
    as the official loop does, so the random stream stays aligned with it.
    """
    for i in steps(list(range(schedule.num_timesteps))[::-1], progress, "ddpm"):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x0, log_variance = denoise(x, t)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean = posterior_mean(schedule, x0, x, t)
        z = noise(x)
        x = mean + _not_last(t, x.ndim) * torch.exp(0.5 * log_variance) * z
    return x


def ddim_sample(
    denoise: Denoiser,
    schedule: DiffusionSchedule,
    x: Tensor,
    *,
    noise: NoiseFn,
    eta: float = 0.0,
    clip_denoised: bool = False,
    progress: bool = False,
) -> Tensor:
    """DDIM (eq. 12): eta = 0 is the deterministic sampler, eta = 1 matches DDPM's variance.

    eps is re-derived from x0_hat (also for eps-predicting networks), and noise is drawn on every
    step even when eta = 0, both as in the official loop.
    """
    for i in steps(list(range(schedule.num_timesteps))[::-1], progress, "ddim"):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x0, _ = denoise(x, t)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        eps = eps_from_x0(schedule, x, t, x0)
        alpha_bar = extract(schedule.alphas_cumprod, t, x.ndim)
        alpha_bar_prev = extract(schedule.alphas_cumprod_prev, t, x.ndim)
        sigma = (
            eta
            * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
            * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        )
        z = noise(x)
        mean = x0 * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        x = mean + _not_last(t, x.ndim) * sigma * z
    return x
