"""Per-step Gaussian draws of the stochastic samplers.

`generator` may be:
* one `torch.Generator`: every draw comes from it (on its device, then moved), for exactly the N
  samples being generated, so the samples do not depend on the guidance setting;
* a sequence of N generators, one per sample: sample i's noise comes from generator i alone, so
  a sample is the same whatever batch (or GPU) it is generated in, given the same initial noise;
* None: the global RNG, in the pattern the official DiT/SiT loops use, so that
  `torch.manual_seed(s)` reproduces their samples. Those loops carry the doubled [cond; uncond]
  batch when guidance is on and draw noise for all of it; the first N rows are the real samples'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from genzoo.errors import GenzooError

Generators = torch.Generator | Sequence[torch.Generator] | None


def step_noise(
    x: Tensor,
    generator: Generators,
    *,
    batch_factor: int = 1,
    global_on_cpu: bool = False,
) -> Tensor:
    """Standard normal noise shaped like `x`.

    batch_factor: with the global RNG, draw this many times N rows and keep the first N
        (2 under classifier-free guidance, like the official doubled batch).
    global_on_cpu: with the global RNG, draw float32 on the CPU and move it (SiT's
        `randn(x.size()).to(x)`); otherwise draw on x's device like `randn_like` (DiT).
    """
    n = x.shape[0]
    if isinstance(generator, torch.Generator):
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return noise.to(x.device)
    if generator is not None:
        if len(generator) != n:
            raise GenzooError(
                f"got {len(generator)} generators for a batch of {n} samples; "
                "pass one generator per sample (or a single generator)"
            )
        rows = [
            torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device)
            for g in generator
        ]
        return torch.stack(rows)
    shape = (batch_factor * n, *x.shape[1:])
    if global_on_cpu:
        noise = torch.randn(shape).to(x)
    else:
        noise = torch.randn(shape, device=x.device, dtype=x.dtype)
    return noise[:n]
