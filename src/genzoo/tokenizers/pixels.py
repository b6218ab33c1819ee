"""`pixels`: the identity tokenizer (stride 1, 3 channels), for pixel-space models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from genzoo.tokenizers.base import Generators, Tokenizer


@dataclass
class PixelsConfig:
    kind: ClassVar[str] = "pixels"


class PixelTokenizer(Tokenizer):
    Config = PixelsConfig

    @classmethod
    def from_config(cls, cfg: PixelsConfig) -> PixelTokenizer:
        return cls()

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
