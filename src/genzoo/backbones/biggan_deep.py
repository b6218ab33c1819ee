"""BigGAN-deep generator in the layout of the HF port of DeepMind's TF-hub modules.

The state-dict keys are those of `pytorch-pretrained-BigGAN` (`embeddings.*`, `generator.*`),
so its `pytorch_model.bin` files load strictly. Differences from BigGAN (genzoo.backbones.biggan):

* the class enters as a float class vector (one-hot, or a mixture) through a bias-free linear;
  the condition is cat(z, embedding), z first, and the whole vector feeds every BatchNorm;
* two bottleneck blocks per resolution (1×1 down to C/4, two 3×3, 1×1 up), the skip keeping the
  first half of the channels when the width halves;
* every BatchNorm holds one row of statistics per truncation value on the grid 0, 0.02, …, 1,
  and the sampling truncation selects (or blends) rows: there is no batch-statistics mode;
* spectral norm is torch's `nn.utils.spectral_norm` (weight_orig, weight_u, weight_v): σ = uᵀWv
  from the stored vectors in eval; in training mode one power step first updates u and v;
* conv_to_rgb has C outputs, of which only the first three are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.backbones.biggan import self_attention
from genzoo.errors import GenzooError

# (upsample, in multiplier, out multiplier) of each block, by output resolution.
_FIRST = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8)]
RELEASED_LAYERS = {
    128: [*_FIRST, (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)],
    256: [
        *_FIRST,
        (True, 8, 8),
        (False, 8, 8),
        (True, 8, 4),
        (False, 4, 4),
        (True, 4, 2),
        (False, 2, 2),
        (True, 2, 1),
    ],
}
RELEASED_LAYERS[512] = [*RELEASED_LAYERS[256], (False, 1, 1), (True, 1, 1)]


@dataclass
class BigGANDeepConfig:
    """The HF `BigGANConfig` fields; defaults are its defaults (the 128-px release)."""

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128  # recorded by the official config; its embedding has z_dim outputs
    channel_width: int = 128
    num_classes: int = 1000
    layers: list[tuple[bool, int, int]] = field(default_factory=lambda: RELEASED_LAYERS[128])
    attention_layer_position: int = 8  # attention goes before this config layer
    eps: float = 1e-4  # spectral-norm and BatchNorm epsilon
    n_stats: int = 51  # rows of BN statistics: truncation 0, 1/(n−1), …, 1


def sn(module: nn.Module, eps: float) -> nn.Module:
    return nn.utils.spectral_norm(module, eps=eps)


def check_truncation(truncation: float) -> float:
    t = float(truncation)
    if not 0.0 < t <= 1.0:
        raise GenzooError(
            f"truncation={truncation} is outside (0, 1]: BigGAN-deep holds BatchNorm statistics "
            "for truncations in (0, 1] only; pass e.g. truncation=0.4 or 1.0"
        )
    return t


class TruncationBatchNorm(nn.Module):
    """BatchNorm whose statistics are chosen by the sampling truncation t.

    t / step (step = 1/(n_stats − 1)) splits into an integer row i and a fraction f; f = 0 uses
    row i, else mean = f·row_i + (1 − f)·row_{i+1} (and the same for the variance). The weights
    are the reverse of a linear interpolation: the official port does it so, and its outputs
    depend on it. Conditional: (x − mean)/√(var + eps)·(1 + scale(c)) + offset(c).
    """

    def __init__(self, channels: int, cond_dim: int | None, n_stats: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        self.step_size = 1.0 / (n_stats - 1)
        self.conditional = cond_dim is not None
        if self.conditional:
            self.scale = sn(nn.Linear(cond_dim, channels, bias=False), eps)
            self.offset = sn(nn.Linear(cond_dim, channels, bias=False), eps)
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def statistics(self, truncation: float) -> tuple[Tensor, Tensor]:
        fraction, row = math.modf(truncation / self.step_size)
        row = int(row)
        if fraction == 0.0:
            return self.running_means[row], self.running_vars[row]
        mean = self.running_means[row] * fraction + self.running_means[row + 1] * (1 - fraction)
        var = self.running_vars[row] * fraction + self.running_vars[row + 1] * (1 - fraction)
        return mean, var

    def forward(self, x: Tensor, truncation: float, c: Tensor | None = None) -> Tensor:
        mean, var = self.statistics(truncation)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        gain = 1 + self.scale(c)[:, :, None, None]
        shift = self.offset(c)[:, :, None, None]
        return (x - mean) / torch.sqrt(var + self.eps) * gain + shift


class DeepSelfAttention(nn.Module):
    """The same non-local block as BigGAN's, under the port's key names (gamma of shape (1,))."""

    def __init__(self, ch: int, eps: float):
        super().__init__()
        self.snconv1x1_theta = sn(nn.Conv2d(ch, ch // 8, 1, bias=False), eps)
        self.snconv1x1_phi = sn(nn.Conv2d(ch, ch // 8, 1, bias=False), eps)
        self.snconv1x1_g = sn(nn.Conv2d(ch, ch // 2, 1, bias=False), eps)
        self.snconv1x1_o_conv = sn(nn.Conv2d(ch // 2, ch, 1, bias=False), eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self_attention(
            x,
            self.snconv1x1_theta,
            self.snconv1x1_phi,
            self.snconv1x1_g,
            self.snconv1x1_o_conv,
            self.gamma,
        )


class GenBlock(nn.Module):
    """Bottleneck residual block: (BN(c) → ReLU → conv) × 4 with 1×1, 3×3, 3×3, 1×1 kernels and
    the optional 2× upsampling before the first 3×3."""

    def __init__(
        self, in_ch: int, out_ch: int, cond_dim: int, upsample: bool, n_stats: int, eps: float
    ):
        super().__init__()
        mid = in_ch // 4
        self.upsample, self.drop_channels = upsample, in_ch != out_ch
        self.bn_0 = TruncationBatchNorm(in_ch, cond_dim, n_stats, eps)
        self.conv_0 = sn(nn.Conv2d(in_ch, mid, 1), eps)
        self.bn_1 = TruncationBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_1 = sn(nn.Conv2d(mid, mid, 3, padding=1), eps)
        self.bn_2 = TruncationBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_2 = sn(nn.Conv2d(mid, mid, 3, padding=1), eps)
        self.bn_3 = TruncationBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_3 = sn(nn.Conv2d(mid, out_ch, 1), eps)

    def forward(self, x: Tensor, c: Tensor, truncation: float) -> Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, truncation, c)))
        h = F.relu(self.bn_1(h, truncation, c))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, truncation, c)))
        h = self.conv_3(F.relu(self.bn_3(h, truncation, c)))
        skip = x[:, : x.shape[1] // 2] if self.drop_channels else x
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return h + skip


class DeepGenerator(nn.Module):
    """The port's `generator`: condition vector (N, 2·z_dim) -> images (N, 3, R, R)."""

    def __init__(self, cfg: BigGANDeepConfig):
        super().__init__()
        ch, cond_dim = cfg.channel_width, 2 * cfg.z_dim
        self.ch = ch
        self.gen_z = sn(nn.Linear(cond_dim, 4 * 4 * 16 * ch), cfg.eps)
        layers: list[nn.Module] = []
        for i, (upsample, in_mult, out_mult) in enumerate(cfg.layers):
            if i == cfg.attention_layer_position:  # its own index in the module list
                layers.append(DeepSelfAttention(ch * in_mult, cfg.eps))
            layers.append(
                GenBlock(
                    ch * in_mult, ch * out_mult, cond_dim, bool(upsample), cfg.n_stats, cfg.eps
                )
            )
        self.layers = nn.ModuleList(layers)
        self.bn = TruncationBatchNorm(ch, None, cfg.n_stats, cfg.eps)
        self.conv_to_rgb = sn(nn.Conv2d(ch, ch, 3, padding=1), cfg.eps)

    def forward(self, cond: Tensor, truncation: float) -> Tensor:
        h = self.gen_z(cond).view(-1, 4, 4, 16 * self.ch)  # TF order (N, H, W, C)
        h = h.permute(0, 3, 1, 2).contiguous()
        for layer in self.layers:
            h = layer(h, cond, truncation) if isinstance(layer, GenBlock) else layer(h)
        h = self.conv_to_rgb(F.relu(self.bn(h, truncation)))
        return torch.tanh(h[:, :3])


def check_deep_config(cfg: BigGANDeepConfig) -> None:
    for name in ("z_dim", "channel_width", "num_classes"):
        if int(getattr(cfg, name)) < 1:
            raise GenzooError(f"{name} must be a positive integer, got {getattr(cfg, name)}")
    if cfg.n_stats < 2:
        raise GenzooError(
            f"n_stats must be at least 2 (rows for t = 0 and t = 1), got {cfg.n_stats}"
        )
    bad = [e for e in cfg.layers if len(e) != 3]
    if not cfg.layers or bad:
        raise GenzooError(
            f"layers must be a non-empty list of [upsample, in_multiplier, out_multiplier]; "
            f"got {bad[0] if bad else cfg.layers!r}"
        )
    size = 4 * 2 ** sum(bool(e[0]) for e in cfg.layers)
    if size != cfg.output_dim:
        raise GenzooError(
            f"layers upsample 4×4 to {size}×{size} but output_dim={cfg.output_dim}; "
            "make the two agree"
        )


class BigGANDeep(nn.Module):
    """forward(z (N, z_dim), y, truncation in (0, 1]) -> images (N, 3, R, R) in [-1, 1].

    y: int64 labels (N,) or a float class vector (N, num_classes), which may mix classes.
    Backbone `biggan-deep` serves the released generators; it has no discriminator to train.
    """

    Config = BigGANDeepConfig

    @staticmethod
    def resolve(cfg: BigGANDeepConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        raise GenzooError(
            "model.kind=biggan-deep loads DeepMind's released generators (no discriminator was "
            "released, and this port has no training-mode BatchNorm); train model.kind=biggan"
        )

    def __init__(self, cfg: BigGANDeepConfig):
        super().__init__()
        check_deep_config(cfg)
        self.cfg = cfg
        self.dim_z = cfg.z_dim
        self.embeddings = nn.Linear(cfg.num_classes, cfg.z_dim, bias=False)
        self.generator = DeepGenerator(cfg)

    def class_vector(self, y: Tensor) -> Tensor:
        if y.is_floating_point():
            if y.ndim != 2 or y.shape[1] != self.cfg.num_classes:
                raise GenzooError(
                    f"a float class vector must have shape (N, {self.cfg.num_classes}); got "
                    f"{tuple(y.shape)}"
                )
            return y
        if y.ndim != 1:
            raise GenzooError(f"labels must have shape (N,); got {tuple(y.shape)}")
        return F.one_hot(y.long(), self.cfg.num_classes).to(self.embeddings.weight.dtype)

    def forward(self, z: Tensor, y: Tensor, truncation: float = 1.0) -> Tensor:
        truncation = check_truncation(truncation)
        if z.ndim != 2 or z.shape[1] != self.dim_z or y.shape[:1] != z.shape[:1]:
            raise GenzooError(
                f"BigGAN-deep: got z {tuple(z.shape)} and y {tuple(y.shape)}; expected z "
                f"(N, {self.dim_z}) and N labels or class vectors"
            )
        cond = torch.cat([z, self.embeddings(self.class_vector(y))], dim=1)  # z first
        return self.generator(cond, truncation)
