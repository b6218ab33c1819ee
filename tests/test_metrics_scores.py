"""Inception Score, precision/recall and KID on synthetic features (eval protocol, Tier A 3-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.metrics.evaluate import _is_order_warning
from genzoo.metrics.inception_score import inception_score
from genzoo.metrics.kid import kernel_inception_distance, mmd2_unbiased
from genzoo.metrics.precision_recall import precision_recall

# -- Inception Score ----------------------------------------------------------------------------


def one_hot_logits(labels: np.ndarray, classes: int, peak: float = 50.0) -> torch.Tensor:
    logits = torch.zeros(len(labels), classes, dtype=torch.float64)
    logits[torch.arange(len(labels)), torch.as_tensor(labels)] = peak
    return logits


def numpy_is(logits: np.ndarray, bounds: list[tuple[int, int]]) -> float:
    """Hand-written oracle: exp(mean KL(p_i || p_bar)) per split, averaged."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    scores = []
    for lo, hi in bounds:
        part = p[lo:hi]
        marginal = part.mean(axis=0)
        scores.append(np.exp(np.mean(np.sum(part * np.log(part / marginal), axis=1))))
    return float(np.mean(scores))


def test_identical_rows_score_exactly_one():
    logits = torch.randn(1, 1008).repeat(40, 1)
    for mode in ("adm", "torch-fidelity"):
        assert inception_score(logits, mode).mean == pytest.approx(1.0, abs=1e-12)


def test_confident_and_balanced_predictions_score_the_number_of_classes():
    labels = np.tile(np.arange(8), 30)  # every split of 24 (tf mode) or all 240 hold 8 classes
    logits = one_hot_logits(labels, 1008)
    assert inception_score(logits, "adm").mean == pytest.approx(8.0, rel=1e-6)
    # Shuffled splits of 24 are only roughly balanced: close to, and never above, 8.
    assert 5.0 < inception_score(logits, "torch-fidelity").mean <= 8.0


def test_adm_mode_uses_contiguous_splits_of_5000():
    logits = np.random.default_rng(0).normal(size=(12000, 6)) * 3
    expected = numpy_is(logits, [(0, 5000), (5000, 10000), (10000, 12000)])
    score = inception_score(torch.from_numpy(logits), "adm")
    assert score.splits == 3
    assert score.mean == pytest.approx(expected, rel=1e-10)


def test_torch_fidelity_mode_equals_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.from_numpy(np.random.default_rng(1).normal(size=(503, 50)) * 2).float()
    ours = inception_score(logits, "torch-fidelity")
    theirs = isc_features_to_metric(logits, 10, True, 2020)
    assert ours.mean == pytest.approx(theirs["inception_score_mean"], rel=1e-10)
    assert ours.std == pytest.approx(theirs["inception_score_std"], rel=1e-8)


def test_class_sorted_files_lower_adm_is_and_are_flagged():
    labels = np.repeat(np.arange(100), 100)  # 10,000 images, class-sorted like MAR's files
    logits = one_hot_logits(labels, 1008)
    rng = np.random.default_rng(2)
    shuffled = rng.permutation(len(labels))
    sorted_is = inception_score(logits, "adm").mean
    shuffled_is = inception_score(logits[shuffled], "adm").mean
    assert sorted_is == pytest.approx(50.0, rel=1e-6)  # each split of 5000 sees 50 classes
    assert shuffled_is > 95.0
    assert _is_order_warning(labels, len(labels), 5000) is not None
    assert _is_order_warning(labels[shuffled], len(labels), 5000) is None


def test_is_bounds_and_errors():
    logits = torch.from_numpy(np.random.default_rng(3).normal(size=(30, 1008)) * 20)
    score = inception_score(logits, "torch-fidelity")
    assert 1.0 <= score.mean <= 3.0  # at most the split size (3)
    with pytest.raises(GenzooError, match="cannot fill 10 splits"):
        inception_score(logits[:9], "torch-fidelity")
    with pytest.raises(GenzooError, match="unknown IS mode"):
        inception_score(logits, "tf")


# -- precision / recall ------------------------------------------------------------------------


def cloud(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_precision_recall_equals_torch_fidelity():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    gen, real = cloud(300, 16, 0), cloud(250, 16, 1, scale=1.2, shift=0.6)
    ours = precision_recall(gen, real, distance_dtype="float64")
    p, r = calculate_precision_recall_full(gen, real, 3)
    assert (ours.precision, ours.recall) == (
        pytest.approx(p, abs=1e-6),
        pytest.approx(r, abs=1e-6),
    )
    assert 0.05 < ours.precision < 0.95 and 0.05 < ours.recall < 0.95  # a non-trivial case


def test_identical_and_disjoint_sets():
    x = cloud(100, 8, 2)
    same = precision_recall(x, x.clone())
    assert (same.precision, same.recall) == (1.0, 1.0)
    far = precision_recall(x, cloud(100, 8, 3, shift=100.0))
    assert (far.precision, far.recall) == (0.0, 0.0)


def test_collapsed_generator_is_precise_but_has_low_recall():
    real = cloud(600, 10, 4, scale=3.0)
    gen = cloud(600, 10, 5, scale=0.1)
    pr = precision_recall(gen, real)
    assert pr.precision > 0.8 and pr.recall < 0.3


def test_swapping_the_sets_swaps_precision_and_recall():
    a, b = cloud(200, 12, 6), cloud(150, 12, 7, scale=1.5)
    ab, ba = precision_recall(a, b), precision_recall(b, a)
    assert (ab.precision, ab.recall) == (ba.recall, ba.precision)


def test_block_size_and_squared_distances_do_not_change_the_result():
    gen, real = cloud(230, 20, 8), cloud(190, 20, 9, scale=1.2)
    full = precision_recall(gen, real)
    assert precision_recall(gen, real, block_size=37) == full
    assert precision_recall(gen, real, squared=False) == full


def test_half_precision_distances_stay_within_adm_tolerance():
    gen, real = cloud(400, 64, 10).abs(), cloud(400, 64, 11, scale=1.1).abs()  # pool_3-like >= 0
    exact = precision_recall(gen, real, distance_dtype="float32")
    half = precision_recall(gen, real, distance_dtype="float16")
    assert abs(half.precision - exact.precision) <= 0.02
    assert abs(half.recall - exact.recall) <= 0.02


def test_precision_recall_needs_k_plus_one_points():
    with pytest.raises(GenzooError, match="at least 4"):
        precision_recall(cloud(3, 4, 12), cloud(10, 4, 13))
    with pytest.raises(GenzooError, match="NaN or inf"):
        precision_recall(cloud(10, 4, 12) * float("nan"), cloud(10, 4, 13))


# -- KID ----------------------------------------------------------------------------------------


def test_unbiased_mmd_matches_its_definition():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) + 0.5

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    expected = (xx + yy) / (m * (m - 1)) - 2 * xy / m**2
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)


def test_kid_equals_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    a, b = cloud(120, 32, 15), cloud(100, 32, 16, shift=0.3)
    ours = kernel_inception_distance(a, b, subsets=20, subset_size=50)
    theirs = kid_features_to_metric(
        a, b, kid_subsets=20, kid_subset_size=50, verbose=False, rng_seed=2020,
        kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
    )  # fmt: skip
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert ours.std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-8)


def test_kid_separates_same_and_shifted_distributions():
    same = kernel_inception_distance(cloud(200, 16, 17), cloud(200, 16, 18), subset_size=100)
    shifted = kernel_inception_distance(
        cloud(200, 16, 17), cloud(200, 16, 19, shift=1.0), subset_size=100
    )
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * max(abs(same.mean), same.std)


def test_kid_needs_a_full_subset():
    with pytest.raises(GenzooError, match="subset size"):
        kernel_inception_distance(cloud(50, 4, 20), cloud(2000, 4, 21))
