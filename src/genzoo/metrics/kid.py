"""Kernel Inception Distance (Binkowski et al. 2018), as in torch-fidelity and clean-fid.

Cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 and the unbiased MMD^2 estimate

    (sum K_XX - diag + sum K_YY - diag) / (m (m - 1)) - 2 sum K_XY / m^2

averaged over `subsets` random subsets of m = `subset_size` points per set, drawn without
replacement with numpy RandomState(seed) in torch-fidelity's order (set 1, then set 2, per
subset). Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genzoo.errors import GenzooError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020


@dataclass(frozen=True)
class KernelDistance:
    mean: float
    std: float
    subsets: int
    subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0):
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features_1: np.ndarray | torch.Tensor,
    features_2: np.ndarray | torch.Tensor,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = KID_SEED,
) -> KernelDistance:
    """KID between generated features (set 1) and real features (set 2)."""
    x = torch.as_tensor(features_1).to(torch.float64).cpu().numpy()
    y = torch.as_tensor(features_2).to(torch.float64).cpu().numpy()
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise GenzooError(f"KID: features must be [N, d] with the same d, got {x.shape}, {y.shape}")
    if subset_size < 2:
        raise GenzooError(f"KID: subset size must be >= 2, got {subset_size}")
    for name, f in (("generated", x), ("real", y)):
        if len(f) < subset_size:
            raise GenzooError(
                f"KID: the {name} set has {len(f)} images, fewer than the subset size "
                f"{subset_size}; evaluate more images or lower the subset size "
                f"(--kid-subset-size / kid_subset_size)"
            )
        if not np.isfinite(f).all():
            raise GenzooError(f"KID: the {name} features contain NaN or inf")
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    for i in range(subsets):
        a = x[rng.choice(len(x), subset_size, replace=False)]
        b = y[rng.choice(len(y), subset_size, replace=False)]
        values[i] = mmd2_unbiased(a, b)
    return KernelDistance(float(values.mean()), float(values.std()), subsets, subset_size)
