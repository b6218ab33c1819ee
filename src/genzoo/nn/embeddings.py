"""Input embeddings of a diffusion transformer: patches, timesteps, class labels, 2-D positions.

The numerics follow the official DiT code, so that its checkpoints reproduce exactly:
timestep frequencies in float32 with cos before sin, a position table built in float64 whose
first half encodes the column index, and a label table whose last row is the null class.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Cut an image into p×p patches and project each to `hidden` (a strided conv, bias on).

    Tokens come out row-major: token n = row·G + col for a G×G grid of patches.
    """

    def __init__(self, in_channels: int, hidden: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, D, G, G) -> (N, G·G, D)


def timestep_embedding(
    t: torch.Tensor, dim: int = 256, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) times t (N,): [cos(t·f_k), sin(t·f_k)].

    f_k = exp(-ln(max_period)·k/half) for k < half = dim // 2, computed in float32 like the
    official code; an odd `dim` gets a zero column appended.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepEmbedder(nn.Module):
    """t -> MLP(sinusoidal features of t): Linear(256, D), SiLU, Linear(D, D).

    t is fed raw: DiT passes the integer diffusion index, SiT the continuous time in [0, 1].
    """

    def __init__(self, hidden: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors, with label dropout to a null class for classifier-free guidance.

    The table has `num_classes + 1` rows when `dropout_prob > 0`; the last row (index
    `num_classes`) is the null class. Dropout happens only in training mode, drawn from the
    global torch RNG as in the official code, or wherever `force_drop_ids == 1`.
    """

    def __init__(self, num_classes: int, hidden: int, dropout_prob: float):
        super().__init__()
        has_null_class = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(has_null_class), hidden)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def drop_labels(
        self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, self.num_classes, labels)

    def forward(
        self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.drop_labels(labels, force_drop_ids)
        return self.embedding_table(labels)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim) table: dim/2 sines then dim/2 cosines, ω_k = 10000^(-2k/dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos table (G·G, dim) in float64, token n = row·G + col.

    The first dim/2 channels encode the column index and the last dim/2 the row index (the
    official table does this, whatever its variable names suggest).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
