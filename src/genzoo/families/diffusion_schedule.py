"""DDPM noise schedules and timestep respacing (Ho et al. 2020; Nichol & Dhariwal 2021).

Everything here is float64 numpy, as in the ADM/DiT code, so that the coefficients a sampler uses
are the same numbers the official code uses. `extract` is the only place where they become
float32 tensors: a float64 table is indexed first and cast afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from genzoo.errors import GenzooError

SCHEDULES = ("linear", "cosine")


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Betas of a named schedule: "linear" (DDPM, scaled to `num_timesteps`) or "cosine".

    "cosine" is IDDPM's squaredcos_cap_v2: alpha_bar(s) = cos²((s + 0.008)/1.008 · π/2), with each
    beta capped at 0.999 so that the last step stays finite.
    """
    if num_timesteps < 1:
        raise GenzooError(f"diffusion_steps must be >= 1, got {num_timesteps}")
    if name == "linear":
        scale = 1000 / num_timesteps  # keeps the schedule's shape for any number of steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name in ("cosine", "squaredcos_cap_v2"):

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
            for i in range(num_timesteps)
        ]
        return np.array(betas, dtype=np.float64)
    raise GenzooError(
        f"unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)} "
        "(set diffusion.noise_schedule)"
    )


def space_timesteps(num_timesteps: int, section_counts: int | str) -> set[int]:
    """Indices of the original process kept by a respaced sampler (ADM's `space_timesteps`).

    `section_counts` is an int or a string: "N" or "N1,N2,..." splits [0, T) into equal sections
    and takes N_i evenly strided indices from each (the stride is fractional; indices are rounded
    with Python's `round`). "ddimN" uses the single integer stride that gives exactly N steps.
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            desired = _parse_count(spec[len("ddim") :], section_counts)
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise GenzooError(
                f"steps={section_counts!r}: no integer stride gives exactly {desired} of "
                f"{num_timesteps} steps; use a plain count such as steps={desired}"
            )
        counts = [_parse_count(part, section_counts) for part in spec.split(",")]
    else:
        counts = [_parse_count(str(section_counts), section_counts)]

    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise GenzooError(
                f"steps={section_counts!r}: cannot take {count} steps from a section of {size} "
                f"(the process has {num_timesteps} steps)"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


def _parse_count(text: str, spec: int | str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise GenzooError(
            f"steps={spec!r}: expected a step count, comma-separated counts or 'ddimN'"
        ) from None
    if count < 1:
        raise GenzooError(f"steps={spec!r}: step counts must be >= 1")
    return count


class DiffusionSchedule:
    """The coefficient tables of a (possibly respaced) DDPM process, all float64 numpy arrays.

    `timestep_map[i]` is the index in the original process of step i: the network is always
    shown the original index, whatever the respacing.
    """

    def __init__(self, betas: np.ndarray, timestep_map: np.ndarray | None = None) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise GenzooError("diffusion betas must be a 1-D array with values in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = (
            np.arange(self.num_timesteps, dtype=np.int64)
            if timestep_map is None
            else np.asarray(timestep_map, dtype=np.int64)
        )

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.log_betas = np.log(betas)

        # Posterior q(x_{t-1} | x_t, x_0).
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # The posterior variance is 0 at t = 0; its log borrows the value of t = 1 there.
        self.posterior_log_variance_clipped = (
            np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
            if self.num_timesteps > 1
            else np.array([], dtype=np.float64)
        )
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        # "Fixed large" variance: beta_t, except at t = 0 where the posterior variance of t = 1
        # gives a better decoder likelihood.
        if self.num_timesteps > 1:
            self.fixed_large_variance = np.append(self.posterior_variance[1], betas[1:])
        else:
            self.fixed_large_variance = betas.copy()

    @classmethod
    def named(cls, name: str, num_timesteps: int) -> DiffusionSchedule:
        return cls(beta_schedule(name, num_timesteps))

    def respaced(self, use_timesteps: Iterable[int]) -> DiffusionSchedule:
        """The process that visits only `use_timesteps`, with betas 1 - ᾱ(t_i)/ᾱ(t_{i-1})."""
        keep = set(int(t) for t in use_timesteps)
        last_alpha_cumprod = 1.0
        new_betas, new_map = [], []
        for i, alpha_cumprod in enumerate(self.alphas_cumprod):
            if i in keep:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                new_map.append(int(self.timestep_map[i]))
        return DiffusionSchedule(np.array(new_betas, dtype=np.float64), np.array(new_map))


def extract(table: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """table[t] as float32, shaped (N, 1, ..., 1) to broadcast against an `ndim`-D batch.

    Indexes the float64 table, then casts, like ADM's `_extract_into_tensor`.
    """
    values = torch.from_numpy(table)[t.cpu()].float().to(t.device)
    return values.view(-1, *([1] * (ndim - 1)))
