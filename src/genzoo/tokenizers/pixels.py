"""`pixels`: the identity tokenizer (stride 1, 3 channels), for pixel-space models."""

from __future__ import annotations

import torch

from genzoo.tokenizers.base import Generators, Tokenizer


class PixelTokenizer(Tokenizer):
    def __init__(self) -> None:
        super().__init__()
        self.spec = "pixels"
        self.stride = 1
        self.channels = 3
        self.scale = 1.0
        self.freeze()

    def encode(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z
