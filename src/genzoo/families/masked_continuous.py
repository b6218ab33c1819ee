"""Masked generation of continuous tokens with a per-token head: MAR and eMIGM.

Training imitates one random moment of generation: a fraction of each sample's tokens is masked
(one fraction per batch, by a training law of genzoo.sampling.mask_schedules: MAR's truncated
normal on [mask_ratio_min, 1], eMIGM's "batch" law with the exp schedule), the backbone turns
the visible tokens into one condition z per token, and the head's objective is scored on the
masked tokens (weights 1 there, 0 elsewhere), each token drawn `diffusion_batch_mul` times.

Generation starts with every token masked and a random order per sample. Each of `num_iter`
steps runs the backbone, decides how many tokens stay masked, and has the head sample the
tokens leaving the mask — always those at the back of the order still masked:

    reveal="order"       (MAR) m' = floor(L·γ((k+1)/N)) kept in [1, m − 1]; the last step
                         reveals all. γ is the `schedule` (MAR: cosine).
    reveal="stochastic"  (eMIGM) on times 1 → 1e-5 (N + 1 points), going from t to s each masked
                         token is revealed with probability 1 − γ(s)/γ(t) (γ(u) the masked
                         fraction at masking time u: 1 − e^(−5u) for "exp"), at least one per
                         step; the count is shared by the batch, so every row masks as many.

Guidance (cfg != 1) doubles the batch as [y; null] (the null class is `class_num`) for both
the backbone and the head; cfg_schedule "linear" ramps the scale as 1 + (cfg − 1)·(L − m')/L
with the post-step count m' (in float32, as MAR), "constant" keeps cfg; `cfg_interval` (lo, hi]
guides only the steps whose end time s lies inside it (eMIGM), others run unguided.

Randomness, one of: `OfficialDraws` (orders from numpy's global RNG, one shuffle per sample,
head noise from torch's global RNG: MAR's sampler), `TableDraws` (given orders and a per-token
noise table), `GeneratorDraws` (sample i's order and noise from generator i alone; the
stochastic reveal counts from one generator seeded by the run's seed, shared by every batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.base import Family, sample_generators
from genzoo.families.common import eval_mode
from genzoo.sampling.mask_schedules import (
    ROUNDINGS,
    TRAINING_LAWS,
    check_schedule,
    mask_ratio,
    masked_after_step,
    num_masked,
    random_mask,
    sample_training_ratios,
)
from genzoo.sampling.progress import steps as progress_steps
from genzoo.train.loader import seed_for

REVEALS = ("order", "stochastic")
CFG_SCHEDULES = ("linear", "constant")
DEFAULT_NUM_ITER = 64
STOCHASTIC_END_TIME = 1e-5  # eMIGM's time grid ends just above 0


@dataclass
class MaskedContinuousConfig:
    """The run config's `family` section when family.kind == "masked-continuous"."""

    kind: ClassVar[str] = "masked-continuous"
    train_law: str = "truncnorm"  # "truncnorm" (MAR) | "batch" (eMIGM): one fraction per batch
    train_schedule: str = ""  # γ of the "batch" law ("": exp)
    t_min: float = 0.0  # "batch" law: lower clamp of t (eMIGM-H uses 0.2)
    rounding: str = "ceil"  # masked count = rounding(L·fraction) (MAR: ceil)
    min_masked: int = 1
    schedule: str = "cosine"  # sampling γ (MAR: cosine; eMIGM: exp)
    reveal: str = "order"  # "order" (MAR) | "stochastic" (eMIGM)


def check_config(cfg: MaskedContinuousConfig) -> None:
    if cfg.train_law not in TRAINING_LAWS:
        raise GenzooError(
            f"family.train_law={cfg.train_law!r}: choose one of {', '.join(TRAINING_LAWS)}"
        )
    if cfg.train_law == "uniform":
        raise GenzooError(
            "family.train_law='uniform' draws a fraction per sample, but the MAE encoder drops "
            "the masked tokens and needs the same count in every row; use truncnorm or batch"
        )
    if cfg.train_schedule:
        check_schedule(cfg.train_schedule)
    check_schedule(cfg.schedule)
    if cfg.reveal not in REVEALS:
        raise GenzooError(f"family.reveal={cfg.reveal!r}: choose one of {', '.join(REVEALS)}")
    if cfg.rounding not in ROUNDINGS:
        raise GenzooError(f"family.rounding={cfg.rounding!r}: choose one of {', '.join(ROUNDINGS)}")
    if not 0 <= cfg.t_min < 1 or cfg.min_masked < 1:
        raise GenzooError(
            f"family.t_min={cfg.t_min}, family.min_masked={cfg.min_masked}: need 0 <= t_min < 1 "
            "and min_masked >= 1"
        )


# -- randomness -------------------------------------------------------------------------------


class OfficialDraws:
    """MAR's draws: numpy's global RNG for the orders, torch's global RNG for the head noise."""

    def orders(self, b: int, length: int, device) -> Tensor:
        rows = []
        for _ in range(b):
            order = np.arange(length)
            np.random.shuffle(order)
            rows.append(order)
        return torch.from_numpy(np.array(rows).reshape(b, length)).long().to(device)

    def head_noise(self, to_predict: Tensor, columns: int, channels: int) -> Tensor | None:
        return None  # drawn by the head objective from the global RNG

    def reveal_count(self, masked: int, p: float) -> int:
        return int((torch.rand(masked) < p).sum())


class TableDraws(OfficialDraws):
    """Given orders (B, L) and noise (B, L, T + 1, Ct): deterministic."""

    def __init__(self, orders: Tensor, noise: Tensor):
        self.given_orders, self.noise = orders, noise

    def orders(self, b: int, length: int, device) -> Tensor:
        orders = torch.as_tensor(self.given_orders).long()
        ok = orders.shape == (b, length) and all(
            torch.equal(row.sort().values, torch.arange(length)) for row in orders.cpu()
        )
        if not ok:
            raise GenzooError(
                f"orders must be ({b}, {length}), each row a permutation of 0…{length - 1}; got "
                f"{tuple(orders.shape)}"
            )
        return orders.to(device)

    def head_noise(self, to_predict: Tensor, columns: int, channels: int) -> Tensor:
        b, length = to_predict.shape
        if self.noise.shape != (b, length, columns, channels):
            raise GenzooError(
                f"noise has shape {tuple(self.noise.shape)}; expected ({b}, {length}, {columns}, "
                f"{channels}): per token the head's starting noise and one per head step"
            )
        return self.noise.to(to_predict.device)[to_predict]


class GeneratorDraws(OfficialDraws):
    """Sample i's order and head noise from generators[i] alone."""

    def __init__(self, generators: Sequence[torch.Generator], shared: torch.Generator | None):
        self.generators, self.shared = list(generators), shared

    def orders(self, b: int, length: int, device) -> Tensor:
        if len(self.generators) != b:
            raise GenzooError(f"got {len(self.generators)} generators for {b} samples")
        rows = [torch.rand(length, generator=g, device=g.device).argsort() for g in self.generators]
        return torch.stack([r.to(device) for r in rows])

    def head_noise(self, to_predict: Tensor, columns: int, channels: int) -> Tensor:
        parts = [
            torch.randn(int(row.sum()), columns, channels, generator=g, device=g.device)
            for row, g in zip(to_predict, self.generators)
        ]
        return torch.cat(parts).to(to_predict.device)

    def reveal_count(self, masked: int, p: float) -> int:
        if self.shared is None:
            return super().reveal_count(masked, p)
        return int((torch.rand(masked, generator=self.shared) < p).sum())


# -- sampling ---------------------------------------------------------------------------------


def check_sampling(length: int, num_iter: Any, cfg: Any, cfg_schedule: str, temperature: Any,
                   cfg_interval: Sequence[float]) -> None:  # fmt: skip
    """GenzooError naming the first option the sampler cannot use."""
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or not 1 <= num_iter <= length:
        raise GenzooError(
            f"num_iter={num_iter!r}: must be an integer from 1 to the {length} tokens per sample "
            "(each step reveals at least one token)"
        )
    if isinstance(cfg, bool) or not isinstance(cfg, Real) or not math.isfinite(cfg):
        raise GenzooError(f"cfg={cfg!r}: expected a finite number (1.0 = no guidance)")
    if cfg_schedule not in CFG_SCHEDULES:
        raise GenzooError(
            f"cfg_schedule={cfg_schedule!r}: choose one of {', '.join(CFG_SCHEDULES)}"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not temperature > 0:
        raise GenzooError(f"temperature={temperature!r}: expected a number > 0")
    if cfg_interval and (len(cfg_interval) != 2 or not cfg_interval[0] < cfg_interval[1]):
        raise GenzooError(
            f"cfg_interval={tuple(cfg_interval)!r}: expected (lo, hi) with lo < hi, the times "
            "(1 = all masked, 0 = none) where guidance is on; () guides every step"
        )


def guidance_scale(cfg: float, cfg_schedule: str, length: int, masked_next: int) -> float:
    """MAR's scale of a step: cfg, or 1 + (cfg − 1)·(L − m')/L computed in float32."""
    if cfg_schedule == "constant":
        return cfg
    m = torch.tensor([float(masked_next)])
    return float(1 + (cfg - 1) * (length - m) / length)


@torch.no_grad()
def sample_continuous_tokens(
    model: Any,
    y: Tensor,
    draws: OfficialDraws,
    *,
    num_iter: int,
    cfg: float = 1.0,
    cfg_schedule: str = "linear",
    temperature: float = 1.0,
    head_steps: int | str | None = None,
    cfg_interval: Sequence[float] = (),
    schedule: str = "cosine",
    reveal: str = "order",
    progress: bool = False,
) -> Tensor:
    """Tokens (B, L, Ct) for labels y (B,) (class_num = null): see the module docstring."""
    length, k = model.seq_len, model.num_classes
    check_sampling(length, num_iter, cfg, cfg_schedule, temperature, cfg_interval)
    check_schedule(schedule)
    if reveal not in REVEALS:
        raise GenzooError(f"reveal={reveal!r}: choose one of {', '.join(REVEALS)}")
    objective, head = model.objective, model.head_net
    columns = objective.num_steps(head_steps) + 1
    device, b = y.device, y.shape[0]
    tokens = torch.zeros(b, length, model.token_dim, device=device)
    orders = draws.orders(b, length, device)
    masked, ranks = length, torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(length, device=device).expand(b, -1))
    stochastic_times = np.linspace(1.0, STOCHASTIC_END_TIME, num_iter + 1)
    with eval_mode(model):
        for step in progress_steps(range(num_iter), progress, "tokens"):
            last = step == num_iter - 1
            if reveal == "order":
                scale_count = masked_after_step(schedule, step + 1, num_iter, length, masked)
                kept, end_time = (0 if last else scale_count), 1.0 - (step + 1) / num_iter
            else:
                t, end_time = stochastic_times[step], stochastic_times[step + 1]
                p = 1.0 - mask_ratio(schedule, 1.0 - end_time) / mask_ratio(schedule, 1.0 - t)
                count = masked if last else min(masked, max(1, draws.reveal_count(masked, p)))
                kept = scale_count = masked - count
            guided = cfg != 1.0 and (
                not cfg_interval or cfg_interval[0] < end_time <= cfg_interval[1]
            )
            mask = ranks < masked  # the first `masked` positions of each order
            to_predict = mask & (ranks >= kept)
            labels = torch.cat([y, torch.full_like(y, k)]) if guided else y
            doubled = (lambda x: torch.cat([x, x])) if guided else (lambda x: x)
            z = model.condition(doubled(tokens), doubled(mask), labels)
            if bool(to_predict.any()):
                rows = z[:b][to_predict]
                if guided:
                    rows = torch.cat([rows, z[b:][to_predict]])
                scale = guidance_scale(cfg, cfg_schedule, length, scale_count) if guided else None
                tokens[to_predict] = objective.sample(
                    head, rows, temperature=temperature, cfg=scale, steps=head_steps,
                    noise=draws.head_noise(to_predict, columns, model.token_dim),
                )  # fmt: skip
            masked = kept
    return tokens


class MaskedContinuous(Family):
    """The `masked-continuous` family: masked head loss for training, iterative unmasking."""

    kind = "masked-continuous"
    Config = MaskedContinuousConfig
    sample_options: dict[str, Any] = {
        "num_iter": None,  # None: 64, or one step per token when there are fewer
        "cfg": 1.0,
        "cfg_schedule": "linear",
        "temperature": 1.0,
        "head_steps": None,  # None: the model's num_sampling_steps
        "cfg_interval": (),  # (lo, hi]: guide only steps ending at a time inside; (): all
    }
    option_types = {"num_iter": int, "head_steps": str}

    def __init__(self, cfg: MaskedContinuousConfig) -> None:
        check_config(cfg)
        super().__init__(cfg)

    # -- training ---------------------------------------------------------------------------
    def draw_mask(self, model: Any, b: int, generator: torch.Generator | None, device) -> Tensor:
        """Bool (B, L), True = masked, the same count in every row (one fraction per batch)."""
        c = self.cfg
        ratios = sample_training_ratios(
            c.train_law, b, generator, schedule=c.train_schedule or None,
            min_ratio=model.mask_ratio_min, t_min=c.t_min, device=device,
        )  # fmt: skip
        counts = num_masked(ratios, model.seq_len, c.rounding, minimum=c.min_masked)
        return random_mask(counts, model.seq_len, generator).to(device)

    def loss(self, net: Any, z: Tensor, y: Tensor, *, generator: torch.Generator | None = None,
             step: int = 0, total_steps: int = 1) -> dict[str, Tensor]:  # fmt: skip
        """The head loss of the masked tokens of latents z (B, c, H, W) under labels y (B,)."""
        model = getattr(net, "module", net)  # the network under DDP
        if not z.is_floating_point() or z.ndim != 4:
            raise GenzooError(
                f"the masked-continuous family trains on latents (B, c, H, W); got "
                f"{tuple(z.shape)} {z.dtype} (use a continuous tokenizer)"
            )
        tokens = model.patchify(z)
        b, length, _ = tokens.shape
        mask = self.draw_mask(model, b, generator, z.device)
        repeats = model.diffusion_batch_mul
        target = tokens.reshape(b * length, -1).repeat(repeats, 1)
        weights = mask.reshape(b * length).float().repeat(repeats)

        def predict(x_t: Tensor, t: Tensor) -> Tensor:
            return net(tokens, mask.float(), y, head_x=x_t, head_t=t)

        loss, terms = model.objective.loss(predict, target, weights, generator=generator)
        return {"loss": loss, **terms, "mask_ratio": mask.float().mean().detach()}

    # -- sampling ---------------------------------------------------------------------------
    def sampling_options(self, model: Any, options: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.sample_options, **self.check_options(options)}
        if merged["num_iter"] is None:
            merged["num_iter"] = min(DEFAULT_NUM_ITER, model.seq_len)
        merged["cfg_interval"] = tuple(merged["cfg_interval"] or ())
        return merged

    def generate(self, net, y, *, seed, indices, latent_shape, device, null_label,
                 progress=False, **options):  # fmt: skip
        # the stochastic reveal counts are shared by a batch: drawn from the seed alone, they
        # are the same for every batch, so sample i still depends on (seed, i) only
        shared = torch.Generator().manual_seed(seed_for(seed, 0x4E7EA1))
        return self.sample(
            net, y, generators=sample_generators(seed, indices, device), null_label=null_label,
            progress=progress, shared_generator=shared, **options,
        )  # fmt: skip

    def sample(
        self,
        net: Any,
        y: Tensor,
        *,
        generators: Sequence[torch.Generator] | None,
        null_label: int | None,
        progress: bool = False,
        shared_generator: torch.Generator | None = None,
        **options: Any,
    ) -> Tensor:
        """Latents (B, c, H, W) for labels y (B,); generators=None draws as MAR's sampler."""
        merged = self.sampling_options(net, options)
        if generators is None:
            draws = OfficialDraws()
        else:
            draws = GeneratorDraws(generators, shared_generator)
        tokens = sample_continuous_tokens(
            net, y, draws, schedule=self.cfg.schedule, reveal=self.cfg.reveal,
            progress=progress, **merged,
        )  # fmt: skip
        return net.unpatchify(tokens)
