"""Autoregressive next-token generation over discrete image tokens (LlamaGen, RAR).

Training is teacher forcing: the image's token ids, flattened in raster order, go through a
causal backbone and each position is scored by cross-entropy against the token it predicts.
With `order="random"` (RAR) a sample's tokens are instead permuted by a random permutation
with probability r, annealed from 1 to 0 between the training fractions anneal_start and
anneal_end; the backbone gets the permuted tokens and the permutation:

    net(tokens_in_order, y, orders=orders),  tokens_in_order[b, i] = tokens[b, orders[b, i]]

Sampling runs in raster order with the backbone's KV cache, one token per step. Classifier-free
guidance (cfg > 1) doubles the batch as [y; null] (conditional half first, as the official
code) and feeds both halves the same sampled token; guidance acts on the logits, then come
temperature, top-k, top-p and one categorical draw (genzoo.sampling.tokens). With
`generators=None` the draws come from torch's global RNG exactly as LlamaGen's `generate`
makes them; with one generator per sample, sample i depends on generators[i] alone.

Backbone contract: forward(tokens, y, orders=None) -> (B, T, V); setup_cache(batch_size,
max_len=None, device=None, dtype=None), clear_cache(), decode(tokens | None, y | None, start)
-> (B, V); attributes `block_size` (image tokens) and `prefix_len` (positions before image
token 0; 1 if absent), optionally `token_grid` (h, w) when the grid is not square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.base import Family
from genzoo.families.common import eval_mode, uniform_draw
from genzoo.sampling.noise import Generators
from genzoo.sampling.progress import steps
from genzoo.sampling.tokens import (
    cfg_active,
    cfg_scale_at,
    check_cfg_options,
    check_token_options,
    draw_tokens,
    guide_logits,
    token_probs,
)

ORDERS = ("raster", "random")


@dataclass
class ARConfig:
    """The run config's `family` section when family.kind == "ar"."""

    order: str = "raster"  # "raster" | "random" (RAR: random permutation, probability annealed)
    anneal_start: float = 0.0  # training fraction where the random-order probability starts to fall
    anneal_end: float = (
        0.0  # ... and where it reaches 0 (both 0 with order="random": always random)
    )


def check_ar_config(cfg: ARConfig) -> None:
    if cfg.order not in ORDERS:
        raise GenzooError(f"family.order={cfg.order!r}: choose one of {', '.join(ORDERS)}")
    if not 0 <= cfg.anneal_start <= cfg.anneal_end <= 1:
        raise GenzooError(
            f"family.anneal_start={cfg.anneal_start}, family.anneal_end={cfg.anneal_end}: need "
            "0 <= anneal_start <= anneal_end <= 1 (fractions of training)"
        )


def random_order_probability(cfg: ARConfig, step: int, total_steps: int) -> float:
    """Probability that a training sample uses a random order at this step: 0 for raster; for
    random, 1 before anneal_start, linear down to 0 at anneal_end, then 0 (always 1 when both
    are 0)."""
    if cfg.order == "raster":
        return 0.0
    if cfg.anneal_start == cfg.anneal_end == 0:
        return 1.0
    fraction = step / max(total_steps, 1)
    if fraction < cfg.anneal_start:
        return 1.0
    if fraction >= cfg.anneal_end:
        return 0.0
    return 1.0 - (fraction - cfg.anneal_start) / (cfg.anneal_end - cfg.anneal_start)


def token_grid(net: Any) -> tuple[int, int]:
    """(h, w) of the backbone's token grid: `net.token_grid`, or a square of block_size."""
    grid = getattr(net, "token_grid", None)
    if grid is not None:
        return tuple(grid)
    side = math.isqrt(net.block_size)
    if side * side != net.block_size:
        raise GenzooError(
            f"the backbone's block_size={net.block_size} is not a square; give it a token_grid"
        )
    return side, side


@torch.no_grad()
def generate_tokens(
    net: Any,
    y: Tensor,
    *,
    null_label: int | None,
    generators: Generators = None,
    cfg: float = 1.0,
    cfg_schedule: str = "constant",
    cfg_pow: float = 1.0,
    cfg_interval: int = -1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    progress: bool = False,
) -> Tensor:
    """Token ids (N, block_size) long in raster order for labels y (N,), KV-cached.

    Guidance (cfg > 1; cfg <= 1 runs the conditional batch alone, as LlamaGen) uses
    u + (c − u)·s with s from `cfg_scale_at(step, block_size, cfg, cfg_schedule, cfg_pow)`;
    `cfg_interval` = k >= 0 guides only steps 0 … k+1 (LlamaGen's rule).
    """
    check_cfg_options(cfg, cfg_schedule, cfg_pow, cfg_interval)
    check_token_options(temperature, top_k, top_p)
    guided = cfg > 1.0
    if guided and null_label is None:
        raise GenzooError(
            f"cfg={cfg} needs the null (unconditional) label of the network; pass null_label "
            "(the number of classes for LlamaGen), or use cfg=1"
        )
    n, length = y.shape[0], net.block_size
    prefix = getattr(net, "prefix_len", 1)
    labels = torch.cat([y, torch.full_like(y, null_label)]) if guided else y
    weight = next(net.parameters())
    net.setup_cache(labels.shape[0], prefix + length, device=weight.device, dtype=weight.dtype)
    sampled = []
    try:
        with eval_mode(net):
            logits = net.decode(None, labels, start=0)
            for step in steps(range(length), progress, "tokens"):
                if step > 0:
                    last = sampled[-1][:, None]
                    fed = torch.cat([last, last]) if guided else last
                    logits = net.decode(fed, None, start=prefix + step - 1)
                if guided:
                    cond, uncond = logits[:n], logits[n:]
                    if cfg_active(step, cfg_interval):
                        scale = cfg_scale_at(step, length, cfg, cfg_schedule, cfg_pow)
                        step_logits = guide_logits(cond, uncond, scale)
                    else:
                        step_logits = cond
                else:
                    step_logits = logits
                probs = token_probs(step_logits, temperature, top_k, top_p)
                sampled.append(draw_tokens(probs, generators))
    finally:
        net.clear_cache()
    return torch.stack(sampled, dim=1)


class Autoregressive(Family):
    """The `ar` family: next-token cross-entropy for training, KV-cached sampling."""

    kind = "ar"
    Config = ARConfig
    # name -> default of every sampling option (the CLI exposes these and rejects others)
    sample_options: dict[str, Any] = {
        "cfg": 1.0,
        "cfg_schedule": "constant",
        "cfg_pow": 1.0,
        "cfg_interval": -1,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }

    def __init__(self, cfg: ARConfig) -> None:
        check_ar_config(cfg)
        super().__init__(cfg)

    # -- training ---------------------------------------------------------------------------
    def draw_orders(
        self, n: int, length: int, generator: torch.Generator | None, step: int, total_steps: int
    ) -> Tensor | None:
        """Per-sample token orders (n, length), or None for raster order. Draws n uniforms
        (random or raster per sample), then n·length uniforms whose argsort is the
        permutation; nothing at all when the probability is 0."""
        r = random_order_probability(self.cfg, step, total_steps)
        if r == 0:
            return None
        use_random = uniform_draw((n,), generator) < r
        permutations = uniform_draw((n, length), generator).argsort(dim=1)
        raster = torch.arange(length, device=permutations.device).expand(n, length)
        return torch.where(use_random[:, None], permutations, raster)

    def loss(
        self,
        net: Any,
        z: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        step: int = 0,
        total_steps: int = 1,
    ) -> dict[str, Tensor]:
        """Mean next-token cross-entropy of token ids z (N, h, w) under labels y (N,)."""
        if z.dtype not in (torch.int64, torch.int32) or z.ndim < 2:
            raise GenzooError(
                f"the ar family trains on token ids (N, h, w) long; got {tuple(z.shape)} "
                f"{z.dtype} (use a discrete tokenizer)"
            )
        tokens = z.reshape(z.shape[0], -1).long()
        orders = self.draw_orders(*tokens.shape, generator, step, total_steps)
        if orders is None:
            logits = net(tokens, y)
        else:
            orders = orders.to(tokens.device)
            tokens = tokens.gather(1, orders)
            logits = net(tokens, y, orders=orders)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1))
        acc = (logits.detach().argmax(dim=-1) == tokens).float().mean()
        return {"loss": loss, "acc": acc}

    # -- sampling ---------------------------------------------------------------------------
    def check_sample_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """All options, typed (strings from the command line) and with defaults filled in;
        GenzooError naming an unknown or unusable one."""
        merged = {**self.sample_options, **self.check_options(options)}
        check_cfg_options(
            merged["cfg"], merged["cfg_schedule"], merged["cfg_pow"], merged["cfg_interval"]
        )
        check_token_options(merged["temperature"], merged["top_k"], merged["top_p"])
        return merged

    def sample(
        self,
        net: Any,
        y: Tensor,
        *,
        generators: list[torch.Generator] | None,
        null_label: int | None,
        progress: bool = False,
        **options: Any,
    ) -> Tensor:
        """Token ids (N, h, w) for labels y (N,); options as in `sample_options`."""
        merged = self.check_sample_options(options)
        tokens = generate_tokens(
            net, y, null_label=null_label, generators=generators, progress=progress, **merged
        )
        return tokens.reshape(y.shape[0], *token_grid(net))
