"""Gaussian diffusion (DDPM / IDDPM as used by ADM and DiT).

Forward process q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) over T discrete steps; t = 0 is the
least noisy step and the network sees the integer index t (the original index, also when sampling
with fewer steps). The network predicts eps (default), v or x_0, and optionally the variance as
IDDPM's "learned range", trained with the hybrid loss MSE + VLB (Nichol & Dhariwal 2021).

Randomness in `loss`: t ~ U{0, …, T-1} is drawn first, then the noise, like DiT's training loop
(t from `randint` on x's device, noise from `randn_like(x)` when no generator is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.base import NoiseFamily
from genzoo.families.common import eval_mode, mean_flat, normal_like
from genzoo.families.diffusion_likelihood import discretized_gaussian_log_likelihood, normal_kl
from genzoo.families.diffusion_schedule import DiffusionSchedule, extract, space_timesteps
from genzoo.sampling import ClassifierFreeGuidance, check_options, check_sampler
from genzoo.sampling.ddpm import ddim_sample, ddpm_sample, posterior_mean
from genzoo.sampling.noise import Generators, step_noise

PREDICTIONS = ("eps", "v", "x0")
SAMPLER_OPTIONS = {"ddpm": ("clip_denoised",), "ddim": ("eta", "clip_denoised")}


@dataclass
class DiffusionConfig:
    kind: ClassVar[str] = "diffusion"
    noise_schedule: str = "linear"  # "linear" | "cosine" (squaredcos_cap_v2)
    diffusion_steps: int = 1000
    predict: str = "eps"  # "eps" | "v" | "x0"
    learn_sigma: bool = True  # learned-range variance, hybrid MSE + VLB loss
    sigma_small: bool = False  # fixed variance (learn_sigma off): posterior β̃_t, else β_t
    rescale_learned_sigmas: bool = False  # scale the VLB term by T/1000 (IDDPM "rescaled MSE")


class GaussianDiffusion(NoiseFamily):
    """A DDPM process with a `loss` for training and `sample` (ddpm / ddim) for generation."""

    family = kind = "diffusion"
    Config = DiffusionConfig
    sample_options = {
        "sampler": "ddpm",
        "steps": "250",  # a count, "ddimN" or "N1,N2,…" (the respacing)
        **NoiseFamily.common_options,
        "eta": 0.0,  # ddim
        "clip_denoised": False,
    }

    def __init__(self, cfg: DiffusionConfig) -> None:
        if cfg.predict not in PREDICTIONS:
            raise GenzooError(
                f"diffusion.predict={cfg.predict!r}: choose one of {', '.join(PREDICTIONS)}"
            )
        self.cfg = cfg
        self.learns_sigma = cfg.learn_sigma  # the backbone returns 2C channels
        self.time_scale = 1.0 / cfg.diffusion_steps  # the network sees integer step indices
        self.base_schedule = DiffusionSchedule.named(cfg.noise_schedule, cfg.diffusion_steps)
        self.num_timesteps = self.base_schedule.num_timesteps
        # DiT wraps even the full process in its respacing (betas recomputed from ᾱ), for
        # training too; doing the same keeps every coefficient bit-identical to it.
        self.schedule = self.base_schedule.respaced(range(self.num_timesteps))
        self._spaced: dict[str, DiffusionSchedule] = {"": self.schedule}

    # -- schedule ---------------------------------------------------------------------------
    def spaced(self, steps: int | str | None) -> DiffusionSchedule:
        """The respaced process for `steps` ("250", "ddim25", "10,20"; None or "" = all)."""
        key = "" if steps is None else str(steps).strip()
        if key not in self._spaced:
            kept = space_timesteps(self.num_timesteps, key)
            self._spaced[key] = self.base_schedule.respaced(kept)
        return self._spaced[key]

    def noise_level(self, t: Tensor) -> Tensor:
        """Original step index -> [0, 1), 1 = pure noise (for guidance intervals)."""
        return t.float() / self.num_timesteps

    # -- parameterisation -------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) eps."""
        s = self.schedule
        return (
            extract(s.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
        )

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output for x_t = q_sample(x0, t, noise)."""
        if self.cfg.predict == "eps":
            return noise
        if self.cfg.predict == "x0":
            return x0
        s = self.schedule  # v = sqrt(ᾱ) eps - sqrt(1 - ᾱ) x0 (Salimans & Ho 2022)
        return (
            extract(s.sqrt_alphas_cumprod, t, x0.ndim) * noise
            - extract(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0
        )

    def x0_from_prediction(
        self, schedule: DiffusionSchedule, x_t: Tensor, t: Tensor, prediction: Tensor
    ) -> Tensor:
        """The network's estimate of x_0 at step t of `schedule`."""
        if self.cfg.predict == "x0":
            return prediction
        if self.cfg.predict == "eps":
            return (
                extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * prediction
            )
        return (
            extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * prediction
        )

    def log_variance(
        self, schedule: DiffusionSchedule, t: Tensor, var_values: Tensor | None, ndim: int
    ) -> Tensor:
        """log σ²_t of p(x_{t-1} | x_t): learned range frac·log β + (1 - frac)·log β̃, or fixed."""
        if var_values is None:
            table = (
                schedule.posterior_log_variance_clipped
                if self.cfg.sigma_small
                else np.log(schedule.fixed_large_variance)
            )
            return extract(table, t, ndim)
        min_log = extract(schedule.posterior_log_variance_clipped, t, ndim)
        max_log = extract(schedule.log_betas, t, ndim)
        frac = (var_values + 1) / 2  # the network's [-1, 1] output spans [β̃_t, β_t]
        return frac * max_log + (1 - frac) * min_log

    def split_output(self, out: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mean prediction, variance values or None) from a network output for input x."""
        c = x.shape[1]
        want = 2 * c if self.cfg.learn_sigma else c
        if out.shape[1] != want or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
            raise GenzooError(
                f"the network returned shape {tuple(out.shape)} for input {tuple(x.shape)}; with "
                f"diffusion.learn_sigma={self.cfg.learn_sigma} it must return {want} channels. "
                "Set model.learn_sigma and diffusion.learn_sigma to the same value."
            )
        if not self.cfg.learn_sigma:
            return out, None
        return out[:, :c], out[:, c:]

    # -- training ---------------------------------------------------------------------------
    def vb_bits(
        self, x0: Tensor, x_t: Tensor, t: Tensor, prediction: Tensor, var_values: Tensor | None
    ) -> Tensor:
        """Per-sample VLB term L_t in bits per dimension.

        KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0, the discretized decoder NLL
        -log p(x_0|x_1) at t = 0.
        """
        s = self.schedule
        true_mean = posterior_mean(s, x0, x_t, t)
        true_log_var = extract(s.posterior_log_variance_clipped, t, x_t.ndim)
        model_mean = posterior_mean(s, self.x0_from_prediction(s, x_t, t, prediction), x_t, t)
        model_log_var = self.log_variance(s, t, var_values, x_t.ndim)
        kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / np.log(2.0)
        nll = -discretized_gaussian_log_likelihood(
            x0, means=model_mean, log_scales=0.5 * model_log_var
        )
        nll = mean_flat(nll) / np.log(2.0)
        return torch.where(t == 0, nll, kl)

    def loss(
        self, net: Any, x: Tensor, y: Tensor, generator: torch.Generator | None = None, **_: Any
    ) -> dict[str, Tensor]:
        """Mean over the batch of MSE(target, prediction) [+ VLB term with a frozen mean]."""
        n = x.shape[0]
        if generator is None:
            t = torch.randint(0, self.num_timesteps, (n,), device=x.device)
        else:
            t = torch.randint(
                0, self.num_timesteps, (n,), generator=generator, device=generator.device
            ).to(x.device)
        noise = normal_like(x, generator)
        x_t = self.q_sample(x, t, noise)
        prediction, var_values = self.split_output(net(x_t, t, y), x)
        mse = mean_flat((self.target(x, noise, t) - prediction) ** 2)
        terms = {"mse": mse.mean().detach()}
        per_sample = mse
        if var_values is not None:
            # The VLB trains only the variance: the mean prediction is detached (IDDPM).
            vb = self.vb_bits(x, x_t, t, prediction.detach(), var_values)
            if self.cfg.rescale_learned_sigmas:
                vb = vb * (self.num_timesteps / 1000.0)
            per_sample = mse + vb
            terms["vb"] = vb.mean().detach()
        return {"loss": per_sample.mean(), **terms}

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        net: Any,
        y: Tensor,
        *,
        noise: Tensor,
        sampler: str,
        steps: int | str,
        cfg: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        cfg_channels: int | None = None,
        null_label: int | None,
        generator: Generators = None,
        progress: bool = False,
        **options: Any,
    ) -> Tensor:
        """Generate x_0 from `noise` (N, C, H, W) for labels y (N,).

        sampler: "ddpm" (option clip_denoised=False) or "ddim" (options eta=0.0, clip_denoised).
        steps: respacing of the T-step process: an int, "N1,N2,…" or "ddimN".
        generator: one generator, one per sample, or None for the global RNG drawn exactly as
            DiT's loop draws it (see `genzoo.sampling.noise`).
        """
        check_sampler(self.family, sampler)
        check_options(sampler, options, SAMPLER_OPTIONS[sampler])
        schedule = self.spaced(steps)
        guidance = ClassifierFreeGuidance(cfg, cfg_interval, cfg_channels)
        guided = guidance.wrap(net, null_label, noise_level=self.noise_level)
        original_index = torch.from_numpy(schedule.timestep_map).to(noise.device)

        def denoise(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            prediction, var_values = self.split_output(guided(x, original_index[t], y), x)
            x0 = self.x0_from_prediction(schedule, x, t, prediction)
            return x0, self.log_variance(schedule, t, var_values, x.ndim)

        batch_factor = 2 if guidance.doubles_batch else 1

        def draw(x: Tensor) -> Tensor:
            return step_noise(x, generator, batch_factor=batch_factor)

        clip = bool(options.get("clip_denoised", False))
        with eval_mode(net):
            if sampler == "ddpm":
                return ddpm_sample(
                    denoise, schedule, noise, noise=draw, clip_denoised=clip, progress=progress
                )
            return ddim_sample(
                denoise,
                schedule,
                noise,
                noise=draw,
                eta=float(options.get("eta", 0.0)),
                clip_denoised=clip,
                progress=progress,
            )
