"""Euler–Maruyama for dx = drift(x, t) dt + sqrt(2 w(t)) dW, as SiT's SDE sampler runs it.

SiT steps through grid[:-1] with a constant dt = grid[1] - grid[0]; then one deterministic last
step (see `genzoo.families.flow`) closes the gap to t = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genzoo.sampling.progress import steps

Drift = Callable[[Tensor, Tensor], Tensor]  # drift(x, t) with t a 0-dim tensor
Diffusion = Callable[[Tensor], Tensor]  # w(t), broadcastable against x
NoiseFn = Callable[[Tensor], Tensor]


def euler_maruyama(
    drift: Drift,
    diffusion: Diffusion,
    x: Tensor,
    grid: Tensor,
    *,
    noise: NoiseFn,
    progress: bool = False,
) -> Tensor:
    """x <- x + drift·dt + sqrt(2 w(t)) · sqrt(dt) · z on each of the grid's first len-1 points."""
    dt = grid[1] - grid[0]
    for t in steps(list(grid[:-1]), progress, "euler-maruyama"):
        z = noise(x)
        dw = z * torch.sqrt(dt)
        mean = x + drift(x, t) * dt
        x = mean + torch.sqrt(2 * diffusion(t)) * dw
    return x
