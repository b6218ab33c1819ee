"""Spectral normalisation that keeps its power-iteration state in the state dict (BigGAN layout).

A layer divides its weight W, viewed as a matrix (out, −1), by an estimate of its largest
singular value σ (Miyato et al. 2018). Per estimated singular value i it holds two buffers, as
the first author's BigGAN code stores them:

    u{i}   (1, out)  the left singular vector estimate
    sv{i}  (1,)      the last σ_i estimate: a log, never used to divide

On **every** forward, training or not, `num_itrs` power steps run from the stored u:
v = normalize(u W), u′ = normalize(v Wᵀ), σ = v Wᵀ u′ᵀ, and the layer uses W / σ_0, with
gradients through W only (u and v are constants). With several singular values each new v and
u is first made orthogonal to the earlier ones (Gram–Schmidt). normalize divides by
max(‖·‖, eps). Only in training mode are u and sv overwritten.

torch's own `nn.utils.spectral_norm` differs: it stores u and v (weight_u, weight_v) and does
not iterate in eval; the BigGAN-deep port uses that one (genzoo.backbones.biggan_deep).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _orthogonalise(x: Tensor, basis: list[Tensor]) -> Tensor:
    """Subtract from the row vector x its projection onto each row vector of `basis`."""
    for b in basis:
        x = x - (b @ x.t()) * b / (b @ b.t())
    return x


def power_iteration(
    weight_mat: Tensor, us: list[Tensor], *, update: bool, eps: float
) -> list[Tensor]:
    """One power step per singular vector from the stored u's; σ estimates differentiable in W.

    With `update`, each u buffer is overwritten (in place) by its new estimate.
    """
    new_us: list[Tensor] = []
    vs: list[Tensor] = []
    sigmas = []
    for stored_u in us:
        with torch.no_grad():
            v = F.normalize(_orthogonalise(stored_u @ weight_mat, vs), eps=eps)
            vs.append(v)
            u = F.normalize(_orthogonalise(v @ weight_mat.t(), new_us), eps=eps)
            new_us.append(u)
            if update:
                stored_u.copy_(u)
        # u and v are fresh tensors, so a later in-place update of the buffer cannot
        # invalidate this graph (D is called several times before one backward).
        sigmas.append(((v @ weight_mat.t()) @ u.t()).squeeze())
    return sigmas


class SpectralNorm:
    """Mixin for a layer with a `weight`: the u/sv buffers and the normalised weight."""

    def init_spectral_norm(self, num_svs: int, num_itrs: int, num_outputs: int, eps: float):
        self.num_svs, self.num_itrs, self.sn_eps = num_svs, num_itrs, eps
        for i in range(num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))
            self.register_buffer(f"sv{i}", torch.ones(1))

    @property
    def singular_vectors(self) -> list[Tensor]:
        return [getattr(self, f"u{i}") for i in range(self.num_svs)]

    @property
    def singular_values(self) -> list[Tensor]:
        return [getattr(self, f"sv{i}") for i in range(self.num_svs)]

    def normalized_weight(self) -> Tensor:
        weight = self.weight
        # The power step is a small matrix-vector product whose precision matters more than
        # its speed: keep it out of mixed precision.
        with torch.autocast(weight.device.type, enabled=False):
            weight_mat = weight.view(weight.shape[0], -1)
            for _ in range(self.num_itrs):
                sigmas = power_iteration(
                    weight_mat, self.singular_vectors, update=self.training, eps=self.sn_eps
                )
            if self.training:
                with torch.no_grad():
                    for stored, sigma in zip(self.singular_values, sigmas, strict=True):
                        stored.copy_(sigma)
            return weight / sigmas[0]


class SNConv2d(SpectralNorm, nn.Conv2d):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        bias: bool = True,
        *,
        num_svs: int = 1,
        num_itrs: int = 1,
        eps: float = 1e-12,
    ):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.init_spectral_norm(num_svs, num_itrs, out_channels, eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class SNLinear(SpectralNorm, nn.Linear):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        num_svs: int = 1,
        num_itrs: int = 1,
        eps: float = 1e-12,
    ):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self.init_spectral_norm(num_svs, num_itrs, out_features, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(SpectralNorm, nn.Embedding):
    """An embedding table (rows = classes) normalised as a (num_embeddings, dim) matrix, so its
    u has one entry per class."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        num_svs: int = 1,
        num_itrs: int = 1,
        eps: float = 1e-12,
    ):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self.init_spectral_norm(num_svs, num_itrs, num_embeddings, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.normalized_weight())
