"""The per-token head (MAR's SimpleMLPAdaLN) and its objectives: layout, forward, guidance,
the cosine respacing, the diffusion loss and the ancestral sampler with temperature, the flow
objective, and the errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch
from mar_layout import (
    Process,
    official_shapes,
    reference_guided_head,
    reference_head,
    reference_head_sample,
    reference_loss,
    respaced_indices,
)

from genzoo.errors import GenzooError
from genzoo.families.token_diffusion import HeadDiffusion, HeadFlow, head_objective
from genzoo.nn.token_head import TokenHead

pytestmark = pytest.mark.usefixtures("one_thread")

CT, D, W, DEPTH = 6, 12, 20, 2


def head_shapes():
    """The `diffloss.net.*` rows of the official table, prefix removed."""
    args = dict(vae_embed_dim=CT, decoder_embed_dim=D, diffloss_w=W, diffloss_d=DEPTH)
    rows = official_shapes(**args)
    return [(k.removeprefix("diffloss.net."), s) for k, s in rows if k.startswith("diffloss.net.")]


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    net = TokenHead(CT, W, 2 * CT, D, DEPTH).eval()
    with torch.no_grad():
        for p in net.parameters():  # random weights everywhere (the official init zeroes some)
            p.copy_(torch.randn_like(p) * 0.3)
    return net


def state_of(net):
    return {k: v.detach() for k, v in net.state_dict().items()}


def test_layout_matches_the_official_table_and_the_init_starts_at_zero():
    net = TokenHead(CT, W, 2 * CT, D, DEPTH)
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == head_shapes()
    out = net(torch.randn(5, CT), torch.randint(0, 1000, (5,)), torch.randn(5, D))
    assert out.shape == (5, 2 * CT) and torch.equal(out, torch.zeros_like(out))
    assert float(net.time_embed.mlp[0].weight.detach().std()) == pytest.approx(0.02, rel=0.2)


def test_forward_matches_the_reference(head):
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(7, CT, generator=g), torch.randn(7, D, generator=g)
    t = torch.tensor([0, 1, 10, 250, 500, 998, 999])
    expected = reference_head(state_of(head), x, t, z, prefix="")
    assert torch.allclose(head(x, t, z).double(), expected, atol=1e-5, rtol=1e-5)


def test_guided_form_guides_every_eps_channel_and_never_the_variance(head):
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(8, CT, generator=g), torch.randn(8, D, generator=g)
    t = torch.tensor([999, 500, 10, 0] * 2)
    out = head.forward_with_cfg(x, t, z, 3.0)
    expected = reference_guided_head(state_of(head), x, t, z, 3.0, prefix="")
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)
    # the second half of x is ignored; each half keeps its own variance values
    assert torch.equal(out, head.forward_with_cfg(torch.cat([x[:4], -x[4:]]), t, z, 3.0))
    plain = head(torch.cat([x[:4], x[:4]]), t, z)
    assert torch.equal(out[:, CT:], plain[:, CT:])
    assert not torch.allclose(out[:4, CT:], out[4:, CT:])


def test_respacing_takes_indices_at_a_fractional_stride():
    objective = HeadDiffusion("100")
    assert list(objective.schedule_for("10").timestep_map) == [0, 111, 222, 333, 444, 555, 666,
                                                               777, 888, 999]  # fmt: skip
    hundred = list(objective.schedule_for(None).timestep_map)
    assert hundred[:8] == [0, 10, 20, 30, 40, 50, 61, 71] and hundred[-2:] == [989, 999]
    assert hundred == respaced_indices(100)
    s = objective.schedule_for(25)
    assert torch.allclose(torch.tensor(s.betas), torch.tensor(Process(respaced_indices(25)).betas))


@pytest.mark.parametrize("bad", [0, 1001, "ddim7x", "abc", 2.5, True])
def test_head_steps_the_respacing_cannot_give_are_refused(bad):
    with pytest.raises(GenzooError, match="head_steps="):
        HeadDiffusion("100").schedule_for(bad)
    with pytest.raises(GenzooError, match="num_sampling_steps="):
        HeadDiffusion("0")
    with pytest.raises(GenzooError, match="head objective 'gauss'"):
        head_objective("gauss")


def test_diffusion_loss_is_mse_plus_vb_and_the_draws_follow_the_official_order(head):
    g = torch.Generator().manual_seed(3)
    target, z = torch.randn(9, CT, generator=g) * 0.5, torch.randn(9, D, generator=g)
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0.0])
    objective, state = HeadDiffusion(), state_of(head)

    def predict(x_t, t):
        return head(x_t, t, z)

    torch.manual_seed(7)
    loss, terms = objective.loss(predict, target, mask)
    loss = loss.detach()
    torch.manual_seed(7)
    t = torch.randint(0, 1000, (9,))  # t first, then the noise
    noise = torch.randn_like(target)
    assert float(loss) == pytest.approx(float(reference_loss(state, target, z, t, noise, mask,
                                                             prefix="")), rel=1e-5)  # fmt: skip
    assert set(terms) == {"mse", "vb"}
    t[1] = 0  # the decoder likelihood at t = 0 as well
    for weights in (mask, None):
        given, _ = objective.loss(predict, target, weights, t=t, noise=noise)
        expected = reference_loss(state, target, z, t, noise, weights, prefix="")
        assert float(given.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_ancestral_sampling_matches_the_reference_and_temperature_scales_step_noise_only(head):
    g = torch.Generator().manual_seed(4)
    n, steps = 3, 6
    z = torch.randn(2 * n, D, generator=g)
    table = torch.randn(n, steps + 1, CT, generator=g)
    objective = HeadDiffusion("100")
    process = Process(respaced_indices(steps))
    for scale, temperature in ((None, 1.0), (2.5, 0.7)):
        rows = z[:n] if scale is None else z
        got = objective.sample(head, rows, temperature=temperature, cfg=scale, steps=steps,
                               noise=table)  # fmt: skip

        def draws(j, count):
            return torch.cat([table[:, j]] * (count // n))

        expected = reference_head_sample(state_of(head), rows, process, temperature=temperature,
                                         scale=scale, first=table[:, 0].double(),
                                         step_draws=draws, prefix="")  # fmt: skip
        assert torch.allclose(got.double(), expected, atol=1e-4, rtol=1e-4)
    # with zero temperature-scaled noise only x_T matters: scaling the step noise changes
    # nothing when every step's noise is zero, while x_T is used unscaled
    zero_steps = table.clone()
    zero_steps[:, 1:] = 0
    a = objective.sample(head, z[:n], temperature=0.3, steps=steps, noise=zero_steps)
    b = objective.sample(head, z[:n], temperature=3.0, steps=steps, noise=zero_steps)
    assert torch.equal(a, b)


def test_global_rng_sampling_draws_x_T_on_the_cpu_then_one_step_noise_per_step(head):
    z = torch.randn(4, D)
    objective = HeadDiffusion()
    torch.manual_seed(5)
    got = objective.sample(head, z, cfg=2.0, steps=4)  # two samples, guided
    torch.manual_seed(5)
    first = torch.randn(2, CT)
    draws = [None] + [torch.randn(4, CT) for _ in range(4)]  # the doubled batch per step
    expected = reference_head_sample(state_of(head), z, Process(respaced_indices(4)),
                                     temperature=1.0, scale=2.0, first=first.double(),
                                     step_draws=lambda j, rows: draws[j], prefix="")  # fmt: skip
    assert torch.allclose(got.double(), expected, atol=1e-4, rtol=1e-4)


def test_flow_objective_regresses_the_velocity_and_integrates_with_euler():
    torch.manual_seed(0)
    net = TokenHead(CT, W, CT, D, DEPTH)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    objective = HeadFlow("4")
    assert objective.output_channels(CT) == CT
    target, z = torch.randn(5, CT), torch.randn(5, D)
    noise, t = torch.randn(5, CT), torch.rand(5)
    loss, _ = objective.loss(lambda x, tt: net(x, tt, z), target, None, t=t, noise=noise)
    x_t = t[:, None] * target + (1 - t[:, None]) * noise
    expected = ((net(x_t, t, z) - (target - noise)) ** 2).mean().detach()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    table = torch.randn(5, 5, CT)
    x = table[:, 0] * 0.5
    with torch.no_grad():
        for k in range(4):
            x = x + 0.25 * net(x, torch.full((5,), k / 4), z)
        got = objective.sample(net, z, temperature=0.5, noise=table)
    assert torch.allclose(got, x, atol=1e-5)
    with pytest.raises(GenzooError, match="Euler step count"):
        objective.sample(net, z, steps="0")


def test_bad_shapes_name_what_is_expected(head):
    with pytest.raises(GenzooError, match=r"expected \(N, 6\)"):
        head(torch.randn(3, 5), torch.zeros(3, dtype=torch.long), torch.randn(3, D))
    with pytest.raises(GenzooError, match="one row per row of x"):
        head(torch.randn(3, CT), torch.zeros(2, dtype=torch.long), torch.randn(3, D))
    with pytest.raises(GenzooError, match="noise table has shape"):
        HeadDiffusion().sample(head, torch.randn(2, D), steps=3, noise=torch.randn(2, 3, CT))
    with pytest.raises(GenzooError, match="positive integer"):
        TokenHead(CT, 0, 2 * CT, D, DEPTH)
    assert math.isfinite(float(HeadDiffusion().num_steps("25")))
