"""Mask schedules: how many tokens stay masked, at sampling time and in training.

Every masked generator (MaskGIT, MAR, eMIGM, MaskBit, …) uses the same two ideas, each a small
pure function here:

* a **schedule** γ(r): the fraction of the tokens still masked at generation progress
  r ∈ [0, 1] (r = 0: all masked, r = 1: none). The same γ turns a training draw into a mask
  fraction, since training imitates one random moment of sampling;

      cosine   cos(π/2 · r)                      (MaskGIT paper; MAR's sampler)
      arccos   arccos(r) / (π/2)                  (MUSE, the TiTok/1d-tokenizer generators)
      linear   1 − r
      exp      1 − exp(−k·(1 − r)),  k = 5        (eMIGM's γ(t) at masking time t = 1 − r;
                                                  not normalised: γ(0) = 1 − e⁻⁵, as eMIGM)

* a **training law**: the mask fractions of a batch,

      uniform    one t ~ U(0, 1) per sample, fraction γ(t) clamped to [1e-6, 1]
                 (MaskGIT / TiTok: γ = arccos)
      truncnorm  one fraction per batch from a normal(mean 1, std 0.25) truncated to
                 [min_ratio, 1] (MAR: min_ratio 0.7)
      batch      one t ~ U(0, 1) per batch, t ≥ t_min, p = (1 − 1e-3)·t + 1e-3, fraction γ(1 − p)
                 (eMIGM: γ = exp, so the fraction is 1 − e^(−5p))

Sampling-side counts follow the official operation order in float64 (`step_mask_ratio`,
`masked_after_step`), because `floor(L·γ)` flips at exact integers. Draws take a
`torch.Generator`, or None for torch's global RNG in the official pattern.

    from genzoo.sampling.mask_schedules import (
        mask_ratio, step_mask_ratio, masked_after_step, sample_training_ratios,
        num_masked, random_mask)
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from torch import Tensor

from genzoo.errors import GenzooError

MASK_SCHEDULES = ("cosine", "arccos", "linear", "exp")
TRAINING_LAWS = ("uniform", "truncnorm", "batch")
ROUNDINGS = ("floor", "round", "ceil")
EXP_RATE = 5.0  # eMIGM's γ(t) = 1 − e^(−5t)
MIN_TRAINING_RATIO = 1e-6  # MaskGIT/TiTok clamp the training fraction to [1e-6, 1]


def check_schedule(schedule: str) -> str:
    if schedule not in MASK_SCHEDULES:
        raise GenzooError(
            f"mask schedule {schedule!r} is not known; choose one of {', '.join(MASK_SCHEDULES)}"
        )
    return schedule


def _check_progress(r) -> None:
    if isinstance(r, Tensor):
        bad = r.numel() and bool(((r < 0) | (r > 1)).any())
    else:
        bad = isinstance(r, bool) or not isinstance(r, Real) or not 0 <= r <= 1
    if bad:
        raise GenzooError(f"mask schedule progress r={r!r}: expected values in [0, 1]")


def mask_ratio(schedule: str, r: float | Tensor) -> float | Tensor:
    """γ(r): the fraction of tokens masked at progress r ∈ [0, 1] (a float → a float64 float,
    a tensor → a tensor of its dtype)."""
    check_schedule(schedule)
    _check_progress(r)
    if isinstance(r, Tensor):
        if schedule == "cosine":
            return torch.cos(math.pi / 2 * r)
        if schedule == "arccos":
            return torch.acos(r) / (math.pi * 0.5)
        if schedule == "linear":
            return 1 - r
        return 1 - torch.exp(-EXP_RATE * (1 - r))
    if schedule == "cosine":
        return float(np.cos(math.pi / 2.0 * r))
    if schedule == "arccos":
        return float(np.arccos(r) / (math.pi * 0.5))
    if schedule == "linear":
        return 1.0 - r
    return float(1.0 - np.exp(-EXP_RATE * (1.0 - r)))


def step_mask_ratio(schedule: str, step: int, total: int) -> float:
    """γ at progress step/total (float64), in the operation order of the official sampler that
    uses the schedule: MaskGIT's arccos(1.·step/total)/(π/2) and MAR's cos(π/2·step/total)."""
    check_schedule(schedule)
    if not 0 <= step <= total or total < 1:
        raise GenzooError(f"step {step} of {total}: need 0 <= step <= total and total >= 1")
    if schedule == "cosine":
        return float(np.cos(math.pi / 2.0 * step / total))
    return mask_ratio(schedule, 1.0 * step / total)


def masked_after_step(schedule: str, step: int, total: int, length: int, masked_now: int) -> int:
    """How many of `length` tokens stay masked after sampling step `step` (1-based: progress
    step/total): floor(length·γ), kept within [1, masked_now − 1] so that every step reveals at
    least one token and one stays for the next (MaskGIT and MAR; their last step reveals all,
    whatever this says)."""
    planned = math.floor(length * step_mask_ratio(schedule, step, total))
    return int(max(1, min(masked_now - 1, planned)))


# -- training -------------------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """U[0, 1) float32: `zeros(shape).uniform_()` on `device` from the global RNG (MaskGIT's
    draw), or from the generator on its device."""
    if generator is None:
        return torch.zeros(shape, device=device).float().uniform_(0, 1.0)
    return torch.rand(shape, generator=generator, device=generator.device)


def truncated_normal_ratio(
    u: Tensor, min_ratio: float, mean: float = 1.0, std: float = 0.25, max_ratio: float = 1.0
) -> Tensor:
    """The inverse CDF of normal(mean, std) truncated to [min_ratio, max_ratio] at uniforms u
    (float64 inside, as the tails need)."""
    a = torch.tensor((min_ratio - mean) / std, dtype=torch.float64)
    b = torch.tensor((max_ratio - mean) / std, dtype=torch.float64)
    lo, hi = torch.special.ndtr(a), torch.special.ndtr(b)
    z = torch.special.ndtri(lo + u.double() * (hi - lo))
    return (mean + std * z).clamp(min_ratio, max_ratio).to(u.dtype)


def sample_training_ratios(
    law: str,
    n: int,
    generator: torch.Generator | None = None,
    *,
    schedule: str | None = None,
    min_ratio: float = 0.7,
    std: float = 0.25,
    t_min: float = 0.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Mask fractions (n,) float32 for a training batch under `law` (see the module doc).

    schedule: γ for "uniform" (default arccos) and "batch" (default exp); "truncnorm" draws the
    fraction itself (min_ratio, std; mean 1). t_min: eMIGM's lower clamp of t ("batch").
    Draws: "uniform" n uniforms; "truncnorm" and "batch" one uniform (shared by the batch).
    """
    if law not in TRAINING_LAWS:
        raise GenzooError(
            f"mask-ratio law {law!r} is not known; choose one of {', '.join(TRAINING_LAWS)}"
        )
    if n < 1:
        raise GenzooError(f"sample_training_ratios: n={n}; need at least one sample")
    if law == "uniform":
        t = _uniform((n,), generator, device)
        ratio = mask_ratio(schedule or "arccos", t)
        return ratio.clamp(min=MIN_TRAINING_RATIO, max=1.0)
    if law == "truncnorm":
        if not 0 <= min_ratio < 1 or not std > 0:
            raise GenzooError(
                f"truncnorm law: min_ratio={min_ratio}, std={std}; need 0 <= min_ratio < 1 and "
                "std > 0"
            )
        u = _uniform((1,), generator, device)
        return truncated_normal_ratio(u, min_ratio, std=std).expand(n)
    if not 0 <= t_min < 1:
        raise GenzooError(f"batch law: t_min={t_min}; need 0 <= t_min < 1")
    t = _uniform((1,), generator, device).clamp(min=t_min)
    p = (1 - 1e-3) * t + 1e-3
    return mask_ratio(schedule or "exp", 1 - p).expand(n)


def num_masked(ratios: Tensor, length: int, rounding: str = "round", minimum: int = 1) -> Tensor:
    """Masked-token counts (n,) long: length·ratio rounded as the model does (MaskGIT "round",
    MAR "ceil"), at least `minimum` and at most `length`."""
    if rounding not in ROUNDINGS:
        raise GenzooError(f"rounding={rounding!r}: choose one of {', '.join(ROUNDINGS)}")
    scaled = length * ratios
    counts = {"floor": torch.floor, "round": torch.round, "ceil": torch.ceil}[rounding](scaled)
    return counts.clamp(min=minimum, max=length).long()


def random_mask(counts: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
    """Bool (n, length), True = masked: counts[i] random positions of row i, those j where
    argsort(uniforms)[i, j] < counts[i] (MaskGIT's `rand(B, L).argsort(-1) < count` draw)."""
    n = counts.shape[0]
    device = counts.device if generator is None else generator.device
    if generator is None:
        order = torch.rand(n, length, device=device).argsort(dim=-1)
    else:
        order = torch.rand(n, length, generator=generator, device=device).argsort(dim=-1)
    return order < counts.to(device)[:, None]
