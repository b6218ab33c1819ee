"""DDPM schedules and respacing, against values computed here from the published formulas."""

import math

import numpy as np
import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.families.diffusion import DiffusionConfig, GaussianDiffusion
from genzoo.families.diffusion_schedule import (
    DiffusionSchedule,
    beta_schedule,
    extract,
    space_timesteps,
)


def evenly_strided(start: int, size: int, count: int) -> list[int]:
    """`count` indices over [start, start + size): a fractional stride accumulated by repeated
    addition and rounded with Python's round (ADM's definition; the accumulation matters, e.g.
    7 * (99/14) summed gives 49.4999… where the product gives 49.5)."""
    if count == 1:
        return [start]
    out, position = [], 0.0
    for _ in range(count):
        out.append(start + round(position))
        position += (size - 1) / (count - 1)
    return out


def test_respacing_examples_from_dit():
    assert sorted(space_timesteps(1000, "10")) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    expected_250 = [round(k * 999 / 249) for k in range(250)]
    got_250 = sorted(space_timesteps(1000, "250"))
    assert got_250 == expected_250
    assert got_250[:3] == [0, 4, 8] and got_250[-2:] == [995, 999]
    assert sorted(space_timesteps(1000, "ddim25")) == list(range(0, 1000, 40))
    assert space_timesteps(1000, 10) == space_timesteps(1000, "10")


def test_respacing_sections():
    # 300 steps in three sections of 100, taking 10, 15 and 20 from them.
    expected = evenly_strided(0, 100, 10) + evenly_strided(100, 100, 15)
    expected += evenly_strided(200, 100, 20)
    assert sorted(space_timesteps(300, "10,15,20")) == sorted(set(expected))
    # Uneven split: the first sections get the extra steps.
    expected = evenly_strided(0, 4, 2) + evenly_strided(4, 3, 3)
    assert sorted(space_timesteps(7, "2,3")) == expected
    assert sorted(space_timesteps(1000, "1000")) == list(range(1000))


@pytest.mark.parametrize("bad", ["ddim600", "2000", "ten", "0", "5,x"])
def test_respacing_errors(bad):
    with pytest.raises(GenzooError):
        space_timesteps(1000, bad)


def test_linear_and_cosine_betas():
    np.testing.assert_array_equal(
        beta_schedule("linear", 1000), np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    )
    np.testing.assert_allclose(beta_schedule("linear", 250), np.linspace(4e-4, 0.08, 250))
    n = 50
    f = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
    expected = np.minimum([1 - f[i + 1] / f[i] for i in range(n)], 0.999)
    got = beta_schedule("cosine", n)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert got[-1] == 0.999  # the cap binds at the end
    assert got.dtype == np.float64
    with pytest.raises(GenzooError, match="linear"):
        beta_schedule("quadratic", 10)


def independent_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    """The DDPM posterior tables from their definitions, in float64, by explicit loops."""
    out: dict[str, list[float]] = {k: [] for k in ("ac", "ac_prev", "var", "coef1", "coef2")}
    running = 1.0
    for beta in betas:
        prev = running
        running = running * (1 - beta)
        out["ac"].append(running)
        out["ac_prev"].append(prev)
        out["var"].append(beta * (1 - prev) / (1 - running))
        out["coef1"].append(beta * math.sqrt(prev) / (1 - running))
        out["coef2"].append((1 - prev) * math.sqrt(1 - beta) / (1 - running))
    tables = {k: np.array(v) for k, v in out.items()}
    log_var = np.log(tables["var"][1:])
    tables["log_var_clipped"] = np.concatenate([[log_var[0]], log_var])
    return tables


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respaced_schedule_tables(schedule):
    base = beta_schedule(schedule, 1000)
    ac_base = np.cumprod(1 - base)
    kept = sorted(space_timesteps(1000, "10"))
    # Respaced betas: 1 - ᾱ(t_i) / ᾱ(t_{i-1}), with ᾱ before the first kept step = 1.
    ac_kept = ac_base[kept]
    betas = 1 - ac_kept / np.concatenate([[1.0], ac_kept[:-1]])
    ref = independent_tables(betas)

    fam = GaussianDiffusion(DiffusionConfig(noise_schedule=schedule))
    s = fam.spaced(10)
    assert s.num_timesteps == 10
    assert list(s.timestep_map) == kept
    np.testing.assert_allclose(s.betas, betas, rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod, ref["ac"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(s.alphas_cumprod, ac_kept, rtol=1e-12, atol=1e-15)  # ᾱ kept
    np.testing.assert_allclose(s.alphas_cumprod_prev, ref["ac_prev"], rtol=1e-12)
    np.testing.assert_allclose(s.posterior_variance, ref["var"], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(s.posterior_log_variance_clipped, ref["log_var_clipped"], rtol=1e-12)
    np.testing.assert_allclose(s.posterior_mean_coef1, ref["coef1"], rtol=1e-12)
    np.testing.assert_allclose(s.posterior_mean_coef2, ref["coef2"], rtol=1e-12)
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]


def test_full_schedule_keeps_every_step():
    fam = GaussianDiffusion(DiffusionConfig())
    for steps in (None, "", 1000, "1000"):
        s = fam.spaced(steps)
        assert s.num_timesteps == 1000
        assert list(s.timestep_map) == list(range(1000))
    np.testing.assert_allclose(fam.schedule.betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-10)


def test_extract_indexes_float64_then_casts():
    table = np.array([0.1, 1 / 3, 2 / 3], dtype=np.float64)
    t = torch.tensor([2, 0, 1])
    got = extract(table, t, ndim=4)
    assert got.shape == (3, 1, 1, 1) and got.dtype == torch.float32
    expected = torch.tensor([2 / 3, 0.1, 1 / 3], dtype=torch.float64).float()
    assert torch.equal(got.flatten(), expected)


def test_schedule_rejects_bad_betas():
    with pytest.raises(GenzooError):
        DiffusionSchedule(np.array([0.1, 0.0]))
