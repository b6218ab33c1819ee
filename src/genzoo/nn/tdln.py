"""Time-dependent layer normalisation (TD-LN), from DiMR (Liu et al. 2024, arXiv 2406.09416).

adaLN regresses the normalisation's scale and shift from the condition with a large MLP per
block. TD-LN instead makes them a learned function of the scalar time s alone:

    TD-LN(x, s) = γ(s) ⊙ norm(x) + β(s)
    γ(s) = α_γ(s)·p1 + (1 − α_γ(s))·p2,   α_γ(s) = sigmoid(w ⊙ s + b)   (likewise β with p3, p4)

so each norm layer interpolates between two learned parameter vectors, costing 4·D parameters
per vector instead of a D×kD matrix. As in the authors' code release, w and b are learned per
channel (separately for γ and β) and initialised to 1 and 0, and both end points start at the
plain LayerNorm values (γ: ones, β: zeros), so TD-LN starts as an ordinary normalisation.
`norm(x)` is the parameter-free LayerNorm (or RMSNorm under `norm="rmsnorm"`).

The authors feed s = log-SNR/4; genzoo's backbones do not know the noise schedule, so the
model feeds s = t·tdln_time_scale with t as given to the network (see DiTConfig).
"""

from __future__ import annotations

import torch
from torch import nn

from genzoo.nn.norms import make_norm


class TimeDependentParameter(nn.Module):
    """A (D,) vector v(s) = α(s)·p1 + (1 − α(s))·p2 with α(s) = sigmoid(w·s + b), per channel."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.p1 = nn.Parameter(torch.full((dim,), init_value))
        self.p2 = nn.Parameter(torch.full((dim,), init_value))
        self.w = nn.Parameter(torch.ones(dim))
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s (N,) -> (N, D)."""
        alpha = torch.sigmoid(s[:, None].to(self.w.dtype) * self.w + self.b)
        return alpha * self.p1 + (1 - alpha) * self.p2


class TimeDependentNorm(nn.Module):
    """γ(s) ⊙ norm(x) + β(s) for tokens x (N, T, D) and times s (N,)."""

    def __init__(self, dim: int, norm: str = "layernorm"):
        super().__init__()
        self.norm = make_norm(norm, dim, affine=False)
        self.gamma = TimeDependentParameter(dim, 1.0)
        self.beta = TimeDependentParameter(dim, 0.0)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gamma(s).unsqueeze(1) + self.beta(s).unsqueeze(1)
