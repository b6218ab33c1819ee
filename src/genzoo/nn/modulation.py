"""adaLN-Zero (DiT): a condition vector regresses per-channel shift, scale and gate vectors."""

from __future__ import annotations

import torch
from torch import nn


def adaln_modulation(hidden: int, chunks: int) -> nn.Sequential:
    """SiLU then Linear(D, chunks·D): index 1 holds the weights, as in the official layout.

    Zero-initialised by the model that owns it, so that every block starts as the identity.
    """
    return nn.Sequential(nn.SiLU(), nn.Linear(hidden, chunks * hidden))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x·(1 + scale) + shift, with (N, D) modulation broadcast over the (N, T, D) tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
