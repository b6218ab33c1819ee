"""The learning-rate schedule: warm-up, then constant or a decay that ends at zero."""

from __future__ import annotations

import math

import pytest

from genzoo.errors import GenzooError
from genzoo.train.schedule import check_lr_schedule, lr_at


def test_warmup_ramps_linearly_then_constant_holds():
    lrs = [lr_at(s, 1e-3, 4, 10, "constant") for s in range(10)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4:] == [1e-3] * 6


def test_cosine_and_linear_decay_from_the_peak_to_zero_after_warmup():
    for name in ("cosine", "linear"):
        lrs = [lr_at(s, 2e-3, 10, 110, name) for s in range(111)]
        assert lrs[10] == pytest.approx(2e-3)  # the first step after warm-up is at the peak
        assert lrs[110] == 0.0
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # never rises again
    half = lr_at(60, 2e-3, 10, 110, "cosine")
    assert half == pytest.approx(1e-3) and lr_at(60, 2e-3, 10, 110, "linear") == half
    assert lr_at(35, 2e-3, 10, 110, "cosine") == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)))


def test_unknown_schedule_is_named(tmp_path):
    with pytest.raises(GenzooError, match="train.lr_schedule='step'.*cosine"):
        check_lr_schedule("step")
