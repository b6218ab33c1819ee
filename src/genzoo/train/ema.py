"""Exponential moving average of the weights (what is sampled and evaluated)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1−decay)·model, over every parameter (frozen tables included) and
    every float buffer (BatchNorm statistics, spectral-norm vectors); other buffers are copied."""
    e = list(ema.parameters())
    m = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e, m, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        if not b_ema.is_floating_point():
            b_ema.copy_(b)
        elif not torch.equal(b_ema, b):  # constant tables (a −inf attention mask) stay as they are
            b_ema.lerp_(b, 1.0 - decay)


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """Optional early warm-up: the average forgets the random init quickly."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay
