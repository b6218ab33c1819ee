"""VQGAN in the LlamaGen `VQModel` layout (VQ-16 / VQ-8): convolutional encoder and decoder around
a codebook of l2-normalised, low-dimensional codes.

    x ─► encoder ─► quant_conv (z_channels → embed_dim) ─► nearest normalised code ─► ids
    ids ─► normalised codebook rows ─► post_quant_conv (embed_dim → z_channels) ─► decoder ─► x̂

Parameter names and shapes are those of the official `VQModel`, so its checkpoints
(`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`) load with strict loading. The stored codebook is not unit-norm;
it is normalised at use. Quantization losses (VQGAN / LlamaGen):

    codebook = mean (ẑ_q − sg[ẑ])²,   commit = β · mean (sg[ẑ_q] − ẑ)²,
    entropy  = ratio · (mean per-vector entropy − entropy of the mean code distribution),

with ẑ the normalised encoder vectors, the code distribution softmax(−distance / 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import GenzooError

GROUPS = 32  # GroupNorm groups, hard-coded in the official network
USAGE_WINDOW = 65536  # length of the official `codebook_used` buffer of recent ids
ENTROPY_TEMPERATURE = 0.01


@dataclass
class VQConfig:
    """The official tokenizer `ModelArgs` (same names and defaults), plus the base width `ch`."""

    kind: ClassVar[str] = "vq"
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    dropout_p: float = 0.0
    ch: int = 128  # base width (the official code hard-codes 128)

    def __post_init__(self) -> None:
        self.encoder_ch_mult = tuple(int(m) for m in self.encoder_ch_mult)
        self.decoder_ch_mult = tuple(int(m) for m in self.decoder_ch_mult)

    @property
    def stride(self) -> int:
        """Pixels per code along each side: one 2× downsample between encoder levels."""
        return 2 ** (len(self.encoder_ch_mult) - 1)


PRESETS = {"VQ-16": (1, 1, 2, 2, 4), "VQ-8": (1, 2, 2, 4)}


def check_vq_config(cfg: VQConfig) -> None:
    """GenzooError naming the first setting that cannot build the network."""
    for name in ("codebook_size", "codebook_embed_dim", "z_channels", "ch"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"VQ setting {name} must be a positive integer, got {value!r}")
    for name in ("encoder_ch_mult", "decoder_ch_mult"):
        mult = getattr(cfg, name)
        if not mult or min(mult) < 1:
            raise GenzooError(f"VQ setting {name} must be positive integers, got {mult!r}")
    if len(cfg.encoder_ch_mult) != len(cfg.decoder_ch_mult):
        raise GenzooError(
            f"encoder_ch_mult {cfg.encoder_ch_mult} and decoder_ch_mult {cfg.decoder_ch_mult} "
            "need as many levels (the decoder undoes the encoder's downsampling)"
        )
    widths = sorted({cfg.ch * m for m in (*cfg.encoder_ch_mult, *cfg.decoder_ch_mult)})
    if any(w % GROUPS for w in widths):
        raise GenzooError(
            f"VQ widths {widths} (ch={cfg.ch} × ch_mult) must be multiples of {GROUPS}, the "
            f"GroupNorm group count; choose ch as a multiple of {GROUPS}"
        )


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(dropout(swish(norm(conv(swish(norm(x)))))), with a 1×1 shortcut on width change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h·w positions, 1×1 convs for q, k, v and output."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        normed = self.norm(x)
        q = self.q(normed).reshape(n, c, h * w).transpose(1, 2)  # (n, hw, c)
        k = self.k(normed).reshape(n, c, h * w)  # (n, c, hw)
        v = self.v(normed).reshape(n, c, h * w)
        # Scores scaled after the product, as the official block does (same rounding).
        weights = F.softmax(torch.bmm(q, k) * c**-0.5, dim=2)  # (n, query, key)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one pixel, then a 3×3 stride-2 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: residual blocks (each followed by attention on the deepest level), then an
    optional resampling, named `downsample` in the encoder and `upsample` in the decoder."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        blocks: int,
        *,
        attention: bool,
        dropout: float,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        self.res = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, dropout) for i in range(blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(blocks if attention else 0))
        self.resample_name = resample
        if resample == "downsample":
            self.downsample = Downsample(out_ch)
        elif resample == "upsample":
            self.upsample = Upsample(out_ch)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if self.resample_name is not None:
            h = getattr(self, self.resample_name)(h)
        return h


def middle(channels: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(
        [ResnetBlock(channels, channels, dropout), AttnBlock(channels),
         ResnetBlock(channels, channels, dropout)]
    )  # fmt: skip


class Encoder(nn.Module):
    """conv_in → levels (2 residual blocks each; attention on the last; 2× down between) →
    mid (res, attn, res) → GroupNorm → swish → conv_out to z_channels."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], z_channels: int, dropout: float):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        last = len(ch_mult) - 1
        self.conv_blocks = nn.ModuleList()
        for i in range(len(ch_mult)):
            self.conv_blocks.append(
                Level(
                    widths[i],
                    widths[i + 1],
                    2,
                    attention=i == last,
                    dropout=dropout,
                    resample="downsample" if i != last else None,
                )
            )
        self.mid = middle(widths[-1], dropout)
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """conv_in → mid → levels from deepest to shallowest (3 residual blocks each; attention on the
    deepest; 2× up between) → GroupNorm → swish → conv_out to RGB. conv_blocks[0] is deepest."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], z_channels: int, dropout: float):
        super().__init__()
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = middle(width, dropout)
        self.conv_blocks = nn.ModuleList()
        deepest = len(ch_mult) - 1
        for i in reversed(range(len(ch_mult))):
            out = ch * ch_mult[i]
            self.conv_blocks.append(
                Level(
                    width,
                    out,
                    3,
                    attention=i == deepest,
                    dropout=dropout,
                    resample="upsample" if i != 0 else None,
                )
            )
            width = out
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class Quantized(NamedTuple):
    latents: torch.Tensor  # (N, C, h, w) chosen codes (straight-through: gradients reach z)
    ids: torch.Tensor  # (N, h, w) long, raster order
    losses: dict[str, torch.Tensor]  # codebook, commit, entropy, usage


def entropy_loss(affinity: torch.Tensor, temperature: float = ENTROPY_TEMPERATURE) -> torch.Tensor:
    """Mean per-vector entropy minus entropy of the batch-mean code distribution (MaskGIT)."""
    logits = affinity.reshape(-1, affinity.shape[-1]) / temperature
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits, dim=-1)
    mean_probs = probs.mean(dim=0)
    mean_entropy = -(mean_probs * torch.log(mean_probs + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    return sample_entropy - mean_entropy


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.size, self.dim = cfg.codebook_size, cfg.codebook_embed_dim
        self.l2_norm, self.beta = cfg.codebook_l2_norm, cfg.commit_loss_beta
        self.entropy_ratio = cfg.entropy_loss_ratio
        self.embedding = nn.Embedding(self.size, self.dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / self.size, 1.0 / self.size)
            if self.l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, p=2, dim=-1))
        if cfg.codebook_show_usage:
            # The ids of the last 65536 encoded vectors (training statistics of the official code).
            self.register_buffer("codebook_used", torch.zeros(USAGE_WINDOW))
        else:
            self.codebook_used = None

    def codes(self) -> torch.Tensor:
        """The codebook as used: (size, dim), rows l2-normalised when codebook_l2_norm."""
        weight = self.embedding.weight
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (N, h, w) → code vectors (N, dim, h, w)."""
        return self.codes()[ids].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> Quantized:
        n, _, h, w = z.shape
        z = z.permute(0, 2, 3, 1).contiguous()  # (n, h, w, dim); flattened in raster order
        if self.l2_norm:
            z = F.normalize(z, p=2, dim=-1)
        flat = z.reshape(-1, self.dim)
        codes = self.codes()
        # |z|² + |e|² − 2 z·e; argmin returns the first index on ties.
        distance = (
            flat.pow(2).sum(dim=1, keepdim=True)
            + codes.pow(2).sum(dim=1)
            - 2 * torch.einsum("bd,dn->bn", flat, codes.t())
        )
        ids = distance.argmin(dim=1)
        z_q = codes[ids].view(z.shape)
        losses = {
            "codebook": (z_q - z.detach()).pow(2).mean(),
            "commit": self.beta * (z_q.detach() - z).pow(2).mean(),
            "entropy": (
                self.entropy_ratio * entropy_loss(-distance)
                if self.entropy_ratio
                else distance.new_zeros(())
            ),
            # fraction of the codebook used by this batch
            "usage": distance.new_tensor(torch.unique(ids).numel() / self.size),
        }
        if self.training and self.codebook_used is not None:
            with torch.no_grad():
                recent = ids[-USAGE_WINDOW:].to(self.codebook_used.dtype)
                self.codebook_used.copy_(torch.cat([self.codebook_used[len(recent) :], recent]))
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return Quantized(z_q.permute(0, 3, 1, 2).contiguous(), ids.view(n, h, w), losses)


class VQModel(nn.Module):
    """The LlamaGen VQGAN: `forward(x)` → (reconstruction, losses) for training."""

    Config = VQConfig

    @staticmethod
    def resolve(cfg: VQConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """A VQ trains on images (tokenizer `pixels`) whose side is a multiple of its stride."""
        if getattr(tokenizer, "stride", 1) != 1 or getattr(tokenizer, "discrete", False):
            raise GenzooError(
                f"model.kind=vq trains on images, but the run's tokenizer is {tokenizer.spec!r}; "
                "set tokenizer=pixels"
            )
        if res % cfg.stride:
            raise GenzooError(
                f"--res {res} is not a multiple of the VQ stride {cfg.stride}; pick another res"
            )

    def __init__(self, cfg: VQConfig):
        super().__init__()
        check_vq_config(cfg)
        self.cfg = cfg
        self.encoder = Encoder(cfg.ch, cfg.encoder_ch_mult, cfg.z_channels, cfg.dropout_p)
        self.decoder = Decoder(cfg.ch, cfg.decoder_ch_mult, cfg.z_channels, cfg.dropout_p)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)

    @property
    def stride(self) -> int:
        return self.cfg.stride

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output weight (for the adaptive adversarial weight)."""
        return self.decoder.conv_out.weight

    def encode(self, x: torch.Tensor) -> Quantized:
        """Images (N, 3, H, W) in [-1, 1] → quantized latents, ids and quantization losses."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Code vectors (N, embed_dim, h, w) → images (raw decoder output, not clamped)."""
        return self.decoder(self.post_quant_conv(latents))

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantize.lookup(ids))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        quantized = self.encode(x)
        return self.decode(quantized.latents), quantized.losses
