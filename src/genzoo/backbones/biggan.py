"""BigGAN (Brock et al. 2019) in the first author's layout (ajbrock/BigGAN-PyTorch `G_ema.pth`,
`D.pth`): its checkpoints and TF-hub conversions load strictly, without renaming.

G: z is cut into one chunk for the input and one per block ("hierarchical z"); each block's
BatchNorms are conditioned on [shared class embedding, its chunk]. From 4×4, each residual block
does BN → ReLU → 2× nearest up → conv3×3 → BN → ReLU → conv3×3, plus conv1×1 of the upsampled
input; self-attention follows the listed resolutions; the head is BN → ReLU → conv3×3 → tanh.
Every conv and linear is spectrally normalised (the shared embedding is not).
D: residual blocks with 2×2 average pooling, self-attention after the listed blocks, ReLU, a sum
over space, then the projection linear(h) + ⟨embed(y), h⟩.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.conditional_bn import NORM_STYLES, ClassConditionalBatchNorm, StoredStatsBatchNorm
from genzoo.nn.spectral_norm import SNConv2d, SNEmbedding, SNLinear

# Width multipliers of ch per block: (in, out). Block i of G outputs resolution 8·2^i.
G_WIDTHS = {
    32: ((4, 4, 4), (4, 4, 4)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
    512: ((16, 16, 8, 8, 4, 2, 1), (16, 8, 8, 4, 2, 1, 1)),
}
# D: (out multipliers, downsampling blocks, the resolution label each block's attention
# switch is looked up by). Inputs: 3 channels, then the previous block's output.
D_WIDTHS = {
    32: ((4, 4, 4, 4), 2, (16, 16, 16, 16)),
    64: ((1, 2, 4, 8, 16), 4, (32, 16, 8, 4, 4)),
    128: ((1, 2, 4, 8, 16, 16), 5, (64, 32, 16, 8, 4, 4)),
    256: ((1, 2, 4, 8, 8, 16, 16), 6, (128, 64, 32, 16, 8, 4, 4)),
    512: ((1, 1, 2, 4, 8, 8, 16, 16), 7, (256, 128, 64, 32, 16, 8, 4, 4)),
}
INITS = ("ortho", "N02", "xavier", "none")


@dataclass
class BigGANConfig:
    """A BigGAN G and D. Defaults: the paper's 128-px model (as released by its first author)."""

    resolution: int = 128  # 32 | 64 | 128 | 256 | 512
    num_classes: int = 1000
    g_ch: int = 96  # width multiplier of G (official G_ch)
    d_ch: int = 96  # width multiplier of D (official D_ch)
    dim_z: int = 120  # with hier, rounded down to a multiple of (blocks + 1)
    shared_dim: int = 128  # shared class embedding; 0 means dim_z (official convention)
    hier: bool = True  # one z chunk per block, concatenated to the class embedding
    g_shared: bool = True  # False: each BN has its own class-embedding tables, no z chunks
    g_attn: str = "64"  # "_"-separated resolutions with self-attention in G ("0": none)
    d_attn: str = "64"  # same for D, by the resolution labels of D_WIDTHS
    d_wide: bool = True  # D's hidden width = its output width (SA-GAN / BigGAN)
    bottom_width: int = 4
    bn_eps: float = 1e-5
    sn_eps: float = 1e-6  # the released run; the official constructor default is 1e-12
    g_spectral: bool = True  # official G_param "SN"; D is always spectrally normalised
    norm_style: str = "bn"  # "bn" | "in" | "nonorm"
    g_num_svs: int = 1
    g_num_sv_itrs: int = 1
    d_num_svs: int = 1
    d_num_sv_itrs: int = 1
    init: str = "ortho"  # "ortho" | "N02" | "xavier" | "none"


# genzoo presets. 128 is the released recipe; 32 and 64 follow the same design at smaller
# widths (no released weights); tiny is for tests and CPU demos.
_TINY = {"resolution": 32, "num_classes": 10, "g_ch": 4, "d_ch": 4, "dim_z": 16, "shared_dim": 8}
PRESETS = {
    "biggan-128": BigGANConfig(),
    "biggan-64": BigGANConfig(resolution=64, g_ch=64, d_ch=64, g_attn="32", d_attn="32"),
    "biggan-32": BigGANConfig(
        resolution=32, g_ch=64, d_ch=64, dim_z=128, hier=False, g_attn="0", d_attn="0"
    ),
    "biggan-tiny": BigGANConfig(**_TINY, g_attn="16", d_attn="16"),
}


def biggan_preset(name: str, **overrides) -> BigGANConfig:
    """A fresh config of a preset (`biggan-32`, `biggan-64`, `biggan-128`, `biggan-tiny`)."""
    if name not in PRESETS:
        raise GenzooError(f"unknown BigGAN preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def parse_resolutions(spec: str, where: str) -> set[int]:
    """'32_64' -> {32, 64}; resolutions that no block has are ignored, as the official code does."""
    try:
        return {int(item) for item in str(spec).split("_")}
    except ValueError:
        raise GenzooError(
            f"{where}={spec!r} is not a list of resolutions; write them joined by '_', "
            "e.g. '64' or '32_64' ('0' for none)"
        ) from None


def check_biggan_config(cfg: BigGANConfig) -> None:
    """Raise GenzooError naming the first field that cannot build a BigGAN."""
    choices = {"resolution": tuple(G_WIDTHS), "norm_style": NORM_STYLES, "init": INITS}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise GenzooError(
                f"model.{name}={getattr(cfg, name)!r} is not a BigGAN choice; use one of "
                + ", ".join(map(str, allowed))
            )
    counts = ("num_classes", "g_ch", "d_ch", "dim_z", "bottom_width", "g_num_svs")
    for name in (*counts, "g_num_sv_itrs", "d_num_svs", "d_num_sv_itrs"):
        if int(getattr(cfg, name)) < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {getattr(cfg, name)}")
    if cfg.hier and not cfg.g_shared:
        raise GenzooError(
            "model.hier=True needs model.g_shared=True: the z chunks are concatenated to the "
            "shared class embedding"
        )
    if cfg.hier and cfg.dim_z < len(G_WIDTHS[cfg.resolution][0]) + 1:
        raise GenzooError(
            f"model.dim_z={cfg.dim_z} is too small to give each of the "
            f"{len(G_WIDTHS[cfg.resolution][0]) + 1} hierarchical slots a chunk"
        )
    parse_resolutions(cfg.g_attn, "model.g_attn")
    parse_resolutions(cfg.d_attn, "model.d_attn")


def init_weights(module: nn.Module, style: str) -> None:
    """The official initialisation of every conv, linear and embedding weight (SN ones too)."""
    if style == "none":
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
            if style == "ortho":
                nn.init.orthogonal_(m.weight)
            elif style == "N02":
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                nn.init.xavier_uniform_(m.weight)


def self_attention(
    x: Tensor, theta: nn.Module, phi: nn.Module, g: nn.Module, o: nn.Module, gamma: Tensor
) -> Tensor:
    """SA-GAN's non-local block: x + γ·o(g softmax(θᵀφ)ᵀ), with φ and g max-pooled 2×2 and the
    logits not scaled by 1/√d. θ, φ have C/8 channels, g has C/2."""
    n, c, h, w = x.shape
    queries = theta(x).view(n, c // 8, h * w)
    keys = F.max_pool2d(phi(x), 2).view(n, c // 8, h * w // 4)
    values = F.max_pool2d(g(x), 2).view(n, c // 2, h * w // 4)
    beta = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (N, HW, HW/4)
    out = o((values @ beta.transpose(1, 2)).view(n, c // 2, h, w))
    return x + gamma * out


class SelfAttention(nn.Module):
    """Keys theta, phi, g, o (bias-free 1×1 convs) and the scalar gain gamma (initially 0)."""

    def __init__(self, ch: int, conv: Callable[..., nn.Module]):
        super().__init__()
        one_by_one = functools.partial(conv, kernel_size=1, padding=0, bias=False)
        self.theta = one_by_one(ch, ch // 8)
        self.phi = one_by_one(ch, ch // 8)
        self.g = one_by_one(ch, ch // 2)
        self.o = one_by_one(ch // 2, ch)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self_attention(x, self.theta, self.phi, self.g, self.o, self.gamma)


class GBlock(nn.Module):
    """BN(c) → ReLU → up → conv → BN(c) → ReLU → conv, plus conv1×1(up(x))."""

    def __init__(self, in_ch: int, out_ch: int, conv: Callable, bn: Callable):
        super().__init__()
        self.conv1 = conv(in_ch, out_ch)
        self.conv2 = conv(out_ch, out_ch)
        self.conv_sc = conv(in_ch, out_ch, kernel_size=1, padding=0)  # G always upsamples
        self.bn1 = bn(in_ch)
        self.bn2 = bn(out_ch)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)
        x = F.interpolate(x, scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.conv_sc(x)


class BigGANGenerator(nn.Module):
    """forward(z (N, dim_z), y (N,) long labels, truncation ignored) -> images (N, 3, R, R)."""

    def __init__(self, cfg: BigGANConfig, *, skip_init: bool = False):
        super().__init__()
        check_biggan_config(cfg)
        self.cfg = cfg
        ins, outs = G_WIDTHS[cfg.resolution]
        ins, outs = [cfg.g_ch * m for m in ins], [cfg.g_ch * m for m in outs]
        self.num_slots = len(ins) + 1 if cfg.hier else 1
        self.chunk = cfg.dim_z // self.num_slots if cfg.hier else 0
        self.dim_z = self.chunk * self.num_slots if cfg.hier else cfg.dim_z
        self.shared_dim = cfg.shared_dim if cfg.shared_dim > 0 else cfg.dim_z
        self.bottom_width = cfg.bottom_width
        if cfg.g_spectral:
            sn = {"num_svs": cfg.g_num_svs, "num_itrs": cfg.g_num_sv_itrs, "eps": cfg.sn_eps}
            conv = functools.partial(SNConv2d, kernel_size=3, padding=1, **sn)
            linear = functools.partial(SNLinear, **sn)
        else:
            conv = functools.partial(nn.Conv2d, kernel_size=3, padding=1)
            linear = nn.Linear
        # BN gains and biases: bias-free linears of [shared(y), z chunk], or per-BN tables.
        if cfg.g_shared:
            self.shared = nn.Embedding(cfg.num_classes, self.shared_dim)  # no SN, on purpose
            projection = functools.partial(linear, self.shared_dim + self.chunk, bias=False)
        else:
            self.shared = None
            projection = functools.partial(nn.Embedding, cfg.num_classes)

        def bn(channels: int) -> nn.Module:
            return ClassConditionalBatchNorm(
                channels,
                projection(channels),
                projection(channels),
                eps=cfg.bn_eps,
                norm_style=cfg.norm_style,
            )

        self.linear = linear(self.dim_z // self.num_slots, ins[0] * cfg.bottom_width**2)
        attn = parse_resolutions(cfg.g_attn, "model.g_attn")
        blocks = []
        for i, (cin, cout) in enumerate(zip(ins, outs, strict=True)):
            stage: list[nn.Module] = [GBlock(cin, cout, conv, bn)]
            if 8 * 2**i in attn:
                stage.append(SelfAttention(cout, conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        # The official head BN takes no eps argument: always 1e-5, whatever BN_eps is.
        self.output_layer = nn.Sequential(
            StoredStatsBatchNorm(outs[-1]), nn.ReLU(), conv(outs[-1], 3)
        )
        if not skip_init:
            init_weights(self, cfg.init)

    def embed(self, y: Tensor) -> Tensor:
        """Labels -> the class input the blocks see (the shared embedding, or the labels)."""
        return y if self.shared is None else self.shared(y)

    def generate(self, z: Tensor, e: Tensor) -> Tensor:
        """The official `Generator.forward(z, e)`: e is the already embedded class."""
        if self.cfg.hier:
            first, *chunks = torch.split(z, self.chunk, dim=1)
            conds = [torch.cat([e, chunk], dim=1) for chunk in chunks]  # class embedding first
        else:
            first, conds = z, [e] * len(self.blocks)
        h = self.linear(first)
        h = h.view(h.shape[0], -1, self.bottom_width, self.bottom_width)  # channel-major
        for stage, c in zip(self.blocks, conds, strict=True):
            for layer in stage:
                h = layer(h, c)
        return torch.tanh(self.output_layer(h))

    def forward(self, z: Tensor, y: Tensor, truncation: float = 1.0) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.dim_z or y.shape[:1] != z.shape[:1]:
            raise GenzooError(
                f"BigGAN generator: got z {tuple(z.shape)} and y {tuple(y.shape)}; expected z "
                f"(N, {self.dim_z}) and N labels"
            )
        return self.generate(z, self.embed(y))


class DBlock(nn.Module):
    """[ReLU] → conv → ReLU → conv → [pool], plus a shortcut: pool then conv1×1 in the first
    block (raw image input), conv1×1 then pool in the later, pre-activated ones."""

    def __init__(
        self, in_ch: int, out_ch: int, conv: Callable, *, wide: bool, preact: bool, down: bool
    ):
        super().__init__()
        hidden = out_ch if wide else in_ch
        self.preact, self.down = preact, down
        self.conv1 = conv(in_ch, hidden)
        self.conv2 = conv(hidden, out_ch)
        self.learnable_sc = in_ch != out_ch or down
        if self.learnable_sc:
            self.conv_sc = conv(in_ch, out_ch, kernel_size=1, padding=0)

    def shortcut(self, x: Tensor) -> Tensor:
        if self.preact:
            x = self.conv_sc(x) if self.learnable_sc else x
            return F.avg_pool2d(x, 2) if self.down else x
        x = F.avg_pool2d(x, 2) if self.down else x
        return self.conv_sc(x) if self.learnable_sc else x

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = F.relu(x) if self.preact else x  # out of place: x also feeds the shortcut
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


class BigGANDiscriminator(nn.Module):
    """forward(x (N, 3, R, R) in [-1, 1], y (N,) long) -> logits (N, output_dim)."""

    def __init__(self, cfg: BigGANConfig, *, output_dim: int = 1, skip_init: bool = False):
        super().__init__()
        check_biggan_config(cfg)
        self.cfg = cfg
        widths, downsampling, labels = D_WIDTHS[cfg.resolution]
        outs = [cfg.d_ch * m for m in widths]
        ins = [3, *outs[:-1]]
        sn = {"num_svs": cfg.d_num_svs, "num_itrs": cfg.d_num_sv_itrs, "eps": cfg.sn_eps}
        conv = functools.partial(SNConv2d, kernel_size=3, padding=1, **sn)
        attn = parse_resolutions(cfg.d_attn, "model.d_attn")
        blocks = []
        for i, (cin, cout) in enumerate(zip(ins, outs, strict=True)):
            block = DBlock(cin, cout, conv, wide=cfg.d_wide, preact=i > 0, down=i < downsampling)
            stage: list[nn.Module] = [block]
            if labels[i] in attn:
                stage.append(SelfAttention(cout, conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self.linear = SNLinear(outs[-1], output_dim, **sn)
        self.embed = SNEmbedding(cfg.num_classes, outs[-1], **sn)
        if not skip_init:
            init_weights(self, cfg.init)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or y.shape[:1] != x.shape[:1]:
            raise GenzooError(
                f"BigGAN discriminator: got x {tuple(x.shape)} and y {tuple(y.shape)}; "
                "expected images (N, 3, H, W) and N labels"
            )
        h = x
        for stage in self.blocks:
            for layer in stage:
                h = layer(h)
        h = F.relu(h).sum(dim=(2, 3))  # sum pooling, as in SN-GAN
        return self.linear(h) + (self.embed(y) * h).sum(dim=1, keepdim=True)


class BigGAN(BigGANGenerator):
    """The `biggan` backbone: the generator, which the trainer averages (EMA) and samples. Its
    discriminator is the GAN family's own module (`GAN.auxiliary` builds it with
    `make_discriminator`), so checkpoints hold G, its EMA and D apart, as BigGAN's do."""

    Config = BigGANConfig

    @staticmethod
    def resolve(cfg: BigGANConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Fill what follows from the data (resolution, classes); BigGAN makes RGB pixels."""
        if getattr(tokenizer, "stride", 1) != 1 or getattr(tokenizer, "channels", 3) != 3:
            raise GenzooError("BigGAN generates RGB pixels: use the 'pixels' tokenizer")
        cfg.resolution, cfg.num_classes = res, num_classes
        check_biggan_config(cfg)

    @staticmethod
    def make_discriminator(cfg: BigGANConfig) -> BigGANDiscriminator:
        return BigGANDiscriminator(cfg)

    def __init__(self, cfg: BigGANConfig):
        super().__init__(cfg)
