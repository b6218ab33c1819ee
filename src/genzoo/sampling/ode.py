"""Fixed-grid ODE solvers for dx/dt = v(x, t), stepping through the points of a time grid.

The grid is given explicitly (SiT uses torch.linspace(0, 1, steps): `steps` points, both ends
included, steps - 1 steps). Each step mirrors torchdiffeq's fixed-grid solvers: dt = t1 - t0 in
the grid's dtype, y1 = y0 + dy.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from genzoo.sampling.progress import steps

Velocity = Callable[[Tensor, Tensor], Tensor]  # v(x, t) with t a 0-dim tensor


def euler(velocity: Velocity, x: Tensor, grid: Tensor, *, progress: bool = False) -> Tensor:
    """Explicit Euler: one velocity evaluation per step."""
    for t0, t1 in steps(list(zip(grid[:-1], grid[1:])), progress, "euler"):
        dt = t1 - t0
        x = x + dt * velocity(x, t0)
    return x


def heun(velocity: Velocity, x: Tensor, grid: Tensor, *, progress: bool = False) -> Tensor:
    """Heun's second-order method (explicit trapezoid), two evaluations on every step.

    k1 = v(x, t0), k2 = v(x + k1·dt, t0 + dt), x <- x + dt/2 · (k1 + k2). The corrector is applied
    on the last step too (unlike EDM's Heun, which ends with an Euler step), as torchdiffeq-style
    "heun2" does.
    """
    for t0, t1 in steps(list(zip(grid[:-1], grid[1:])), progress, "heun"):
        dt = t1 - t0
        k1 = velocity(x, t0)
        k2 = velocity(x + k1 * dt, t0 + dt)
        x = x + dt * 0.5 * (k1 + k2)
    return x
