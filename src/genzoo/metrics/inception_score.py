"""Inception Score (Salimans et al. 2016) from the unbiased Inception logits (pool_3 . W^T).

For each split s:  IS_s = exp( mean_{i in s} KL(p_i || mean_{j in s} p_j) ),  p_i = softmax(z_i).

The score depends on how samples are split, so both conventions are available and recorded:

* "adm" (guided-diffusion evaluator): contiguous splits of 5,000 in file order (the last one may
  be shorter); the mean over splits. A class-sorted file scores far lower this way, because each
  split then holds few classes.
* "torch-fidelity": shuffle with RandomState(seed).permutation(N), then 10 splits with
  boundaries floor(i N / 10); mean and population std over splits.

Everything is computed in float64 with log-softmax, so a probability that underflows to 0 gives
0 * finite instead of ADM's NaN from log(0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genzoo.errors import GenzooError

IS_MODES = ("adm", "torch-fidelity")
ADM_SPLIT_SIZE = 5000
TORCH_FIDELITY_SPLITS = 10
TORCH_FIDELITY_SEED = 2020


@dataclass(frozen=True)
class InceptionScore:
    mean: float
    std: float
    splits: int
    mode: str


def split_bounds(n: int, mode: str, splits: int, split_size: int) -> list[tuple[int, int]]:
    if mode == "adm":
        return [(s, min(s + split_size, n)) for s in range(0, n, split_size)]
    return [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]


def inception_score(
    logits: np.ndarray | torch.Tensor,
    mode: str = "adm",
    *,
    splits: int = TORCH_FIDELITY_SPLITS,
    split_size: int = ADM_SPLIT_SIZE,
    seed: int = TORCH_FIDELITY_SEED,
) -> InceptionScore:
    """IS of logits [N, C] under the chosen split convention."""
    if mode not in IS_MODES:
        raise GenzooError(f"unknown IS mode {mode!r}; choose one of {', '.join(IS_MODES)}")
    x = torch.as_tensor(logits)
    if x.ndim != 2:
        raise GenzooError(f"IS: expected logits [N, C], got shape {tuple(x.shape)}")
    n = x.shape[0]
    order = torch.arange(n)
    if mode == "torch-fidelity":
        if n < splits:
            raise GenzooError(
                f"IS: {n} images cannot fill {splits} splits; evaluate at least {splits} images"
            )
        order = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    elif n < 1:
        raise GenzooError("IS: no images to score")
    if not bool(torch.isfinite(x).all()):
        raise GenzooError("IS: the logits contain NaN or inf; check the Inception weights")
    scores = []
    for lo, hi in split_bounds(n, mode, splits, split_size):
        # One split at a time in float64: memory stays at a split, not at all N x 1008 logits.
        log_p = torch.log_softmax(x[order[lo:hi]].to(torch.float64), dim=1)
        p = log_p.exp()
        log_marginal = p.mean(dim=0, keepdim=True).log()
        kl = (p * (log_p - log_marginal)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)), len(scores), mode)
