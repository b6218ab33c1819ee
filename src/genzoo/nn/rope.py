"""2-D axial rotary position embedding (RoPE) on a G×G token grid, as in LightningDiT.

Each head vector is split in two halves: the first half is rotated by the token's row index,
the second by its column index. Within a half, channel pairs (2i, 2i+1) turn by the angle
pos·ω_i with ω_i = θ^(-4i/head_dim), i < head_dim/4. Rotating both q and k makes q·k depend
on positions only through their difference, so attention sees relative positions.
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): a quarter turn of each channel pair."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)


def axial_rope_angles(head_dim: int, grid_size: int, theta: float = 10000.0) -> torch.Tensor:
    """(G·G, head_dim) rotation angles, token n = row·G + col, each angle repeated for its pair."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    axis_dim = head_dim // 2
    omega = theta ** (-torch.arange(0, axis_dim, 2, dtype=torch.float32) / axis_dim)
    per_axis = torch.outer(torch.arange(grid_size, dtype=torch.float32), omega)
    per_axis = per_axis.repeat_interleave(2, dim=-1)  # (G, head_dim/2): one angle per pair
    rows = per_axis[:, None, :].expand(grid_size, grid_size, axis_dim)
    cols = per_axis[None, :, :].expand(grid_size, grid_size, axis_dim)
    return torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, head_dim)


class AxialRoPE(nn.Module):
    """Rotates q or k of shape (N, heads, tokens, head_dim) by each token's grid position.

    Tokens before the G·G grid tokens (e.g. an in-context class token) are left unrotated.
    The cos/sin tables are fixed and not saved in the state dict.
    """

    def __init__(self, head_dim: int, grid_size: int, theta: float = 10000.0):
        super().__init__()
        angles = axial_rope_angles(head_dim, grid_size, theta)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix = x.shape[-2] - self.cos.shape[0]
        grid = x[..., prefix:, :].float()
        rotated = (grid * self.cos + rotate_pairs(grid) * self.sin).type_as(x)
        return torch.cat([x[..., :prefix, :], rotated], dim=-2) if prefix else rotated
