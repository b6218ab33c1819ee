"""The convolutional trunk of VAR's multi-scale VQ-VAE (the official `basic_vae.py` design):
GroupNorm(32, eps 1e-6) and SiLU throughout, two residual blocks per level on the way down and
three on the way up, single-head attention at the lowest resolution and in the middle. Keys and
order are the official ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CH_MULT = (1, 1, 2, 2, 4)  # fixed by the official class: downsampling factor 16
RES_BLOCKS = 2


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))); 1×1 shortcut if widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions, q, k, v from one 1×1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        # the official operation order (bmm, scale, softmax, bmm), so that encoded ids match
        weights = torch.bmm(q.transpose(1, 2), k).mul_(c**-0.5).softmax(dim=2)
        out = torch.bmm(v, weights.transpose(1, 2))
        return x + self.proj_out(out.reshape(b, c, h, w))


class Resample(nn.Module):
    """Down: zero-pad one pixel on the right and bottom only, then a stride-2 3×3 conv.
    Up: nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 + down, padding=1 - down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1)) if self.down else F.interpolate(x, scale_factor=2.0)
        return self.conv(x)


class Middle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Stage(nn.Module):
    """One resolution level: residual blocks, each followed by attention at the lowest level,
    then the encoder's `downsample` or the decoder's `upsample` (set by the owner)."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attention: bool):
        super().__init__()
        self.width = c_out
        self.block = nn.ModuleList(
            [ResnetBlock(c_out if b else c_in, c_out) for b in range(blocks)]
        )
        self.attn = nn.ModuleList([AttnBlock(c_out) for _ in range(blocks if attention else 0)])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        resample = getattr(self, "downsample", None) or getattr(self, "upsample", None)
        return resample(h) if resample is not None else h


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> latent (B, Cv, H/16, W/16)."""

    def __init__(self, ch: int, z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        widths, last = [ch * m for m in (1, *CH_MULT)], len(CH_MULT) - 1
        stages = [Stage(widths[i], widths[i + 1], RES_BLOCKS, i == last) for i in range(last + 1)]
        for stage in stages[:-1]:
            stage.downsample = Resample(stage.width, down=True)
        self.down = nn.ModuleList(stages)
        self.mid = Middle(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent -> image; `up` is indexed by level, so the lowest resolution (index 4) runs first."""

    def __init__(self, ch: int, z_channels: int):
        super().__init__()
        widths, last = [ch * m for m in CH_MULT], len(CH_MULT) - 1
        self.conv_in = nn.Conv2d(z_channels, widths[-1], 3, padding=1)
        self.mid = Middle(widths[-1])
        stages = [
            Stage(widths[min(i + 1, last)], widths[i], RES_BLOCKS + 1, i == last)
            for i in range(last + 1)
        ]
        for stage in stages[1:]:
            stage.upsample = Resample(stage.width, down=False)
        self.up = nn.ModuleList(stages)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))
