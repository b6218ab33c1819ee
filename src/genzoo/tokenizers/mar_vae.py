"""`mar-kl16`: MAR's KL-16 VAE, an LDM KL autoencoder (16 latent channels, stride 16).

    x ─► encoder ─► quant_conv (2E → 2E) ─► [mean, logvar] ─► (mean + std·ε)·scale
    z ─► /scale ─► post_quant_conv (E → E) ─► decoder ─► image ≈ [−1, 1] (not clamped)

The encoder has `len(ch_mult)` levels of 2 residual blocks (2× down between, the pad right and
bottom only), with single-head attention after each block of the level whose running
resolution is 16 (from `resolution`, 256 officially: level 4); then mid (res, attn, res),
GroupNorm, swish, conv_out to 2E. The decoder mirrors it with 3 residual blocks per level, no
attention outside its mid block; `decoder.up.i` is stored by level index (0 = full resolution)
although it runs from the deepest level up. logvar is clamped to [−30, 20].

Keys, shapes and order are the official `AutoencoderKL`'s, so `kl16.ckpt` loads (its "model"
entry); as the official wrapper, extra keys in the file are ignored, missing ones refused.
The blocks are the LDM blocks of genzoo.tokenizers.vq_model (the same layout).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.tokenizers.base import Generators, Tokenizer, gaussian_noise
from genzoo.tokenizers.vq_model import (
    GROUPS,
    AttnBlock,
    Downsample,
    ResnetBlock,
    Upsample,
    group_norm,
    swish,
)
from genzoo.zoo.kinds import refuse_other_kind
from genzoo.zoo.official import read_state_dict, where_of

ATTENTION_RESOLUTION = 16  # the encoder level at this running resolution has attention


@dataclass
class MARVAEConfig:
    """The tokenizer section for `mar-kl16`: the weights file and the official arguments."""

    kind: ClassVar[str] = "mar-kl16"
    source: str = ""  # kl16.ckpt (its "model" entry) or a .safetensors state dict
    embed_dim: int = 16
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    ch: int = 128
    resolution: int = 256
    scale: float = 0.2325


def check_vae_args(embed_dim: int, ch_mult: tuple[int, ...], ch: int, resolution: int) -> None:
    for name, value in (("embed_dim", embed_dim), ("ch", ch), ("resolution", resolution)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"mar-kl16: {name} must be a positive integer, got {value!r}")
    if not ch_mult or min(ch_mult) < 1:
        raise GenzooError(f"mar-kl16: ch_mult must be positive integers, got {ch_mult!r}")
    widths = sorted({ch * m for m in ch_mult})
    if any(w % GROUPS for w in widths):
        raise GenzooError(
            f"mar-kl16: widths {widths} (ch × ch_mult) must be multiples of {GROUPS}, the "
            "GroupNorm group count"
        )


class VAELevel(nn.Module):
    """One resolution: `block` residual blocks, `attn` after each (when present), resampling."""

    def __init__(self, in_ch: int, out_ch: int, blocks: int, attention: bool, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, 0.0) for i in range(blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(blocks if attention else 0))
        self.resample = resample
        if resample == "downsample":
            self.downsample = Downsample(out_ch)
        elif resample == "upsample":
            self.upsample = Upsample(out_ch)

    def forward(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return getattr(self, self.resample)(h) if self.resample else h


class VAEMiddle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, 0.0)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, 0.0)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class VAEEncoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], z_channels: int, resolution: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        widths, last, res = [ch] + [ch * m for m in ch_mult], len(ch_mult) - 1, resolution
        self.down = nn.ModuleList()
        for i in range(len(ch_mult)):
            resample = "downsample" if i != last else None
            self.down.append(VAELevel(widths[i], widths[i + 1], 2, res == ATTENTION_RESOLUTION,
                                      resample))  # fmt: skip
            res = res // 2 if resample else res
        self.mid = VAEMiddle(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class VAEDecoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], z_channels: int):
        super().__init__()
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = VAEMiddle(width)
        levels = []
        for i in reversed(range(len(ch_mult))):  # built deepest first, stored by level index
            levels.insert(0, VAELevel(width, ch * ch_mult[i], 3, False,
                                      "upsample" if i != 0 else None))  # fmt: skip
            width = ch * ch_mult[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoencoderKL16(nn.Module):
    """The official `AutoencoderKL(embed_dim, ch_mult)` network (variational)."""

    def __init__(self, embed_dim: int = 16, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 ch: int = 128, resolution: int = 256):  # fmt: skip
        super().__init__()
        check_vae_args(embed_dim, tuple(ch_mult), ch, resolution)
        self.encoder = VAEEncoder(ch, tuple(ch_mult), embed_dim, resolution)
        self.decoder = VAEDecoder(ch, tuple(ch_mult), embed_dim)
        self.quant_conv = nn.Conv2d(2 * embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, embed_dim, 1)
        self.embed_dim, self.stride = embed_dim, 2 ** (len(ch_mult) - 1)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of q(z | x), unscaled."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z))


class MARVAETokenizer(Tokenizer):
    """Frozen KL-16 VAE: images in [−1, 1] ↔ scaled latents (B, E, H/16, W/16)."""

    Config = MARVAEConfig

    @classmethod
    def from_config(cls, cfg: MARVAEConfig) -> MARVAETokenizer:
        if not cfg.source:
            raise GenzooError(
                "tokenizer 'mar-kl16' needs its weights: --tokenizer mar-kl16:PATH (kl16.ckpt "
                "or a .safetensors state dict)"
            )
        return load_official_mar_vae(
            cfg.source, device="cpu", embed_dim=cfg.embed_dim, ch_mult=tuple(cfg.ch_mult),
            ch=cfg.ch, resolution=cfg.resolution, scale=cfg.scale,
        )  # fmt: skip

    def __init__(self, vae: AutoencoderKL16, scale: float = 0.2325, spec: str = "mar-kl16"):
        super().__init__()
        self.vae, self.spec, self.scale = vae, spec, float(scale)
        self.stride, self.channels = vae.stride, vae.embed_dim
        self.freeze()

    @torch.no_grad()
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std), unscaled, each (B, E, H/s, W/s), for images x in [−1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise GenzooError(f"mar-kl16 encodes RGB images (B, 3, H, W); got {tuple(x.shape)}")
        self.latent_shape(x.shape[-1])  # the side must be a multiple of the stride
        return self.vae.posterior(x)

    @torch.no_grad()
    def encode(self, x: Tensor, generator: Generators = None) -> Tensor:
        """(mean + std·ε)·scale with ε standard normal: from `generator` (one, or one per
        image), or torch's global CPU RNG as the official `sample()` draws it."""
        mean, std = self.posterior(x)
        if generator is None:
            eps = torch.randn(mean.shape).to(mean.device)
        else:
            eps = gaussian_noise(mean.shape, generator, mean.device, torch.float32)
        return (mean + std * eps) * self.scale

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scale)


def infer_mar_vae_args(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The loader arguments these tensor shapes imply: embed_dim, ch, ch_mult, and the
    resolution that puts the encoder's attention where the file has it."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}
    if len(shape.get("post_quant_conv.weight", ())) == 4:
        found["embed_dim"] = shape["post_quant_conv.weight"][0]
    if len(shape.get("encoder.conv_in.weight", ())) == 4:
        ch = found["ch"] = shape["encoder.conv_in.weight"][0]
        levels = sorted({int(k.split(".")[2]) for k in shape if k.startswith("encoder.down.")})
        widths = [shape.get(f"encoder.down.{i}.block.0.conv1.weight", (0,))[0] for i in levels]
        if levels == list(range(len(levels))) and all(w and w % ch == 0 for w in widths):
            found["ch_mult"] = tuple(w // ch for w in widths)
        attention = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in shape]
        if attention:
            found["resolution"] = ATTENTION_RESOLUTION * 2 ** attention[0]
    return found


def load_official_mar_vae(
    weights: str | Path | Mapping[str, Any],
    device: str | torch.device | None = None,
    *,
    embed_dim: int = 16,
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
    ch: int = 128,
    resolution: int = 256,
    scale: float = 0.2325,
) -> MARVAETokenizer:
    """`genzoo.load_official_tokenizer("mar-kl16", weights, embed_dim=16, ch_mult=(1, 1, 2, 2,
    4), ch=128, resolution=256, scale=0.2325)`: a frozen `MARVAETokenizer`.

    `weights`: kl16.ckpt (a dict whose "model" entry is the state dict), a flat `.pt`, a
    `.safetensors` state dict, or a state dict in memory. Every key of the network must be
    present with its shape; extra keys are ignored with a warning (the official wrapper loads
    non-strictly).
    """
    ch_mult = tuple(int(m) for m in ch_mult)
    check_vae_args(embed_dim, ch_mult, ch, resolution)
    state = read_state_dict(weights, entries=("model",))
    where = where_of(weights)
    with torch.device("meta"):
        vae = AutoencoderKL16(embed_dim, ch_mult, ch, resolution)
    expected = shapes_of(vae.state_dict())
    problems = state_dict_problems(expected, {k: v for k, v in shapes_of(state).items()
                                              if k in expected})  # fmt: skip
    if problems:
        refuse_other_kind(state, "mar-kl16", where, "MAR's KL-16 VAE")
        raise GenzooError(
            f"the weights in {where} do not fit the KL-16 VAE(embed_dim={embed_dim}, ch_mult="
            f"{ch_mult}, ch={ch}, resolution={resolution}):\n  " + "\n  ".join(problems)
        )
    extra = sorted(set(state) - set(expected))
    if extra:
        shown = ", ".join(extra[:5]) + (" …" if len(extra) > 5 else "")
        warnings.warn(f"{where}: ignored {len(extra)} key(s) the KL-16 VAE does not use: {shown}",
                      stacklevel=2)  # fmt: skip
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    vae.load_state_dict(
        {k: state[k].to(torch.float32, copy=copy) for k in expected}, strict=True, assign=True
    )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec = "mar-kl16" if isinstance(weights, Mapping) else f"mar-kl16:{weights}"
    return MARVAETokenizer(vae.eval(), scale, spec).to(dev)
