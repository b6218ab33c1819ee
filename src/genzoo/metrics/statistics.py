"""Feature statistics (mean and covariance) accumulated in float64 over streamed batches.

FID-style metrics need the mean mu and the unbiased covariance Sigma of up to 50,000 feature
vectors. Holding the features is not needed: we keep the sum and the sum of outer products of
shifted features, x - K, with K the mean of the first batch. The shift does not change Sigma but
keeps the final subtraction S2 - N m m^T well conditioned when features have a large mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genzoo.errors import GenzooError


@dataclass
class FeatureStats:
    """mu [d] and Sigma [d, d] (float64) of `num` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    num: int

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)


class StreamingStats:
    """Accumulate sum(x) and sum(x x^T) in float64, batch by batch, on any device."""

    def __init__(self, name: str = "features"):
        self.name = name
        self.num = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = torch.as_tensor(features)
        if x.ndim != 2:
            raise ValueError(f"{self.name}: expected [n, d] features, got {tuple(x.shape)}")
        if len(x) == 0:
            return
        x = x.to(torch.float64)
        check_finite(x, f"{self.name} (batch starting at item {self.num})")
        if self._shift is None:
            self._shift = x.mean(dim=0)
            d = x.shape[1]
            self._sum = torch.zeros(d, dtype=torch.float64, device=x.device)
            self._outer = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        x = x.to(self._shift.device) - self._shift
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.num += len(x)

    def result(self) -> FeatureStats:
        if self.num < 2:
            raise GenzooError(
                f"{self.name}: a covariance needs at least 2 images, got {self.num}; "
                "evaluate more samples"
            )
        n = self.num
        mean_shifted = self._sum / n
        sigma = (self._outer - n * torch.outer(mean_shifted, mean_shifted)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)  # exact symmetry for the eigen-solvers
        mu = mean_shifted + self._shift
        return FeatureStats(mu.cpu().numpy(), sigma.cpu().numpy(), n)


def stats_of(features: np.ndarray | torch.Tensor, batch_size: int = 4096) -> FeatureStats:
    """Statistics of an in-memory feature matrix [n, d] (streamed, same numerics)."""
    acc = StreamingStats()
    x = torch.as_tensor(features)
    for start in range(0, len(x), batch_size):
        acc.update(x[start : start + batch_size])
    return acc.result()


def check_finite(x: torch.Tensor | np.ndarray, what: str) -> None:
    """Raise a clear error when features or statistics hold NaN or inf."""
    finite = torch.isfinite(x).all() if torch.is_tensor(x) else np.isfinite(x).all()
    if not bool(finite):
        raise GenzooError(
            f"{what}: contains NaN or inf. Check the feature-extractor weights and the input "
            "images (uint8 0..255); for statistics files, re-create them"
        )
