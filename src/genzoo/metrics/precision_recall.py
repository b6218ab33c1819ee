"""Improved precision and recall (Kynkaanniemi et al. 2019) with ADM's k-NN manifold estimator.

Each set's manifold is the union of balls around its points, the radius of a point being the
distance to its k-th nearest neighbour in its own set (k = 3; the point itself is neighbour 0).

    precision = fraction of generated points inside the real manifold
    recall    = fraction of real points inside the generated manifold

As in ADM's evaluator: squared distances max(|u|^2 - 2 u.v + |v|^2, 0) compared with squared radii
using <=, in blocks of 10,000 x 10,000. Distances are float32 by default; "float16" reproduces
ADM's half-precision distance blocks (recomputed in float32 when a block overflows), which moves
P and R by about 1e-3. Radii keep a running k+1 smallest per row, so memory is one block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genzoo.errors import GenzooError

NEIGHBOURHOOD = 3
BLOCK_SIZE = 10_000
DISTANCE_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float

    @property
    def f_score(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / max(1e-5, p + r)


def squared_distances(u: torch.Tensor, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pairwise squared Euclidean distances [len(u), len(v)] computed in `dtype`."""

    def compute(dt: torch.dtype) -> torch.Tensor:
        a, b = u.to(dt), v.to(dt)
        norm_a = (a * a).sum(dim=1, keepdim=True)
        norm_b = (b * b).sum(dim=1, keepdim=True).T
        return (norm_a - 2.0 * (a @ b.T) + norm_b).clamp_min(0.0)

    d = compute(dtype)
    if dtype == torch.float16 and not bool(torch.isfinite(d).all()):
        d = compute(torch.float32)  # ADM falls back to float32 when a half block overflows
    return d.to(torch.float32) if dtype == torch.float16 else d


def knn_radii(
    x: torch.Tensor, k: int, block_size: int, dtype: torch.dtype, squared: bool = True
) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in `x` (index 0 is itself)."""
    radii = []
    for rows in x.split(block_size):
        best = None  # the k+1 smallest distances seen so far, per row
        for cols in x.split(block_size):
            d = squared_distances(rows, cols, dtype)
            candidates = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(candidates, min(k + 1, candidates.shape[1]), dim=1, largest=False)
            best = best.values
        radii.append(best[:, k])
    r = torch.cat(radii)
    return r if squared else r.sqrt()


def precision_recall(
    generated: torch.Tensor,
    real: torch.Tensor,
    *,
    k: int = NEIGHBOURHOOD,
    block_size: int = BLOCK_SIZE,
    distance_dtype: str = "float32",
    squared: bool = True,
    device: str | torch.device | None = None,
) -> PrecisionRecall:
    """Precision and recall of `generated` features [N, d] against `real` features [M, d]."""
    if distance_dtype not in DISTANCE_DTYPES:
        raise GenzooError(
            f"unknown P/R distance precision {distance_dtype!r}; choose one of "
            f"{', '.join(DISTANCE_DTYPES)}"
        )
    dtype = DISTANCE_DTYPES[distance_dtype]
    gen, ref = torch.as_tensor(generated), torch.as_tensor(real)
    if device is not None:
        gen, ref = gen.to(device), ref.to(device)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise GenzooError(
            f"P/R: features must be [N, d] with the same d, got {tuple(gen.shape)} and "
            f"{tuple(ref.shape)}"
        )
    for name, x in (("generated", gen), ("real", ref)):
        if len(x) < k + 1:
            raise GenzooError(
                f"P/R: the {name} set has {len(x)} images but k={k} nearest neighbours need "
                f"at least {k + 1}; evaluate more images"
            )
        if not bool(torch.isfinite(x).all()):
            raise GenzooError(f"P/R: the {name} features contain NaN or inf")
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    real_radii = knn_radii(ref, k, block_size, dtype, squared).to(compute_dtype)
    gen_radii = knn_radii(gen, k, block_size, dtype, squared).to(compute_dtype)

    gen_inside = torch.zeros(len(gen), dtype=torch.bool, device=gen.device)
    real_inside = torch.zeros(len(ref), dtype=torch.bool, device=ref.device)
    for i in range(0, len(gen), block_size):
        g = gen[i : i + block_size]
        for j in range(0, len(ref), block_size):
            d = squared_distances(g, ref[j : j + block_size], dtype).to(compute_dtype)
            if not squared:
                d = d.sqrt()
            gen_inside[i : i + len(g)] |= (d <= real_radii[j : j + block_size][None, :]).any(1)
            real_inside[j : j + block_size] |= (d <= gen_radii[i : i + len(g)][:, None]).any(0)
    return PrecisionRecall(float(gen_inside.double().mean()), float(real_inside.double().mean()))
