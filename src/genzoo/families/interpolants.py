"""Interpolants x_t = α_t x1 + σ_t x0 between noise x0 (t = 0) and data x1 (t = 1) (SiT).

Each path gives α, σ and their time derivatives; from them follow the velocity target, the score
of x_t implied by a velocity, and the diffusion coefficients w(t) of SiT's SDE samplers. The
arithmetic is ordered as in SiT's `transport/path.py` so that its samplers are reproduced exactly.
`t` is broadcastable against x (shape (N, 1, ..., 1)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genzoo.errors import GenzooError

DIFFUSION_FORMS = ("sigma", "SBDM", "constant", "linear", "decreasing", "increasing-decreasing")


class Interpolant:
    name = ""

    def alpha(self, t: Tensor) -> tuple[Tensor, Tensor | float]:
        """(α_t, dα_t/dt), the data coefficient."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> tuple[Tensor, Tensor | float]:
        """(σ_t, dσ_t/dt), the noise coefficient."""
        raise NotImplementedError

    def d_log_alpha(self, t: Tensor) -> Tensor:
        """(dα_t/dt) / α_t, written in a numerically stable form per path."""
        raise NotImplementedError

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x_t, u_t): the point on the path and its velocity dx_t/dt (the training target)."""
        alpha, d_alpha = self.alpha(t)
        sigma, d_sigma = self.sigma(t)
        return alpha * x1 + sigma * x0, d_alpha * x1 + d_sigma * x0

    def score_from_velocity(self, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """∇ log p_t(x) implied by the velocity field (Gaussian x0; SiT eq. for velocity models).

        With r = α/α̇: score = (r·v − x) / (σ² − r·σ̇·σ). For the linear path: (t·v − x)/(1 − t).
        """
        alpha, d_alpha = self.alpha(t)
        sigma, d_sigma = self.sigma(t)
        ratio = alpha / d_alpha
        variance = sigma**2 - ratio * d_sigma * sigma
        return (ratio * velocity - x) / variance

    def diffusion(self, t: Tensor, form: str, norm: float) -> Tensor:
        """w(t) of the SDE dx = [v + w·score] dt + sqrt(2w) dW (same marginals for any w ≥ 0)."""
        if form == "sigma":
            return norm * self.sigma(t)[0]
        if form == "SBDM":  # w = α̇/α · σ² − σ σ̇: the diffusion of the matching score-based SDE
            sigma, d_sigma = self.sigma(t)
            return norm * (self.d_log_alpha(t) * (sigma**2) - sigma * d_sigma)
        if form == "constant":
            return torch.full_like(t, norm)
        if form == "linear":
            return norm * (1 - t)
        if form == "decreasing":
            return 0.25 * (norm * torch.cos(math.pi * t) + 1) ** 2
        if form == "increasing-decreasing":
            return norm * torch.sin(math.pi * t) ** 2
        raise GenzooError(
            f"unknown diffusion_form {form!r}; choose one of: {', '.join(DIFFUSION_FORMS)}"
        )


class LinearPath(Interpolant):
    """α_t = t, σ_t = 1 − t (rectified flow / SiT "Linear")."""

    name = "linear"

    def alpha(self, t: Tensor) -> tuple[Tensor, Tensor | float]:
        return t, 1

    def sigma(self, t: Tensor) -> tuple[Tensor, Tensor | float]:
        return 1 - t, -1

    def d_log_alpha(self, t: Tensor) -> Tensor:
        return 1 / t


class GVPPath(Interpolant):
    """α_t = sin(πt/2), σ_t = cos(πt/2): variance preserving, α² + σ² = 1 (SiT "GVP")."""

    name = "gvp"

    def alpha(self, t: Tensor) -> tuple[Tensor, Tensor | float]:
        return torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def sigma(self, t: Tensor) -> tuple[Tensor, Tensor | float]:
        return torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def d_log_alpha(self, t: Tensor) -> Tensor:
        return math.pi / (2 * torch.tan(t * math.pi / 2))


PATHS: dict[str, type[Interpolant]] = {"linear": LinearPath, "gvp": GVPPath}


def build_interpolant(name: str) -> Interpolant:
    key = name.lower()
    if key not in PATHS:
        raise GenzooError(f"flow.path={name!r}: choose one of {', '.join(PATHS)}")
    return PATHS[key]()
