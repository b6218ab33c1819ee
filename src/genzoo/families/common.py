"""Small helpers shared by the families."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch one."""
    return x.mean(dim=list(range(1, x.ndim)))


@contextmanager
def eval_mode(net: object) -> Iterator[None]:
    """Run a module in eval mode (no label dropout: deterministic, RNG untouched), then restore."""
    was_training = isinstance(net, nn.Module) and net.training
    if was_training:
        net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            net.train()


def uniform_draw(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """U[0, 1) on the generator's device, or from the global CPU RNG (as SiT draws t)."""
    if generator is None:
        return torch.rand(shape)
    return torch.rand(shape, generator=generator, device=generator.device)


def normal_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) shaped like x: `randn_like(x)` from the global RNG, or from the generator."""
    if generator is None:
        return torch.randn_like(x)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device)
