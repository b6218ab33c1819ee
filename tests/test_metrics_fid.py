"""Frechet distance math and streamed float64 statistics (eval protocol, Tier A 1-2)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import genzoo.metrics.fid as fid_module
from genzoo.errors import GenzooError
from genzoo.metrics.fid import FD_METHODS, frechet_distance
from genzoo.metrics.statistics import StreamingStats, stats_of


def gaussian_features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def test_fd_of_a_set_with_itself_is_zero_at_2048_dims():
    x = gaussian_features(3000, 2048, 0) * 0.5 + 0.3
    mu, sigma = moments(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) <= 1e-8 * np.trace(sigma)


def test_fd_is_symmetric_and_invariant_to_translation_and_rotation():
    a, b = gaussian_features(400, 32, 1), gaussian_features(400, 32, 2, shift=0.5)
    fd = frechet_distance(*moments(a), *moments(b))
    assert fd > 1.0
    assert frechet_distance(*moments(b), *moments(a)) == pytest.approx(fd, rel=1e-10)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(32, 32)))
    offset = np.random.default_rng(4).normal(size=32) * 10
    moved = frechet_distance(*moments(a @ rotation + offset), *moments(b @ rotation + offset))
    assert moved == pytest.approx(fd, rel=1e-9)


def test_scaling_features_by_s_scales_fd_by_s_squared():
    a, b = gaussian_features(300, 16, 5), gaussian_features(300, 16, 6, shift=0.2)
    fd = frechet_distance(*moments(a), *moments(b))
    assert frechet_distance(*moments(3 * a), *moments(3 * b)) == pytest.approx(9 * fd, rel=1e-9)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(7)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    var1, var2 = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    for method in FD_METHODS:
        got = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2), method)
        assert got == pytest.approx(expected, rel=1e-10)


def test_the_three_trace_methods_agree():
    a, b = gaussian_features(500, 64, 8), gaussian_features(500, 64, 9, shift=0.1)
    values = [frechet_distance(*moments(a), *moments(b), m) for m in FD_METHODS]
    assert values[1] == pytest.approx(values[0], rel=1e-9)
    assert values[2] == pytest.approx(values[0], rel=1e-9)


def test_agreement_with_pytorch_fid_and_torch_fidelity():
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    (mu1, s1), (mu2, s2) = (
        moments(gaussian_features(600, 48, 10)),
        moments(gaussian_features(600, 48, 11, shift=0.3)),
    )
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=1e-9)
    with warnings.catch_warnings():  # SciPy deprecates the disp= argument pytorch-fid passes
        warnings.simplefilter("ignore")
        pfid = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(pfid, rel=1e-9)


def test_cleanfid_if_installed():
    cleanfid = pytest.importorskip("cleanfid.fid")
    (mu1, s1), (mu2, s2) = (
        moments(gaussian_features(300, 24, 12)),
        moments(gaussian_features(300, 24, 13, shift=0.3)),
    )
    expected = cleanfid.frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fewer_images_than_dimensions_stays_finite():
    a, b = gaussian_features(20, 64, 14), gaussian_features(20, 64, 15, shift=0.2)
    values = [frechet_distance(*moments(a), *moments(b), m) for m in FD_METHODS]
    assert all(np.isfinite(values))
    assert values[2] == pytest.approx(values[0], rel=1e-6)


def test_sqrtm_falls_back_to_the_epsilon_offset(monkeypatch):
    calls = []
    real_sqrtm = fid_module._sqrtm

    def flaky_sqrtm(a):  # first call fails like sqrtm of a singular product
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fid_module, "_sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([4.0, 1.0])
    with pytest.warns(RuntimeWarning, match="1e-06"):
        value = frechet_distance(np.zeros(2), s1, np.zeros(2), s2, "sqrtm")
    eps = 1e-6
    np.testing.assert_allclose(calls[1], (s1 + eps * np.eye(2)) @ (s2 + eps * np.eye(2)))
    expected = 1 + 0 + 4 + 1 - 2 * (np.sqrt((1 + eps) * (4 + eps)) + np.sqrt(eps * (1 + eps)))
    assert value == pytest.approx(expected, rel=1e-12)


def test_sqrtm_mode_rejects_a_non_psd_product():
    s1, s2 = np.diag([1.0, 1.0]), np.diag([-1.0, 1.0])  # not a covariance
    with pytest.raises(GenzooError, match="imaginary component"):
        frechet_distance(np.zeros(2), s1, np.zeros(2), s2, "sqrtm")


def test_bad_statistics_are_rejected():
    with pytest.raises(GenzooError, match="NaN or inf"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(GenzooError, match="disagree in shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(GenzooError, match="unknown FD method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), "svd")


# -- statistics ---------------------------------------------------------------------------------


def test_streamed_statistics_equal_numpy():
    x = gaussian_features(500, 40, 16, shift=25.0).astype(np.float32)  # large mean, as pool_3
    stats = stats_of(torch.from_numpy(x), batch_size=64)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(stats.mu, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x64, rowvar=False), rtol=1e-10, atol=1e-12)
    rel = np.abs(stats.sigma - np.cov(x64, rowvar=False)).max() / np.abs(stats.sigma).max()
    assert rel <= 1e-12
    assert stats.mu.dtype == stats.sigma.dtype == np.float64
    assert stats.num == 500


def test_statistics_do_not_depend_on_batch_size_or_order():
    x = gaussian_features(300, 24, 17, shift=3.0)
    reference = stats_of(x, batch_size=300)
    for batch_size in (1, 7, 64):
        s = stats_of(x, batch_size=batch_size)
        np.testing.assert_allclose(s.mu, reference.mu, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(s.sigma, reference.sigma, rtol=1e-11, atol=1e-13)
    shuffled = stats_of(x[np.random.default_rng(0).permutation(300)], batch_size=7)
    np.testing.assert_allclose(shuffled.sigma, reference.sigma, rtol=1e-11, atol=1e-13)


def test_statistics_reject_non_finite_features_and_single_images():
    acc = StreamingStats("pool3")
    with pytest.raises(GenzooError, match="NaN or inf"):
        acc.update(torch.tensor([[1.0, float("inf")]]))
    acc = StreamingStats("pool3")
    acc.update(torch.ones(1, 3))
    with pytest.raises(GenzooError, match="at least 2"):
        acc.result()
