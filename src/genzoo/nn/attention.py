"""Multi-head self-attention through `scaled_dot_product_attention` (timm/DiT layout).

qkv is one Linear(D, 3D) with bias whose output rows are [q; k; v], head h occupying rows
h·(D/H) … (h+1)·(D/H)−1 of each; the scale is (D/H)^-0.5 and there is no mask. Optional
per-head RMSNorm on q and k (`qk_norm`, LightningDiT) is applied before the rotary embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.nn.norms import RMSNorm


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)
        else:
            self.q_norm = self.k_norm = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: nn.Module | None = None) -> torch.Tensor:
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, tokens, head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))
