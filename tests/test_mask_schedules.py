"""The one mask-schedule interface: γ(r) of each schedule, the sampling-side counts in the
official operation order, and the training mask-ratio laws with their draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.sampling.mask_schedules import (
    MASK_SCHEDULES,
    mask_ratio,
    masked_after_step,
    num_masked,
    random_mask,
    sample_training_ratios,
    step_mask_ratio,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FORMULAS = {
    "cosine": lambda r: math.cos(math.pi * r / 2),
    "arccos": lambda r: math.acos(r) * 2 / math.pi,
    "linear": lambda r: 1 - r,
    "exp": lambda r: 1 - math.exp(-5 * (1 - r)),  # eMIGM's 1 − e^(−5t) at t = 1 − r
}


@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
def test_each_schedule_is_its_formula_for_floats_and_tensors(schedule):
    points = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    for r in points:
        assert mask_ratio(schedule, r) == pytest.approx(FORMULAS[schedule](r), abs=1e-12)
    as_tensor = mask_ratio(schedule, torch.tensor(points, dtype=torch.float64))
    expected = torch.tensor([FORMULAS[schedule](r) for r in points], dtype=torch.float64)
    assert torch.allclose(as_tensor, expected, atol=1e-12)
    # decreasing from (almost) all masked to none
    values = [mask_ratio(schedule, r) for r in points]
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(0, abs=1e-12)


def test_step_ratios_follow_the_official_operation_order():
    # MaskGIT (1d-tokenizer): ratio = 1.*(step+1)/N, then np.arccos(ratio)/(π·0.5)
    # MAR: np.cos(math.pi / 2. * (step + 1) / num_iter) — a different rounding than cos(π/2·r)
    for total in (3, 7, 8, 64):
        for step in range(1, total + 1):
            assert step_mask_ratio("arccos", step, total) == np.arccos(1.0 * step / total) / (
                math.pi * 0.5
            )
            assert step_mask_ratio("cosine", step, total) == np.cos(math.pi / 2.0 * step / total)


def test_masked_after_step_floors_and_clamps():
    L = 32
    for total in (4, 8, 16):
        masked = L
        for step in range(1, total + 1):
            planned = math.floor(L * np.arccos(step / total) / (math.pi / 2))
            n = masked_after_step("arccos", step, total, L, masked)
            assert n == max(1, min(masked - 1, planned))
            masked = n
    assert masked_after_step("arccos", 1, 100, 4, 1) == 1  # at least one stays masked
    assert masked_after_step("linear", 1, 2, 10, 3) == 2  # at most masked_now − 1


def test_uniform_law_is_maskgit_draw_from_a_generator_and_the_global_rng():
    n, L = 6, 20
    g = torch.Generator().manual_seed(3)
    ratios = sample_training_ratios("uniform", n, g)
    counts = num_masked(ratios, L)
    mask = random_mask(counts, L, g)
    # re-enacted: t ~ U(0,1) per sample, acos(t)/(π/2) clamped, round(L·r) ≥ 1, argsort < count
    g = torch.Generator().manual_seed(3)
    t = torch.rand(n, generator=g)
    expected = (torch.acos(t) / (math.pi * 0.5)).clamp(1e-6, 1.0)
    assert torch.equal(ratios, expected)
    expected_counts = (L * expected).round().clamp(min=1).long()
    assert torch.equal(counts, expected_counts)
    order = torch.rand(n, L, generator=g).argsort(dim=-1)
    assert torch.equal(mask, order < expected_counts[:, None])
    assert torch.equal(mask.sum(1), expected_counts)
    torch.manual_seed(5)
    drawn = sample_training_ratios("uniform", n)
    torch.manual_seed(5)
    t = torch.zeros(n).uniform_(0, 1)
    assert torch.equal(drawn, (torch.acos(t) / (math.pi * 0.5)).clamp(1e-6, 1.0))


def test_truncated_normal_law_shares_one_ratio_and_has_the_right_mean():
    a, b = (0.7 - 1) / 0.25, 0.0
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    mean = 1 + 0.25 * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))
    draws = []
    for seed in range(3000):
        r = sample_training_ratios("truncnorm", 4, torch.Generator().manual_seed(seed))
        assert torch.all(r == r[0]) and 0.7 <= float(r[0]) <= 1.0
        draws.append(float(r[0]))
    assert np.mean(draws) == pytest.approx(mean, abs=0.005)
    assert np.min(draws) < 0.72 and np.max(draws) > 0.99  # fills [0.7, 1]


def test_batch_law_is_emigm_exp_of_one_clamped_time():
    g = torch.Generator().manual_seed(9)
    ratios = sample_training_ratios("batch", 5, g, t_min=0.2)
    t = torch.rand(1, generator=torch.Generator().manual_seed(9)).clamp(min=0.2)
    p = (1 - 1e-3) * t + 1e-3
    assert torch.allclose(ratios, (1 - torch.exp(-5 * p)).expand(5), atol=1e-6)
    counts = num_masked(ratios, 16)
    assert torch.all(counts == counts[0])  # the same masked count across the batch


def test_rounding_modes_and_bad_values_are_refused_by_name():
    r = torch.tensor([0.01, 0.26, 0.5, 1.0])
    assert num_masked(r, 10, "floor").tolist() == [1, 2, 5, 10]
    assert num_masked(r, 10, "round").tolist() == [1, 3, 5, 10]
    assert num_masked(r, 10, "ceil").tolist() == [1, 3, 5, 10]
    with pytest.raises(GenzooError, match="mask schedule 'sqrt'"):
        mask_ratio("sqrt", 0.5)
    with pytest.raises(GenzooError, match=r"r=1.5"):
        mask_ratio("cosine", 1.5)
    with pytest.raises(GenzooError, match="law 'beta'"):
        sample_training_ratios("beta", 2)
    with pytest.raises(GenzooError, match="rounding='up'"):
        num_masked(r, 4, "up")
    with pytest.raises(GenzooError, match="min_ratio=1.2"):
        sample_training_ratios("truncnorm", 2, min_ratio=1.2)
