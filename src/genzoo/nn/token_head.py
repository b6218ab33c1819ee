"""The per-token head of MAR (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization"): a small MLP with adaLN that denoises one continuous token at a time.

The transformer in front of it says *what* a token should be (a condition vector z per token);
the head models the distribution of the token given z, so the tokens need no quantisation:

    h = input_proj(x_t)                      x_t: a noisy token (N, C)
    y = time_embed(t) + cond_embed(z)        t: the diffusion index (or flow time) of each row
    h = h + gate·MLP(LN(h)·(1 + scale) + shift)      per residual block, (shift, scale, gate)
                                                     from Linear(SiLU(y)), in that order
    out = linear(LN_noaffine(h)·(1 + scale) + shift)  (shift, scale) from Linear(SiLU(y))

Keys, shapes and order are those of MAR's `SimpleMLPAdaLN` (`diffloss.net.*` in a MAR
checkpoint), so official weights load strictly; the time features are cos-first (DiT's). The
output has `out_channels` features: 2·C for a diffusion head with learned variance ([eps, v]),
C for a flow head. MAR and eMIGM use it; so can any model that conditions per token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from genzoo.errors import GenzooError
from genzoo.nn.embeddings import TimestepEmbedder
from genzoo.nn.modulation import adaln_modulation


def modulate_rows(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x·(1 + scale) + shift for (N, D) rows, each with its own modulation."""
    return x * (1 + scale) + shift


class HeadResBlock(nn.Module):
    """h + gate·MLP(modulate(LN(h))): the official `ResBlock` (in_ln, mlp, adaLN_modulation)."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = adaln_modulation(width, 3)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return h + gate * self.mlp(modulate_rows(self.in_ln(h), shift, scale))


class HeadFinalLayer(nn.Module):
    """linear(modulate(LN_noaffine(h))): DiT's final layer on rows."""

    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = adaln_modulation(width, 2)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate_rows(self.norm_final(h), shift, scale))


class TokenHead(nn.Module):
    """forward(x (N, C), t (N,), z (N, D)) -> (N, out_channels).

    in_channels C is the token size, cond_channels D the condition width, width and depth the
    MLP's (MAR-B: 1024 × 6). `grad_checkpointing` recomputes each block in the backward pass.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        cond_channels: int,
        depth: int,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width),
                            ("out_channels", out_channels), ("cond_channels", cond_channels),
                            ("depth", depth)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GenzooError(f"token head: {name} must be a positive integer, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.grad_checkpointing = grad_checkpointing
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList(HeadResBlock(width) for _ in range(depth))
        self.final_layer = HeadFinalLayer(width, out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The official init: Xavier-uniform linears with zero bias, N(0, 0.02) for the time
        MLP, and zero modulations and output, so that the head starts at output 0."""
        if self.input_proj.weight.is_meta:  # shapes only (loading)
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for block in self.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check(self, x: Tensor, t: Tensor, z: Tensor) -> None:
        n = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise GenzooError(
                f"token head: x has shape {tuple(x.shape)}; expected (N, {self.in_channels})"
            )
        if t.shape != (n,) or z.ndim != 2 or z.shape[0] != n:
            raise GenzooError(
                f"token head: t {tuple(t.shape)} and z {tuple(z.shape)} must have one row per "
                f"row of x ({n}): t (N,), z (N, {self.cond_embed.in_features})"
            )

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        self._check(x, t, z)
        h = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(z)
        for block in self.res_blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, y, use_reentrant=False)
            else:
                h = block(h, y)
        return self.final_layer(h, y)

    def forward_with_cfg(self, x: Tensor, t: Tensor, z: Tensor, scale: float) -> Tensor:
        """Guided output for a doubled batch: rows [conditional; null] of t and z.

        As MAR's guided head: the first half of x is fed to both halves, the first
        `in_channels` outputs (eps, or the whole velocity of a flow head) become
        u + scale·(c − u) in both halves, and the rest (the variance values) is not guided, each
        half keeping its own.
        """
        half = x[: x.shape[0] // 2]
        out = self(torch.cat([half, half]), t, z)
        guided, rest = out[:, : self.in_channels], out[:, self.in_channels :]
        cond, uncond = guided.split(guided.shape[0] // 2, dim=0)
        mixed = uncond + scale * (cond - uncond)
        return torch.cat([torch.cat([mixed, mixed]), rest], dim=1)
