"""Transformer feed-forward layers: the DiT MLP (tanh-GELU) and SwiGLU (LightningDiT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MLPS = ("gelu", "swiglu")


class GeluMlp(nn.Module):
    """fc1 -> GELU -> fc2; DiT uses the tanh approximation, ViTs such as DINOv2 the exact GELU
    (approximate="none")."""

    def __init__(self, dim: int, hidden: int, approximate: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class SwiGLU(nn.Module):
    """w3(SiLU(a) ⊙ b) where [a, b] = w12(x): one fused input projection, as LightningDiT."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def make_mlp(kind: str, dim: int, mlp_ratio: float) -> nn.Module:
    """The block MLP. GELU: hidden int(D·ratio). SwiGLU: int(2/3·int(D·ratio)), LightningDiT's rule,
    which keeps about the GELU MLP's parameter count (three matrices instead of two)."""
    hidden = int(dim * mlp_ratio)
    if kind == "gelu":
        return GeluMlp(dim, hidden)
    if kind == "swiglu":
        return SwiGLU(dim, int(2 / 3 * hidden))
    raise ValueError(f"unknown mlp {kind!r}; choose one of {MLPS}")
