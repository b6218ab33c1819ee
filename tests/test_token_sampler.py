"""The shared token sampler: filters, temperature, guidance and its schedules, the draws."""

from __future__ import annotations

import math

import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.sampling.tokens import (
    add_gumbel_noise,
    cfg_active,
    cfg_scale_at,
    check_cfg_options,
    check_token_options,
    draw_tokens,
    filter_top_k,
    filter_top_p,
    guide_logits,
    gumbel_argmax,
    gumbel_noise,
    token_probs,
)

INF = float("inf")


def test_top_k_keeps_the_k_largest_and_their_ties():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, 0.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
    out = filter_top_k(logits, 2)
    assert out.tolist() == [[-INF, 5.0, 3.0, 3.0, -INF], [4.0, 3.0, -INF, -INF, -INF]]
    assert torch.equal(filter_top_k(logits, 0), logits)
    assert torch.equal(filter_top_k(logits, 99), logits)  # k above V keeps everything


def _naive_top_p(row: list[float], p: float) -> list[float]:
    """Walk the tokens from most to least likely; keep one while the mass before it <= p."""
    total = sum(math.exp(v) for v in row)
    order = sorted(range(len(row)), key=lambda i: -row[i])
    kept, before = set(), 0.0
    for i in order:
        if before > p and kept:
            break
        kept.add(i)
        before += math.exp(row[i]) / total
    return [v if i in kept else -INF for i, v in enumerate(row)]


def test_top_p_keeps_the_nucleus_and_the_first_token_past_it():
    torch.manual_seed(0)
    logits = torch.randn(6, 12) * 2
    for p in (0.05, 0.3, 0.7, 0.95):
        got = filter_top_p(logits, p)
        want = torch.tensor([_naive_top_p(row, p) for row in logits.tolist()])
        torch.testing.assert_close(got, want)
    # probabilities 0.5, 0.3, 0.2: top_p = 0.6 keeps the first two (0.5 < 0.6, then crossing)
    row = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.isinf(filter_top_p(row, 0.6)).tolist() == [[False, False, True]]
    for off in (0.0, 1.0):
        assert torch.equal(filter_top_p(logits, off), logits)


def test_token_probs_divides_by_temperature_before_filtering():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    probs = token_probs(logits, temperature=0.5)
    want = torch.softmax(logits / 0.5, dim=-1)
    torch.testing.assert_close(probs, want)
    # top_p = 0.8 sees the tempered distribution: at temperature 1 the top token has 0.64 and
    # the second crosses 0.8 (two kept); at 0.5 the top token alone has 0.87 (one kept)
    assert (token_probs(logits, 1.0, top_p=0.8) > 0).tolist() == [[True, True, False, False]]
    assert token_probs(logits, 0.5, top_p=0.8).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    kept = token_probs(logits, temperature=0.5, top_k=2)
    e = [math.exp(4.0), math.exp(2.0)]
    assert kept.tolist()[0] == pytest.approx([e[0] / sum(e), e[1] / sum(e), 0, 0])


def test_guidance_forms():
    c, u = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    assert guide_logits(c, u, 2.0).tolist() == [5.0, 0.0]  # u + (c − u)·s
    assert guide_logits(c, u, 2.0, form="cond").tolist() == [7.0, -1.0]  # c + (c − u)·s
    assert torch.equal(guide_logits(c, u, 1.0), c)
    with pytest.raises(GenzooError, match="guidance form"):
        guide_logits(c, u, 2.0, form="x")


def test_guidance_schedules():
    assert cfg_scale_at(7, 10, 4.0) == 4.0
    assert cfg_scale_at(0, 10, 4.0, "linear") == 1.0
    assert cfg_scale_at(5, 10, 4.0, "linear") == pytest.approx(2.5)
    assert cfg_scale_at(5, 10, 4.0, "linear", start=0.0) == pytest.approx(2.0)  # MaskGIT
    for step, power in [(0, 2.75), (3, 2.75), (8, 1.2), (15, 0.5)]:
        want = 1 + (16.0 - 1) * (1 - math.cos(math.pi * (step / 16) ** power)) / 2
        got = cfg_scale_at(step, 16, 16.0, "power-cosine", power)
        assert got == pytest.approx(want, rel=1e-6)
    assert cfg_scale_at(0, 16, 16.0, "power-cosine", 2.0) == 1.0  # RAR starts unguided
    assert cfg_scale_at(0, 16, 16.0, "power-cosine", 0.0) == 16.0  # power 0: constant
    with pytest.raises(GenzooError, match="cfg_schedule"):
        cfg_scale_at(0, 16, 2.0, "cosine")


@pytest.mark.parametrize("interval", [-1, -3, 0, 2, 10])
def test_cfg_interval_follows_llamagens_decode_loop(interval):
    n = 8
    flags = [True]  # the prefill step is always guided
    flag = True
    for i in range(n - 1):  # the official decode loop, its flag once switched off stays off
        if interval > -1 and i > interval:
            flag = False
        flags.append(flag)
    assert [cfg_active(step, interval) for step in range(n)] == flags


def test_global_rng_draw_is_one_multinomial_per_step():
    probs = torch.softmax(torch.randn(4, 50), dim=-1)
    torch.manual_seed(7)
    got = draw_tokens(probs)
    after = torch.rand(1)
    torch.manual_seed(7)
    want = torch.multinomial(probs, 1)[:, 0]
    assert torch.equal(got, want) and torch.equal(after, torch.rand(1))
    assert got.dtype == torch.long and got.shape == (4,)


def test_per_sample_generators_draw_each_row_alone():
    probs = torch.softmax(torch.randn(3, 50), dim=-1)
    rows = draw_tokens(probs, [torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    for i, seed in enumerate((1, 2, 3)):
        alone = torch.multinomial(
            probs[i : i + 1], 1, generator=torch.Generator().manual_seed(seed)
        )
        assert rows[i] == alone[0, 0]
    one = torch.Generator().manual_seed(5)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5))[:, 0]
    assert torch.equal(draw_tokens(probs, one), want)
    with pytest.raises(GenzooError, match="2 generators for a batch of 3"):
        draw_tokens(probs, [torch.Generator(), torch.Generator()])
    greedy = token_probs(torch.tensor([[0.1, 3.0, 2.0]]), top_k=1)
    assert greedy.tolist() == [[0.0, 1.0, 0.0]]


def test_gumbel_noise_reenacts_maskgits_global_draw():
    x = torch.randn(2, 5, 7)
    torch.manual_seed(3)
    got = add_gumbel_noise(x, 0.5)
    torch.manual_seed(3)
    u = torch.zeros_like(x).uniform_(0, 1)
    want = x + 0.5 * -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))
    assert torch.equal(got, want)
    gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
    rows = gumbel_noise(x, gens)
    alone = gumbel_noise(x[1:], [torch.Generator().manual_seed(5)])
    assert torch.equal(rows[1], alone[0]) and not torch.equal(rows[0], rows[1])
    ids, confidence = gumbel_argmax(x, 0.0)
    assert torch.equal(ids, x.argmax(-1)) and torch.equal(confidence, x.max(-1).values)


@pytest.mark.parametrize(
    "options, match",
    [
        ((1.0, 0, 1.5), "top_p=1.5"),
        ((1.0, 0, -0.1), "top_p=-0.1"),
        ((1.0, -1, 1.0), "top_k=-1"),
        ((1.0, 2.5, 1.0), "top_k=2.5"),
        ((0.0, 0, 1.0), "temperature=0.0"),
        ((-1.0, 0, 1.0), "temperature=-1.0"),
        ((float("nan"), 0, 1.0), "temperature=nan"),
    ],
)
def test_bad_token_options_are_named(options, match):
    with pytest.raises(GenzooError, match=match):
        check_token_options(*options)


def test_bad_guidance_options_are_named():
    check_cfg_options(1.5, "power-cosine", 2.0, -1)
    for args, match in [
        ((float("inf"), "constant", 1.0, -1), "cfg=inf"),
        ((2.0, "cos", 1.0, -1), "cfg_schedule='cos'"),
        ((2.0, "constant", -1.0, -1), "cfg_pow=-1.0"),
        ((2.0, "constant", 1.0, 0.5), "cfg_interval=0.5"),
    ]:
        with pytest.raises(GenzooError, match=match):
            check_cfg_options(*args)
