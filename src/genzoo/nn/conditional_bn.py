"""BatchNorm in the BigGAN layout: class-conditional gains and biases, statistics as buffers.

Both layers normalise with batch statistics in training mode (updating `stored_mean` /
`stored_var` with momentum 0.1 and the unbiased batch variance, while the normalisation itself
uses the biased one, as `F.batch_norm` does) and with the stored statistics in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_STYLES = ("bn", "in", "nonorm")


class ClassConditionalBatchNorm(nn.Module):
    """norm(x)·(1 + gain(c)) + bias(c): BatchNorm without its own affine, whose per-sample
    scale and shift are regressed from a condition c (de Vries et al. 2017; BigGAN).

    `gain` and `bias` map c to (N, C): bias-free (spectrally normalised) linears of a condition
    vector (BigGAN's shared class embedding, concatenated with a chunk of z), or embedding tables
    of class labels. norm_style "in" normalises each sample on its own (instance norm), and
    "nonorm" not at all.
    """

    def __init__(
        self,
        num_features: int,
        gain: nn.Module,
        bias: nn.Module,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        norm_style: str = "bn",
    ):
        super().__init__()
        if norm_style not in NORM_STYLES:
            raise ValueError(f"norm_style {norm_style!r} is not one of {NORM_STYLES}")
        self.gain, self.bias = gain, bias
        self.eps, self.momentum, self.norm_style = eps, momentum, norm_style
        self.register_buffer("stored_mean", torch.zeros(num_features))
        self.register_buffer("stored_var", torch.ones(num_features))

    def normalize(self, x: Tensor) -> Tensor:
        stats = (self.stored_mean, self.stored_var, None, None, self.training, self.momentum)
        if self.norm_style == "bn":
            return F.batch_norm(x, *stats, self.eps)
        if self.norm_style == "in":
            return F.instance_norm(x, *stats, self.eps)
        return x

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        n = c.shape[0]
        gain = (1 + self.gain(c)).view(n, -1, 1, 1)
        bias = self.bias(c).view(n, -1, 1, 1)
        return self.normalize(x) * gain + bias


class StoredStatsBatchNorm(nn.Module):
    """Plain BatchNorm2d with BigGAN's names: affine `gain` / `bias`, statistics `stored_mean` /
    `stored_var`."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.eps, self.momentum = eps, momentum
        self.register_buffer("stored_mean", torch.zeros(num_features))
        self.register_buffer("stored_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x,
            self.stored_mean,
            self.stored_var,
            self.gain,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
