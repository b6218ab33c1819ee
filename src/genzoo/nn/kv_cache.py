"""A key/value cache for causal decoding, shared by every causal transformer in genzoo.

During autoregressive sampling each step feeds only the newest positions; their keys and values
are written into per-layer buffers (B, heads, max_len, head_dim) so that attention can read all
earlier positions without recomputing them. One `KVCache` lives in each attention layer while a
model is set up for decoding (`setup_cache`) and is removed afterwards (`clear_cache`).

The buffers are not persistent: a model's state dict never carries them, whether or not it is
set up for decoding. `pad_to` rounds the buffer length up (LlamaGen allocates a multiple of 8 and
attends over the whole zero-filled buffer with a mask; a model reproducing that reads the full
`k_cache` / `v_cache` after `update`).
"""

from __future__ import annotations

import torch
from torch import nn

from genzoo.errors import GenzooError


class KVCache(nn.Module):
    """Keys and values of positions 0 … max_len−1 for a batch of `batch_size` sequences."""

    def __init__(
        self,
        batch_size: int,
        max_len: int,
        num_heads: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        pad_to: int = 1,
    ):
        super().__init__()
        if batch_size < 1 or max_len < 1:
            raise GenzooError(
                f"a KV cache needs batch_size >= 1 and max_len >= 1, got batch_size={batch_size}, "
                f"max_len={max_len}"
            )
        self.max_len = max_len  # positions that may be fed; the buffers may be longer
        shape = (batch_size, num_heads, -(-max_len // pad_to) * pad_to, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, device=device, dtype=dtype), False)
        self.register_buffer("v_cache", torch.zeros(shape, device=device, dtype=dtype), False)

    @property
    def batch_size(self) -> int:
        return self.k_cache.shape[0]

    def check_span(self, start: int, length: int) -> None:
        """GenzooError unless positions start … start+length−1 fit into the cache."""
        if start < 0:
            raise GenzooError(f"decoding start position must be >= 0, got {start}")
        end = start + length
        if end > self.max_len:
            raise GenzooError(
                f"sequence of length {end} exceeds the KV cache of length {self.max_len}; "
                f"call setup_cache(max_len=...) with max_len >= {end}"
            )

    def update(
        self, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, heads, t, head_dim) at positions start … start+t−1 and return the
        keys and values of positions 0 … start+t−1 (views of the cache)."""
        batch, heads, length, _ = k.shape
        self.check_span(start, length)
        if batch != self.batch_size or heads != self.k_cache.shape[1]:
            raise GenzooError(
                f"keys of shape {tuple(k.shape)} do not fit the KV cache set up for batch "
                f"{self.batch_size} and {self.k_cache.shape[1]} heads; call setup_cache("
                f"batch_size={batch}) first"
            )
        end = start + length
        self.k_cache[:, :, start:end] = k.to(self.k_cache.dtype)
        self.v_cache[:, :, start:end] = v.to(self.v_cache.dtype)
        return self.k_cache[:, :, :end], self.v_cache[:, :, :end]


def causal_mask_from(
    start: int, length: int, device: torch.device | None = None, *, keys: int | None = None
):
    """Boolean mask (length, keys) letting query start+i see keys 0 … start+i; keys defaults to
    start+length, and then a single query sees every key and None (no mask) is returned."""
    if keys is None:
        if length == 1:
            return None
        keys = start + length
    positions = torch.arange(keys, device=device)
    queries = torch.arange(start, start + length, device=device)
    return positions[None, :] <= queries[:, None]
