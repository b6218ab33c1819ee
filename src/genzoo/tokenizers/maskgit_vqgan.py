"""The MaskGIT VQGAN (Chang et al. 2022) as ported by 1d-tokenizer: the tokenizer of RAR and of
the MaskGIT generators (`maskgit-vqgan-imagenet-f16-256.bin`).

    tok = load_maskgit_vqgan("maskgit-vqgan-imagenet-f16-256.bin")   # published config
    ids = tok.encode(x)          # x in [-1, 1] → (B, H/16, W/16) long, raster order
    images = tok.decode(ids)     # → [-1, 1]

A convolutional VQGAN without attention: residual blocks of GroupNorm(32, eps 1e-6) → SiLU →
3×3 conv (no bias), twice (dropout before the second conv); when the width changes, a 1×1
shortcut acts on the *branch output* (h + W·h). The encoder average-pools between levels, the
decoder upsamples nearest ×2 then a 3×3 conv. Convolutions pad TF-style ("same"). The
quantiser picks argmin ‖z‖² + ‖e‖² − 2 z·e.

The official model works on [0, 1] images on both sides and clamps its output to [0, 1]; this
tokenizer maps at the boundary: x → (x + 1)/2 before encoding, output o → 2o − 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.tokenizers.base import Generators, Tokenizer
from genzoo.zoo.kinds import refuse_other_kind
from genzoo.zoo.official import read_state_dict, where_of


@dataclass
class MaskGITVQGANConfig:
    """The official constructor fields; defaults are the published f16 tokenizer's."""

    num_embeddings: int = 1024
    embedding_dim: int = 256
    commitment_cost: float = 0.25  # training only
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_resolutions: int = 5
    dropout: float = 0.0
    hidden_channels: int = 128
    num_channels: int = 3
    num_res_blocks: int = 2
    resolution: int = 256  # the training resolution (any multiple of the stride works)
    z_channels: int = 256


OFFICIAL_ARGS = tuple(MaskGITVQGANConfig.__dataclass_fields__)


def check_vqgan_config(cfg: MaskGITVQGANConfig) -> None:
    """GenzooError naming the first field that cannot build the VQGAN."""
    if len(cfg.channel_mult) != cfg.num_resolutions:
        raise GenzooError(
            f"channel_mult={tuple(cfg.channel_mult)} has {len(cfg.channel_mult)} levels but "
            f"num_resolutions={cfg.num_resolutions}; give one multiplier per resolution"
        )
    widths = [cfg.hidden_channels * m for m in cfg.channel_mult]
    if any(w % 32 for w in widths) or min(widths, default=0) < 32:
        raise GenzooError(
            f"hidden_channels={cfg.hidden_channels} × channel_mult={tuple(cfg.channel_mult)} "
            "must give widths divisible by 32 (GroupNorm uses 32 groups)"
        )
    if cfg.embedding_dim != cfg.z_channels:
        raise GenzooError(
            f"embedding_dim={cfg.embedding_dim} must equal z_channels={cfg.z_channels} (the "
            "codes replace the encoder output directly)"
        )
    for name in ("num_embeddings", "num_resolutions", "num_res_blocks", "num_channels"):
        if getattr(cfg, name) < 1:
            raise GenzooError(f"{name} must be >= 1, got {getattr(cfg, name)}")


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding: total pad max((⌈i/s⌉−1)·s + (k−1)·d + 1
    − i, 0) per axis, the smaller half first."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for i, k, s, d in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              self.dilation[::-1]):  # fmt: skip
            total = max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = Conv2dSame(c_in, c_out, 3, bias=False)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv2dSame(c_out, c_out, 3, bias=False)
        if c_in != c_out:  # out → out: it maps the branch output, not the input
            self.nin_shortcut = Conv2dSame(c_out, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (self.nin_shortcut(h) if hasattr(self, "nin_shortcut") else x)


def res_blocks(c_in: int, c_out: int, cfg: MaskGITVQGANConfig) -> nn.ModuleList:
    widths = [c_in] + [c_out] * cfg.num_res_blocks
    return nn.ModuleList(ResnetBlock(a, b, cfg.dropout) for a, b in zip(widths, widths[1:]))


class Encoder(nn.Module):
    def __init__(self, cfg: MaskGITVQGANConfig):
        super().__init__()
        hc, mult = cfg.hidden_channels, tuple(cfg.channel_mult)
        self.conv_in = Conv2dSame(cfg.num_channels, hc, 3, bias=False)
        self.down = nn.ModuleList()
        for level, (m_in, m_out) in enumerate(zip((1, *mult), mult)):
            stage = nn.Module()
            stage.block = res_blocks(hc * m_in, hc * m_out, cfg)
            stage.pool = level != cfg.num_resolutions - 1
            self.down.append(stage)
        width = hc * mult[-1]
        self.mid = res_blocks(width, width, cfg)
        self.norm_out = group_norm(width)
        self.conv_out = Conv2dSame(width, cfg.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if stage.pool:
                h = F.avg_pool2d(h, kernel_size=2, stride=2)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: MaskGITVQGANConfig):
        super().__init__()
        hc, mult = cfg.hidden_channels, tuple(cfg.channel_mult)
        width = hc * mult[-1]
        self.conv_in = Conv2dSame(cfg.z_channels, width, 3)
        self.mid = res_blocks(width, width, cfg)
        self.up = nn.ModuleList()  # index = resolution level, 0 = full resolution
        for level in range(cfg.num_resolutions):
            stage = nn.Module()
            m_in = mult[-1] if level == cfg.num_resolutions - 1 else mult[level + 1]
            stage.block = res_blocks(hc * m_in, hc * mult[level], cfg)
            if level != 0:
                stage.upsample_conv = Conv2dSame(hc * mult[level], hc * mult[level], 3)
            self.up.append(stage)
        self.norm_out = group_norm(hc * mult[0])
        self.conv_out = Conv2dSame(hc * mult[0], cfg.num_channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for stage in reversed(self.up):  # from the lowest resolution up
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample_conv"):
                h = stage.upsample_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: MaskGITVQGANConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.num_embeddings, cfg.embedding_dim)

    def ids(self, z: Tensor) -> Tensor:
        """Nearest code per position of z (B, C, h, w) → (B, h, w), distances in the official
        form ‖z‖² + ‖e‖² − 2 z·e (one addmm)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).contiguous().reshape(-1, c)
        codes = self.embedding.weight.t()
        base = flat.pow(2.0).sum(dim=1, keepdim=True) + codes.pow(2.0).sum(dim=0, keepdim=True)
        return torch.addmm(base, flat, codes, alpha=-2.0).argmin(dim=1).reshape(b, h, w)

    def lookup(self, ids: Tensor) -> Tensor:
        """Codes of ids (B, h, w) as (B, C, h, w), a channels-last view as the official one."""
        b, h, w = ids.shape
        return self.embedding(ids.reshape(b, -1)).reshape(b, h, w, -1).permute(0, 3, 1, 2)


class MaskGITVQGAN(nn.Module):
    """encoder / decoder / quantize, the official key layout; [0, 1] images on both sides."""

    def __init__(self, cfg: MaskGITVQGANConfig):
        super().__init__()
        check_vqgan_config(cfg)
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)


# -- the tokenizer ---------------------------------------------------------------------------------


@dataclass
class MaskGITVQGANTokenizerConfig:
    kind: ClassVar[str] = "maskgit-vqgan"
    source: str = ""  # the weights file (.bin / .safetensors); sizes are read from its shapes


class MaskGITVQGANTokenizer(Tokenizer):
    """Frozen discrete tokenizer: images in [-1, 1] ↔ code ids (B, h, w)."""

    Config = MaskGITVQGANTokenizerConfig
    discrete = True
    scale = 1.0

    @classmethod
    def from_config(cls, cfg: MaskGITVQGANTokenizerConfig) -> MaskGITVQGANTokenizer:
        if not cfg.source:
            raise GenzooError(
                "tokenizer 'maskgit-vqgan' needs a source: maskgit-vqgan:FILE (e.g. "
                "maskgit-vqgan-imagenet-f16-256.bin)"
            )
        state = read_state_dict(Path(cfg.source).expanduser())
        model = build_maskgit_vqgan(state, infer_vqgan_config(state), where_of(cfg.source))
        return cls(model, spec=f"maskgit-vqgan:{cfg.source}")

    def __init__(self, model: MaskGITVQGAN, spec: str = "maskgit-vqgan") -> None:
        super().__init__()
        self.model, self.spec = model, spec
        self.stride = 2 ** (model.cfg.num_resolutions - 1)
        self.channels = model.cfg.embedding_dim
        self.vocab_size = model.cfg.num_embeddings
        self.freeze()

    def latent_shape(self, res: int) -> tuple[int, int]:
        """(h, w) of the id grid of a res × res image."""
        _, h, w = super().latent_shape(res)
        return (h, w)

    @torch.no_grad()
    def encode(self, x: Tensor, generator: Generators = None) -> Tensor:
        """Images float NCHW in [-1, 1] → ids (B, H/stride, W/stride) long. No randomness."""
        c = self.model.cfg.num_channels
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise GenzooError(
                f"tokenizer {self.spec}: encode expects images (B, {c}, H, W) with H and W "
                f"multiples of {self.stride}; got shape {tuple(x.shape)}"
            )
        x = (x.to(self.model.quantize.embedding.weight.dtype) + 1) / 2  # the official [0, 1]
        return self.model.quantize.ids(self.model.encoder(x))

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """Ids (B, h, w), or (B, h·w) for a square grid → images in [-1, 1] (the official
        output, clamped to [0, 1], mapped by 2o − 1)."""
        ids = self.check_ids(ids)
        images = self.model.decoder(self.model.quantize.lookup(ids)).clamp(0.0, 1.0)
        return images * 2 - 1

    def check_ids(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.ndim not in (2, 3):
            raise GenzooError(
                f"tokenizer {self.spec}: decode takes integer ids (B, h, w) or (B, h·w), got "
                f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}"
            )
        if ids.ndim == 2:
            side = math.isqrt(ids.shape[1])
            if side * side != ids.shape[1]:
                raise GenzooError(
                    f"tokenizer {self.spec}: {ids.shape[1]} ids per image is not a square grid; "
                    "pass ids of shape (B, h, w)"
                )
            ids = ids.reshape(ids.shape[0], side, side)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise GenzooError(
                f"tokenizer {self.spec}: ids {int(ids.min())}..{int(ids.max())} are outside the "
                f"codebook [0, {self.vocab_size}); use ids from this tokenizer"
            )
        return ids.long()


# -- official weights ------------------------------------------------------------------------------


def infer_vqgan_config(state: Mapping[str, Tensor]) -> MaskGITVQGANConfig:
    """The configuration these tensor shapes imply (defaults for what shapes do not show)."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}
    if len(shape.get("encoder.conv_in.weight", ())) == 4:
        found["hidden_channels"], found["num_channels"] = shape["encoder.conv_in.weight"][:2]
    if len(shape.get("quantize.embedding.weight", ())) == 2:
        found["num_embeddings"], found["embedding_dim"] = shape["quantize.embedding.weight"]
    if len(shape.get("encoder.conv_out.weight", ())) == 4:
        found["z_channels"] = shape["encoder.conv_out.weight"][0]
    first = re.compile(r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    widths = {int(m.group(1)): shape[k][0] for k in shape if (m := first.fullmatch(k))}
    if widths and sorted(widths) == list(range(len(widths))) and "hidden_channels" in found:
        found["num_resolutions"] = len(widths)
        found["channel_mult"] = tuple(widths[i] // found["hidden_channels"] for i in sorted(widths))
    blocks = {
        int(m.group(1)) for k in shape if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))
    }
    if blocks:
        found["num_res_blocks"] = max(blocks) + 1
    return MaskGITVQGANConfig(**found)


def build_maskgit_vqgan(
    state: Mapping[str, Tensor], cfg: MaskGITVQGANConfig, where: str = "the given state dict"
) -> MaskGITVQGAN:
    """A MaskGITVQGAN holding `state` (strict), float32 on CPU, in eval mode."""
    check_vqgan_config(cfg)
    with torch.device("meta"):  # shapes only: the file's tensors become the parameters
        model = MaskGITVQGAN(cfg)
    problems = state_dict_problems(shapes_of(model.state_dict()), shapes_of(state))
    if problems:
        refuse_other_kind(state, "maskgit-vqgan", where, "MaskGIT VQGAN weights")
        seen = {k: v for k, v in asdict(infer_vqgan_config(state)).items() if v != getattr(cfg, k)}
        hint = ", ".join(f"{k}={v!r}" for k, v in seen.items())
        raise GenzooError(
            f"the weights in {where} do not fit the MaskGIT VQGAN({asdict(cfg)}):\n  "
            + "\n  ".join(problems)
            + (f"\nThe file's shapes suggest {hint}." if hint else "")
        )
    tensors = {k: state[k].to("cpu", torch.float32, copy=True) for k in state}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def load_maskgit_vqgan(
    weights: str | Path | Mapping[str, Any], device: str | torch.device | None = None, **kwargs: Any
) -> MaskGITVQGANTokenizer:
    """`genzoo.load_official_tokenizer("maskgit-vqgan", weights, **kw)`: the released file
    (`maskgit-vqgan-imagenet-f16-256.bin`, a plain state dict), a .safetensors file or a state
    dict. kw: the official fields (num_embeddings, embedding_dim, commitment_cost,
    channel_mult, num_resolutions, dropout, hidden_channels, num_channels, num_res_blocks,
    resolution, z_channels); defaults are the published values."""
    unknown = sorted(set(kwargs) - set(OFFICIAL_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown MaskGIT VQGAN argument(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(OFFICIAL_ARGS)}"
        )
    if "channel_mult" in kwargs:
        kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    cfg = MaskGITVQGANConfig(**kwargs)
    check_vqgan_config(cfg)  # the arguments first, before reading a large file
    model = build_maskgit_vqgan(read_state_dict(weights), cfg, where_of(weights))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return MaskGITVQGANTokenizer(model).to(dev)
