"""Normalisation layers: the DiT LayerNorm (no affine, eps 1e-6) and RMSNorm (LightningDiT)."""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("layernorm", "rmsnorm")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps), computed in float32, times a learned per-channel weight.

    With `affine=False` there is no weight (used under time-dependent normalisation, whose
    time-dependent scale takes its place).
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        out = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out if self.weight is None else out * self.weight


def make_norm(kind: str, dim: int, affine: bool) -> nn.Module:
    """`layernorm` or `rmsnorm` over the last axis, eps 1e-6, with or without learned affine."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=1e-6, affine=affine)
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")
