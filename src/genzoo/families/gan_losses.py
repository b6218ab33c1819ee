"""The GAN losses: hinge and non-saturating adversarial losses, BigGAN's orthogonal
regularisation (applied to the gradients, as the official code does) and the R1 penalty."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# -- losses -----------------------------------------------------------------------------------


def hinge_d_loss(d_fake: Tensor, d_real: Tensor) -> tuple[Tensor, Tensor]:
    """(mean relu(1 − D(x)), mean relu(1 + D(G(z))))."""
    return F.relu(1.0 - d_real).mean(), F.relu(1.0 + d_fake).mean()


def hinge_g_loss(d_fake: Tensor) -> Tensor:
    return -d_fake.mean()


def ns_d_loss(d_fake: Tensor, d_real: Tensor) -> tuple[Tensor, Tensor]:
    """(mean softplus(−D(x)), mean softplus(D(G(z)))): −log σ(D(x)) − log(1 − σ(D(G(z))))."""
    return F.softplus(-d_real).mean(), F.softplus(d_fake).mean()


def ns_g_loss(d_fake: Tensor) -> Tensor:
    return F.softplus(-d_fake).mean()


LOSSES: dict[str, tuple[Callable, Callable]] = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "ns": (ns_d_loss, ns_g_loss),
}


# -- orthogonal regularisation ----------------------------------------------------------------


def _off_diagonal_gram(w: Tensor) -> Tensor:
    gram = w @ w.t()
    return gram * (1.0 - torch.eye(w.shape[0], device=w.device, dtype=w.dtype))


def ortho_penalty(weights: Iterable[Tensor], strength: float = 1e-4) -> Tensor:
    """(strength/2)·Σ‖W Wᵀ ⊙ (1 − I)‖²_F over the weights, each viewed as (out, −1).

    Its gradient is 2·strength·(W Wᵀ ⊙ (1 − I)) W, the term BigGAN adds to each gradient.
    """
    total = None
    for weight in weights:
        term = _off_diagonal_gram(weight.view(weight.shape[0], -1)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * strength * total


def ortho_parameters(module: nn.Module, exclude: Sequence[str] = ()) -> list[nn.Parameter]:
    """The parameters orthogonal regularisation acts on: those with ≥ 2 dimensions whose names
    start with none of `exclude` (biases, BN gains and the attention γ drop out by shape)."""
    prefixes = tuple(exclude)
    return [
        p
        for name, p in module.named_parameters()
        if p.ndim >= 2 and not (prefixes and name.startswith(prefixes))
    ]


@torch.no_grad()
def add_ortho_gradient(params: Iterable[nn.Parameter], strength: float) -> None:
    """Add 2·strength·(W Wᵀ ⊙ (1 − I)) W to each parameter's gradient (after backward)."""
    for p in params:
        w = p.view(p.shape[0], -1)
        term = (2.0 * strength * (_off_diagonal_gram(w) @ w)).view_as(p)
        if p.grad is None:
            p.grad = term.clone()
        else:
            p.grad += term


def r1_penalty(d_real: Tensor, real: Tensor, gamma: float) -> Tensor:
    """(γ/2)·mean over samples of ‖∇ₓ D(x)‖² (Mescheder et al. 2018)."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(1).mean()
