"""Masked token modelling (MaskGIT, Chang et al. 2022): predict masked tokens all at once, and
sample by revealing the most confident ones over a few steps.

`family.tokens` names the kind of token: "discrete" (code ids of a VQ tokenizer, categorical
predictions) is the path here, in `discrete_loss` and `sample_discrete_tokens`.

Training (discrete): each sample gets a mask fraction from `mask_ratio_law` and
`mask_schedule` (genzoo.sampling.mask_schedules; MaskGIT: t ~ U(0, 1), fraction arccos(t)/(π/2)),
round(L·fraction) random positions (at least one) are masked, and the backbone predicts them:
cross-entropy (with `label_smoothing`) where masked positions weigh 1 and the others
`unmasked_weight` (0: masked positions only; the official MaskGIT recipe uses 0.1 and 0.1).

Sampling (the official 1d-tokenizer `generate`, step s = 0..N−1, ratio r = (s+1)/N):
1. noise temperature τ = temperature·(1 − r);
2. guidance scale g_s: "constant" cfg; "linear" cfg·s/N (none at step 0); "power-cosine"
   1 + (cfg − 1)·(1 − cos(π·(s/N)^cfg_pow))/2. With g_s ≠ 0 (and the step inside
   `cfg_interval`) a conditional and a null pass are combined as c + g_s·(c − u) for constant
   and linear (cfg 0 = no guidance) but u + g_s·(c − u) for power-cosine (cfg 1 = none);
3. with `temperature_annealing`, logits / (0.5 + 0.8·(1 − r));
4. candidates argmax(logits + τ·Gumbel), confidence = their logit (fixed tokens: +∞);
5. n = floor(L·γ(r)) clamped to [1, masked count of row 0 − 1]; re-mask every position whose
   confidence + τ·Gumbel is ≤ the n-th smallest; the last step re-masks nothing.
`cfg_interval` = (lo, hi) guides only steps whose time after the step, 1 − r, lies in (lo, hi]
(eMIGM's window); empty: every step.

Randomness: with `generators=None` the draws come from torch's global RNG in the official
order: per forward pass B uniforms (the official forward's label-dropout draw), then a (B, L, V)
uniform tensor for the token noise, then a (B, L) one for the confidence noise; so seeding just
before reproduces the official ids on CPU. One generator per sample gives row i its draws from
generators[i] alone (the re-mask count is row 0's, the same for every row unless confidences
tie).

Backbone contract: forward(tokens (B, L) long, y (B,) long, mask=(B, L) bool) -> (B, L, V),
masked positions replaced by the mask token; y == null_label is the null class; attribute
`block_size` (L), optionally `token_grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.base import Family, sample_generators
from genzoo.families.common import eval_mode
from genzoo.sampling.mask_schedules import (
    MASK_SCHEDULES,
    TRAINING_LAWS,
    masked_after_step,
    num_masked,
    random_mask,
    sample_training_ratios,
)
from genzoo.sampling.noise import Generators
from genzoo.sampling.progress import steps as progress_steps
from genzoo.sampling.tokens import (
    add_gumbel_noise,
    cfg_scale_at,
    check_cfg_options,
    guide_logits,
    gumbel_argmax,
    uniform_like,
)

TOKEN_KINDS = ("discrete",)  # family.tokens


@dataclass
class MaskedConfig:
    """The run config's `family` section when family.kind == "masked"."""

    kind: ClassVar[str] = "masked"

    tokens: str = "discrete"  # what is masked: "discrete" code ids
    mask_schedule: str = "arccos"  # γ, in training (with the law) and sampling
    mask_ratio_law: str = "uniform"  # uniform | truncnorm | batch (see mask_schedules)
    min_mask_ratio: float = 0.7  # the truncnorm law's lower bound
    label_smoothing: float = 0.0
    unmasked_weight: float = 0.0  # loss weight of unmasked positions (masked: 1)


def check_masked_config(cfg: MaskedConfig) -> None:
    choices = (("tokens", TOKEN_KINDS), ("mask_schedule", MASK_SCHEDULES),
               ("mask_ratio_law", TRAINING_LAWS))  # fmt: skip
    for name, allowed in choices:
        if getattr(cfg, name) not in allowed:
            raise GenzooError(
                f"family.{name}={getattr(cfg, name)!r}: choose one of {', '.join(allowed)}"
            )
    for name in ("label_smoothing", "unmasked_weight"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise GenzooError(f"family.{name}={getattr(cfg, name)}: must lie in [0, 1]")


# -- training (discrete) ---------------------------------------------------------------------------


def weighted_token_loss(
    logits: Tensor, targets: Tensor, mask: Tensor, label_smoothing: float, unmasked_weight: float
) -> Tensor:
    """Σ w·CE / (Σ w + 1e-8) with w = 1 on masked positions and `unmasked_weight` elsewhere
    (MaskGIT's MLM loss)."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets,
                         label_smoothing=label_smoothing, reduction="none")  # fmt: skip
    m = mask.to(ce.dtype)
    weights = (1.0 - m) * unmasked_weight + m
    return (ce * weights).sum() / (weights.sum() + 1e-8)


def draw_training_mask(
    cfg: MaskedConfig, n: int, length: int, generator: torch.Generator | None, device=None
) -> Tensor:
    """(n, length) bool, True = masked: fractions from the law and schedule, then round(L·f)
    (at least 1) random positions per row."""
    ratios = sample_training_ratios(
        cfg.mask_ratio_law, n, generator, schedule=cfg.mask_schedule,
        min_ratio=cfg.min_mask_ratio, device=device,
    )  # fmt: skip
    return random_mask(num_masked(ratios, length, "round"), length, generator).to(device)


def discrete_loss(cfg: MaskedConfig, net: Any, z: Tensor, y: Tensor, generator=None) -> dict:
    """The masked cross-entropy of code ids z (N, h, w) (or (N, L)) under labels y (N,)."""
    if z.is_floating_point() or z.ndim < 2:
        raise GenzooError(
            f"family.tokens='discrete' trains on token ids (N, h, w) long; got "
            f"{tuple(z.shape)} {z.dtype} (use a discrete tokenizer such as vq:RUN)"
        )
    tokens = z.reshape(z.shape[0], -1).long()
    mask = draw_training_mask(cfg, *tokens.shape, generator, tokens.device)
    logits = net(tokens, y, mask=mask)
    loss = weighted_token_loss(logits, tokens, mask, cfg.label_smoothing, cfg.unmasked_weight)
    hits = (logits.detach().argmax(dim=-1) == tokens) & mask
    return {"loss": loss, "acc": hits.sum() / mask.sum(), "mask_ratio": mask.float().mean()}


# -- sampling (discrete) ---------------------------------------------------------------------------


def check_masked_options(o: dict[str, Any]) -> None:
    """GenzooError naming the first sampling option that cannot be used."""
    steps = o["steps"]
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
        raise GenzooError(f"steps={steps!r}: expected an integer >= 1")
    check_cfg_options(o["cfg"], o["cfg_schedule"], o["cfg_pow"], -1)
    t = o["temperature"]
    if isinstance(t, bool) or not isinstance(t, Real) or not (math.isfinite(t) and t >= 0):
        raise GenzooError(
            f"temperature={t!r}: expected a finite number >= 0 (the Gumbel-noise scale; 0 is "
            "deterministic)"
        )
    window = tuple(o.get("cfg_interval") or ())
    if len(window) not in (0, 2) or (window and not window[0] < window[1]):
        raise GenzooError(f"cfg_interval={window!r}: expected (lo, hi) with lo < hi, or empty")
    if not isinstance(o["temperature_annealing"], bool):
        raise GenzooError(f"temperature_annealing={o['temperature_annealing']!r}: true or false")


def guidance_at(step: int, total: int, cfg: float, schedule: str, power: float):
    """(scale, form) of step `step` (0-based): the scale as the official sampler computes it,
    and the guidance form ("cond": c + s(c − u); "uncond": u + s(c − u))."""
    if schedule == "power-cosine":
        return cfg_scale_at(step, total, cfg, "power-cosine", power), "uncond"
    if schedule == "linear":  # set to r·cfg after each step: cfg·s/N at step s
        return cfg_scale_at(step, total, cfg, "linear", start=0.0), "cond"
    return float(cfg), "cond"


def _label_draw(y: Tensor, generators: Generators) -> None:
    """The official forward draws B uniforms for label dropout on every call: keep them."""
    uniform_like(y.float(), generators)


@torch.no_grad()
def sample_discrete_tokens(
    net: Any,
    y: Tensor,
    *,
    null_label: int,
    generators: Generators = None,
    steps: int = 8,
    cfg: float = 3.0,
    cfg_schedule: str = "constant",
    cfg_pow: float = 3.0,
    cfg_interval: tuple = (),
    temperature: float = 4.5,
    temperature_annealing: bool = False,
    mask_schedule: str = "arccos",
    progress: bool = False,
) -> Tensor:
    """Token ids (B, L) long for labels y (B,) (see the module doc for the steps and draws)."""
    n, length = y.shape[0], net.block_size
    null = torch.full_like(y, null_label)
    ids = torch.zeros(n, length, dtype=torch.long, device=y.device)
    is_mask = torch.ones(n, length, dtype=torch.bool, device=y.device)
    window = tuple(cfg_interval or ())
    with eval_mode(net):
        for step in progress_steps(range(steps), progress, "steps"):
            ratio = 1.0 * (step + 1) / steps
            noise_temperature = temperature * (1.0 - ratio)
            scale, form = guidance_at(step, steps, cfg, cfg_schedule, cfg_pow)
            if window and not window[0] < 1.0 - ratio <= window[1]:
                scale = 0.0  # outside the time window: the conditional pass alone
            _label_draw(y, generators)
            logits = net(ids, y, mask=is_mask)
            if scale != 0:
                _label_draw(y, generators)
                logits = guide_logits(logits, net(ids, null, mask=is_mask), scale, form)
            if temperature_annealing:
                logits = logits / (0.5 + 0.8 * (1 - ratio))
            sampled, confidence = gumbel_argmax(logits, noise_temperature, generators)
            sampled = torch.where(is_mask, sampled, ids)
            confidence = torch.where(is_mask, confidence, torch.inf).float()
            keep_masked = masked_after_step(
                mask_schedule, step + 1, steps, length, int(is_mask[0].sum())
            )
            noisy = add_gumbel_noise(confidence, noise_temperature, generators)
            cut_off = noisy.sort(dim=-1).values[:, keep_masked - 1 : keep_masked]
            ids = sampled
            is_mask = noisy <= cut_off if step < steps - 1 else torch.zeros_like(is_mask)
    return ids


def token_shape(net: Any) -> tuple[int, ...]:
    """The shape of one sample's ids: `net.token_grid`, a square grid, or (L,)."""
    grid = getattr(net, "token_grid", None)
    if grid is not None:
        return tuple(grid)
    side = math.isqrt(net.block_size)
    return (side, side) if side * side == net.block_size else (net.block_size,)


class Masked(Family):
    """The `masked` family: masked-token cross-entropy, confidence-ordered parallel decoding."""

    kind = "masked"
    Config = MaskedConfig
    # the official `generate` defaults (guidance 3, constant, pow 3, temperature 4.5, 8 steps)
    sample_options: ClassVar[dict[str, Any]] = {
        "steps": 8,
        "cfg": 3.0,
        "cfg_schedule": "constant",
        "cfg_pow": 3.0,
        "cfg_interval": (),
        "temperature": 4.5,
        "temperature_annealing": False,
    }

    def __init__(self, cfg: MaskedConfig) -> None:
        check_masked_config(cfg)
        super().__init__(cfg)

    def loss(self, net, z, y, *, generator=None, step: int = 0, total_steps: int = 1) -> dict:
        return discrete_loss(self.cfg, net, z, y, generator)

    def sample_settings(self, options: dict[str, Any]) -> dict[str, Any]:
        """All options with defaults filled in, typed and checked."""
        merged = {**self.sample_options, **self.check_options(options)}
        merged["cfg"], merged["cfg_pow"] = float(merged["cfg"]), float(merged["cfg_pow"])
        if isinstance(merged["temperature"], Integral) and not isinstance(
            merged["temperature"], bool
        ):
            merged["temperature"] = float(merged["temperature"])
        check_masked_options(merged)
        return merged

    def sample(self, net, y, *, generators, null_label, progress=False, **options) -> Tensor:
        """Token ids (N, *token_shape(net)) for labels y (N,)."""
        ids = sample_discrete_tokens(
            net, y, null_label=null_label, generators=generators, progress=progress,
            mask_schedule=self.cfg.mask_schedule, **self.sample_settings(options),
        )  # fmt: skip
        return ids.reshape(y.shape[0], *token_shape(net))

    def generate(self, net, y, *, seed, indices, latent_shape, device, null_label,
                 progress=False, **options):  # fmt: skip
        """`sample` with sample i's draws from (seed, indices[i]), shaped as the tokenizer's ids."""
        ids = self.sample(
            net, y, generators=sample_generators(seed, indices, device), null_label=null_label,
            progress=progress, **options,
        )  # fmt: skip
        return ids.reshape(y.shape[0], *latent_shape)
