"""Sampling discrete tokens from logits: one set of small functions for every token family.

Autoregressive (LlamaGen, RAR), next-scale (VAR) and masked (MaskGIT) samplers all turn a
network's logits into token ids through the same steps, each a pure function here:

    guide_logits      classifier-free guidance on logits, in either official form
    cfg_scale_at      the guidance scale of a step under a schedule (constant, linear, power-cosine)
    cfg_active        LlamaGen's `cfg_interval`: guidance only for the first steps
    token_probs       temperature, then top-k, then top-p, then softmax
    draw_tokens       one categorical draw per row: from per-sample generators, or from torch's
                      global RNG with one `torch.multinomial` call, as the official loops draw
    gumbel_noise      −log(−log(u)) noise for MaskGIT-style sampling and confidence ranking

Randomness: a sequence of generators gives row i its draws from generators[i] alone, so a sample
does not depend on the batch it is generated in; None draws from the global RNG in the official
pattern, so that `torch.manual_seed(s)` right before sampling reproduces official outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.sampling.noise import Generators

CFG_SCHEDULES = ("constant", "linear", "power-cosine")
GUIDANCE_FORMS = ("uncond", "cond")


# -- validation --------------------------------------------------------------------------------


def check_token_options(temperature: float, top_k: int, top_p: float) -> None:
    """GenzooError naming the first of temperature, top_k, top_p that a sampler cannot use."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise GenzooError(f"temperature={temperature!r}: expected a positive number")
    if not temperature > 0 or not math.isfinite(temperature):
        raise GenzooError(
            f"temperature={temperature!r}: must be a finite number > 0 (1.0 samples the model's "
            "distribution; use top_k=1 for greedy decoding)"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 0:
        raise GenzooError(
            f"top_k={top_k!r}: expected an integer >= 0 (0 keeps every token, 1 is greedy)"
        )
    if isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0 <= top_p <= 1:
        raise GenzooError(
            f"top_p={top_p!r}: expected a number in [0, 1] (0 and 1 both keep every token)"
        )


def check_cfg_options(cfg: float, schedule: str, power: float, interval: int) -> None:
    """GenzooError naming the first guidance option that is not usable."""
    if isinstance(cfg, bool) or not isinstance(cfg, Real) or not math.isfinite(cfg):
        raise GenzooError(f"cfg={cfg!r}: expected a finite number (1.0 = no guidance)")
    if schedule not in CFG_SCHEDULES:
        raise GenzooError(f"cfg_schedule={schedule!r}: choose one of {', '.join(CFG_SCHEDULES)}")
    if isinstance(power, bool) or not isinstance(power, Real) or power < 0:
        raise GenzooError(f"cfg_pow={power!r}: expected a number >= 0")
    if isinstance(interval, bool) or not isinstance(interval, Integral):
        raise GenzooError(
            f"cfg_interval={interval!r}: expected an integer step count (-1 = guide every step)"
        )


# -- classifier-free guidance on logits ------------------------------------------------------


def guide_logits(
    cond: Tensor, uncond: Tensor, scale: float | Tensor, form: str = "uncond"
) -> Tensor:
    """Guided logits. form "uncond": u + (c − u)·s (LlamaGen, RAR, MaskGIT power-cosine);
    form "cond": c + (c − u)·s (MaskGIT's constant and linear schedules, an effective weight
    of 1 + s). Written in the official operation order, so results match bit for bit."""
    if form == "uncond":
        return uncond + (cond - uncond) * scale
    if form == "cond":
        return cond + (cond - uncond) * scale
    raise GenzooError(f"guidance form {form!r}: choose one of {', '.join(GUIDANCE_FORMS)}")


def cfg_scale_at(
    step: int,
    total: int,
    scale: float,
    schedule: str = "constant",
    power: float = 1.0,
    start: float = 1.0,
) -> float:
    """The guidance scale used at `step` of `total` steps (0-based).

    constant:      scale.
    linear:        start + (scale − start)·step/total, from `start` at step 0 towards `scale`
                   (start=1 for the "uncond" form, where 1 is no guidance; MaskGIT's linear
                   decay is start=0 with the "cond" form).
    power-cosine:  1 + (scale − 1)·(1 − cos(π·(step/total)^power))/2, in float32 as RAR and
                   MaskGIT compute it; power 0 gives the constant scale (0^0 = 1).
    """
    if schedule == "constant":
        return float(scale)
    if schedule == "linear":
        return start + (scale - start) * (step / total)
    if schedule == "power-cosine":
        exponent = torch.ones(1) * power
        ramp = (1 - torch.cos(((step / total) ** exponent) * torch.pi)) * 1 / 2
        return float((scale - 1) * ramp + 1)
    raise GenzooError(f"cfg_schedule={schedule!r}: choose one of {', '.join(CFG_SCHEDULES)}")


def cfg_active(step: int, interval: int) -> bool:
    """Whether token step `step` (0 = the prefill step) is guided under LlamaGen's cfg_interval.

    The prefill step is always guided; decode step i = step − 1 stops being guided once
    i > interval. So interval = k >= 0 guides steps 0 … k+1; any negative interval guides all.
    """
    return interval <= -1 or step - 1 <= interval


# -- from logits to probabilities --------------------------------------------------------------


def filter_top_k(logits: Tensor, top_k: int) -> Tensor:
    """Logits below the k-th largest of their row set to −inf (ties at the k-th are kept);
    top_k = 0 keeps everything."""
    if top_k <= 0:
        return logits
    k = min(top_k, logits.shape[-1])
    kth = torch.topk(logits, k)[0][..., -1, None]
    return logits.masked_fill(logits < kth, -float("inf"))


def filter_top_p(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filter: keep the most likely tokens up to cumulative probability top_p, plus the
    first token that crosses it (so the top token is always kept); 0 and 1 keep everything."""
    if top_p <= 0 or top_p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    drop_sorted = cumulative > top_p
    # shift right by one: a token is dropped only if the mass strictly before it exceeds top_p
    drop_sorted[..., 1:] = drop_sorted[..., :-1].clone()
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -float("inf"))


def token_probs(
    logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> Tensor:
    """softmax(filter(logits / temperature)) over the last axis, top-k before top-p, as
    LlamaGen's sampler (whose temperature floor of 1e-5 is kept)."""
    logits = logits / max(temperature, 1e-5)
    logits = filter_top_p(filter_top_k(logits, top_k), top_p)
    return F.softmax(logits, dim=-1)


# -- random draws ------------------------------------------------------------------------------


def _per_row(generators: Sequence[torch.Generator], rows: int) -> Sequence[torch.Generator]:
    if len(generators) != rows:
        raise GenzooError(
            f"got {len(generators)} generators for a batch of {rows} samples; pass one "
            "generator per sample (or None for the global RNG)"
        )
    return generators


def draw_tokens(probs: Tensor, generators: Generators = None) -> Tensor:
    """One token id per row of probs (B, V) -> long (B,).

    None: a single `torch.multinomial(probs, 1)` on the global RNG (the official draw);
    a generator: the same single call on it; a sequence: row i drawn with generators[i].
    """
    if generators is None or isinstance(generators, torch.Generator):
        return torch.multinomial(probs, 1, generator=generators)[:, 0]
    rows = []
    for row, g in zip(probs, _per_row(generators, probs.shape[0])):
        rows.append(torch.multinomial(row[None].to(g.device), 1, generator=g)[0, 0])
    return torch.stack(rows).to(probs.device)


def uniform_like(x: Tensor, generators: Generators = None) -> Tensor:
    """U[0, 1) shaped like x: `zeros_like(x).uniform_()` from the global RNG as MaskGIT draws
    it, from one generator, or row i of x's first axis from generators[i]."""
    if generators is None or isinstance(generators, torch.Generator):
        if generators is None:
            return torch.zeros_like(x).uniform_(0, 1)
        g = generators
        return torch.rand(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
    rows = [
        torch.rand(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device)
        for g in _per_row(generators, x.shape[0])
    ]
    return torch.stack(rows)


def gumbel_from_uniform(u: Tensor, eps: float = 1e-20) -> Tensor:
    """−log(−log(u)) with both logarithms' arguments clamped at eps (MaskGIT's form)."""
    return -torch.log((-torch.log(u.clamp(min=eps))).clamp(min=eps))


def gumbel_noise(x: Tensor, generators: Generators = None) -> Tensor:
    """Standard Gumbel noise shaped like x (see `uniform_like` for the draws)."""
    return gumbel_from_uniform(uniform_like(x, generators))


def add_gumbel_noise(x: Tensor, temperature: float, generators: Generators = None) -> Tensor:
    """x + temperature·Gumbel: perturbed logits (argmax = a categorical sample at
    temperature 1) or perturbed confidences (a random ranking, for choosing what to re-mask)."""
    return x + temperature * gumbel_noise(x, generators)


def gumbel_argmax(
    logits: Tensor, temperature: float, generators: Generators = None
) -> tuple[Tensor, Tensor]:
    """Candidate ids argmax(logits + temperature·Gumbel) over the last axis, and their
    confidence: the unperturbed logit of each chosen id (MaskGIT's step)."""
    ids = add_gumbel_noise(logits, temperature, generators).argmax(dim=-1)
    confidence = torch.gather(logits, -1, ids[..., None])[..., 0]
    return ids, confidence
