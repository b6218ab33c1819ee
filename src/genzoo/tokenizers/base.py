"""The tokenizer contract: a frozen module mapping images in [-1, 1] to latents and back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from genzoo.errors import GenzooError

# One generator for the whole batch, or one per item (so an item's draw ignores the batching).
Generators = torch.Generator | Sequence[torch.Generator] | None


class Tokenizer(nn.Module):
    """Base class. Subclasses set `spec`, `stride`, `channels`, `scale` and implement the codecs.

    A tokenizer is frozen: its parameters never require gradients and it stays in eval mode even
    when a parent module calls `.train()`.
    """

    spec: str
    stride: int  # pixels per latent cell along each side
    channels: int  # latent channels
    scale: float  # latents are multiplied by this after encoding (1.0 when unused)

    def encode(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images, float NCHW in [-1, 1] -> latents [N, channels, H / stride, W / stride]."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images, float NCHW, nominally in [-1, 1] (not clamped)."""
        raise NotImplementedError

    def latent_shape(self, res: int) -> tuple[int, int, int]:
        """(C, h, w) of the latent of a res x res image."""
        if res % self.stride:
            raise GenzooError(
                f"tokenizer {self.spec}: resolution {res} is not a multiple of its stride "
                f"{self.stride}; use a resolution divisible by {self.stride}"
            )
        return (self.channels, res // self.stride, res // self.stride)

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Tokenizer:
        return super().train(False)  # frozen: always in eval mode


def gaussian_noise(
    shape: Sequence[int], generator: Generators, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn in float32 on the generators' device(s).

    With a list of generators, item k is drawn from generator k alone.
    """
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        where = generator.device if generator is not None else device
        noise = torch.randn(shape, generator=generator, device=where, dtype=torch.float32)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        noise = torch.cat(
            [
                torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32)
                for g in generator
            ]
        )
    return noise.to(device=device, dtype=dtype)
