"""Frechet distance between two Gaussians fitted to features (FID, sFID, FD-DINOv2, FD-classifier).

    FD = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr (S1 S2)^(1/2)

Only the trace term is delicate. Three ways to compute it, all in float64:

* "eigh" (default): with S1 = U L U^T symmetric PSD, (S1 S2)^(1/2) is similar to
  (S1^(1/2) S2 S1^(1/2))^(1/2), a symmetric PSD matrix, so the trace is the sum of the square
  roots of the eigenvalues of A = S1^(1/2) S2 S1^(1/2). Symmetric eigen-solvers are fast and
  stable, and rank-deficient covariances (fewer images than dimensions) need no special case.
* "eigvals": sum of Re sqrt(eigvals(S1 S2)) (torch-fidelity >= 0.4).
* "sqrtm": ADM / TTUR / pytorch-fid: scipy.linalg.sqrtm(S1 S2); if it is not finite, retry with
  eps = 1e-6 added to both diagonals; a complex result whose diagonal has an imaginary part
  above 1e-3 is an error, otherwise the real part is kept.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from genzoo.errors import GenzooError
from genzoo.metrics.statistics import FeatureStats, check_finite

FD_METHODS = ("eigh", "eigvals", "sqrtm")
SQRTM_EPS = 1e-6  # ADM's offset when sqrtm of a singular product is not finite
SQRTM_IMAG_ATOL = 1e-3  # ADM's tolerance on the imaginary part of the diagonal


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    method: str = "eigh",
) -> float:
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise GenzooError(
            f"Frechet distance: statistics disagree in shape (mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}); were they made with the same features?"
        )
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        check_finite(arr, f"Frechet distance input {name}")
    diff = mu1 - mu2
    trace_term = trace_sqrt_product(sigma1, sigma2, method)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_term)


def frechet_distance_stats(a: FeatureStats, b: FeatureStats, method: str = "eigh") -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "eigh") -> float:
    """Tr (sigma1 sigma2)^(1/2) for symmetric PSD covariances."""
    if method == "eigh":
        return _trace_eigh(sigma1, sigma2)
    if method == "eigvals":
        eig = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
        return float(np.sqrt(eig).real.sum())
    if method == "sqrtm":
        return _trace_sqrtm(sigma1, sigma2)
    raise GenzooError(f"unknown FD method {method!r}; choose one of {', '.join(FD_METHODS)}")


def _trace_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    lam, u = np.linalg.eigh(0.5 * (sigma1 + sigma1.T))
    root1 = (u * np.sqrt(np.clip(lam, 0.0, None))) @ u.T  # sigma1^(1/2)
    a = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (a + a.T))
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # SciPy prints or warns about singular input; the finiteness check below decides.
        warnings.simplefilter("ignore")
        out = scipy.linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out  # SciPy < 1.18 may return (sqrtm, errest)


def _trace_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FD (sqrtm): product of covariances is singular; adding {SQRTM_EPS} to the "
            "diagonals as ADM does",
            RuntimeWarning,
            stacklevel=3,
        )
        offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > SQRTM_IMAG_ATOL:
            raise GenzooError(
                f"FD (sqrtm): the matrix square root has an imaginary component {imag:.3g} "
                f"(> {SQRTM_IMAG_ATOL}); the covariances are not positive semi-definite. Use the "
                "default 'eigh' method or check the statistics"
            )
        covmean = covmean.real
    return float(np.trace(covmean))
