"""One optimisation step: what the loop hands a family (`StepContext`) and the ordinary step.

The ordinary step runs `accum` micro-batches through `family.loss`, lets DDP all-reduce the
gradients on the last one, clips and steps the one optimizer. A family that owns its update (a
GAN's alternating D and G steps, a VQGAN's discriminator) defines `train_step(ctx)` and uses the
same context: batches with their generators, autocast, clipping, all optimizers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class StepContext:
    model: nn.Module  # the network being trained, unwrapped
    net: nn.Module  # the same, wrapped for DDP / FSDP / compile as the run asks
    optimizers: dict[str, torch.optim.Optimizer]
    aux: dict[str, nn.Module]  # the family's own trainable modules (possibly wrapped)
    step: int  # the step about to be taken (0-based)
    total_steps: int
    accum: int  # micro-batches per step
    distributed: bool
    grad_clip: float
    amp_dtype: torch.dtype | None
    device: torch.device
    _batches: Callable[[int], tuple[Any, torch.Tensor, torch.Generator]] = field(repr=False)
    _micro: int = 0

    def next_batch(self) -> tuple[Any, torch.Tensor, torch.Generator]:
        """The next micro-batch of this step: (encoded data, labels after dropout, generator)."""
        batch = self._batches(self._micro)
        self._micro += 1
        return batch

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )

    def no_sync(self, net: nn.Module, last: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if last or not self.distributed or not hasattr(net, "no_sync"):
            return contextlib.nullcontext()
        return net.no_sync()

    def clip(self, params: Iterator[torch.nn.Parameter] | list) -> float | None:
        """Clip gradients to the run's `grad_clip` (0: off); the norm before clipping."""
        if self.grad_clip <= 0:
            return None
        return float(torch.nn.utils.clip_grad_norm_(list(params), self.grad_clip))


def ordinary_step(family: Any, ctx: StepContext) -> dict[str, float]:
    """`accum` micro-batches of `family.loss` → backward → clip → the model's optimizer."""
    opt = ctx.optimizers["model"]
    opt.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for a in range(ctx.accum):
        z, y, g = ctx.next_batch()
        with ctx.no_sync(ctx.net, a == ctx.accum - 1), ctx.autocast():
            losses = family.loss(
                ctx.net, z, y, generator=g, step=ctx.step, total_steps=ctx.total_steps
            )
        with ctx.no_sync(ctx.net, a == ctx.accum - 1):
            (losses["loss"] / ctx.accum).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) / ctx.accum
    norm = ctx.clip(ctx.model.parameters())
    if norm is not None:
        totals["grad_norm"] = norm
    return totals  # the loop steps `opt` once it has seen that the loss is finite
