"""Gaussian diffusion: hybrid loss, ddpm/ddim samplers, randomness and the official DiT loop."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from genzoo.errors import GenzooError
from genzoo.families.diffusion import DiffusionConfig, GaussianDiffusion

T = 1000
C, H, W = 4, 4, 4
NUM_CLASSES = 10


def base_alphas_cumprod() -> np.ndarray:
    """ᾱ of DiT's linear schedule (β from 1e-4 to 0.02 over 1000 steps), float64."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, T, dtype=np.float64))


def col(values, t: torch.Tensor) -> torch.Tensor:
    """A float64 table indexed by t, then cast to float32 and shaped (N, 1, 1, 1)."""
    return torch.from_numpy(np.asarray(values, dtype=np.float64))[t].float().view(-1, 1, 1, 1)


class TinyNet(nn.Module):
    """A small conditional conv net: conv(x)·cos(t/300) + embedding(y), variance half in [-1, 1]."""

    def __init__(self, learn_sigma: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        out = 2 * C if learn_sigma else C
        self.conv = nn.Conv2d(C, out, 3, padding=1)
        self.emb = nn.Embedding(NUM_CLASSES + 1, out)
        with torch.no_grad():
            self.conv.weight.mul_(0.3)
            self.emb.weight.mul_(0.3)

    def forward(self, x, t, y):
        scale = torch.cos(t.float() / 300).view(-1, 1, 1, 1)
        out = self.conv(x) * scale + self.emb(y)[:, :, None, None]
        if out.shape[1] == C:
            return out
        return torch.cat([out[:, :C], torch.tanh(out[:, C:])], 1)


class ExactNet:
    """Returns the true prediction for x_t built from a known x0 (closed form in ᾱ of t)."""

    def __init__(self, x0: torch.Tensor, predict: str, learn_sigma: bool):
        self.x0, self.predict, self.learn_sigma = x0.double(), predict, learn_sigma
        self.ac = base_alphas_cumprod()

    def __call__(self, x, t, y):
        a = torch.from_numpy(self.ac)[t].view(-1, 1, 1, 1)
        eps = (x.double() - a.sqrt() * self.x0) / (1 - a).sqrt()
        out = {"eps": eps, "x0": self.x0, "v": a.sqrt() * eps - (1 - a).sqrt() * self.x0}
        out = out[self.predict].float()
        return torch.cat([out, torch.zeros_like(out)], 1) if self.learn_sigma else out


def family(**kw) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(**kw))


# -- samplers -------------------------------------------------------------------------------
@pytest.mark.parametrize("predict", ["eps", "v", "x0"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_exact_prediction_recovers_x0(predict, sampler):
    """True predictions: DDIM (eta 0) is exact, and DDPM's last (noiseless) step is x0_hat."""
    torch.manual_seed(0)
    x0 = torch.rand(2, C, H, W) * 1.6 - 0.8
    fam = family(predict=predict)
    out = fam.sample(
        ExactNet(x0, predict, learn_sigma=True),
        torch.tensor([1, 2]),
        noise=torch.randn(2, C, H, W),
        sampler=sampler,
        steps=10,
        null_label=NUM_CLASSES,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(out, x0, atol=2e-4, rtol=0)


def test_clip_denoised_clamps_x0_hat():
    x0 = torch.full((1, C, H, W), 3.0)
    net = ExactNet(x0, "eps", learn_sigma=True)
    kw = dict(noise=torch.randn(1, C, H, W), steps=5, null_label=NUM_CLASSES)
    y = torch.tensor([0])
    assert family().sample(net, y, sampler="ddim", **kw).min() > 2.9
    clipped = family().sample(net, y, sampler="ddim", clip_denoised=True, **kw)
    assert clipped.max() <= 1.0 + 1e-6
    clipped = family().sample(net, y, sampler="ddpm", clip_denoised=True, **kw)
    assert clipped.max() <= 1.0 + 1e-6


def test_network_sees_original_integer_indices():
    seen = []

    def net(x, t, y):
        seen.append(t.clone())
        return torch.zeros(x.shape[0], 2 * C, H, W)

    family().sample(
        net,
        torch.tensor([3]),
        noise=torch.randn(1, C, H, W),
        sampler="ddpm",
        steps=10,
        null_label=NUM_CLASSES,
    )
    assert [int(t[0]) for t in seen] == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert all(t.dtype == torch.long for t in seen)


@pytest.mark.parametrize("sampler,options", [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_generator_makes_sampling_deterministic(sampler, options):
    net, fam = TinyNet(), family()
    z, y = torch.randn(2, C, H, W), torch.tensor([1, 2])

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return fam.sample(
            net,
            y,
            noise=z,
            sampler=sampler,
            steps=8,
            cfg=2.0,
            null_label=NUM_CLASSES,
            generator=g,
            **options,
        )

    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))
    before = torch.get_rng_state()
    run(5)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left alone


def test_ddim_eta0_ignores_the_generator():
    net, fam = TinyNet(), family()
    z, y = torch.randn(2, C, H, W), torch.tensor([1, 2])
    outs = [
        fam.sample(
            net,
            y,
            noise=z,
            sampler="ddim",
            steps=6,
            null_label=NUM_CLASSES,
            generator=torch.Generator().manual_seed(s),
        )
        for s in (0, 1)
    ]
    assert torch.equal(outs[0], outs[1])


def reference_dit_loop(net, z, y, *, kept, scale, sampler, eta=0.0):
    """DiT's sampling loop written out from its published algorithm (p_sample_loop /
    ddim_sample_loop on a SpacedDiffusion, model = forward_with_cfg guiding 3 channels).

    Under guidance the state is the doubled batch [z; z] with labels [y; null], and every step
    draws randn_like of that whole state; the result is the first half.
    """
    ac_base = base_alphas_cumprod()
    betas = 1 - ac_base[kept] / np.append(1.0, ac_base[kept][:-1])
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    log_var_clipped = np.log(np.append(post_var[1], post_var[1:]))
    coef1 = betas * np.sqrt(ac_prev) / (1 - ac)
    coef2 = (1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac)
    guided = scale != 1.0
    n = z.shape[0]
    x = torch.cat([z, z]) if guided else z
    labels = torch.cat([y, torch.full_like(y, NUM_CLASSES)]) if guided else y
    index_map = torch.tensor(kept)

    def model(x, t):
        if not guided:
            return net(x, index_map[t], labels)
        half = x[: len(x) // 2]
        out = net(torch.cat([half, half]), index_map[t], labels)
        eps, rest = out[:, :3], out[:, 3:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond + scale * (cond - uncond)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    for i in reversed(range(len(kept))):
        t = torch.tensor([i] * x.shape[0])
        eps, var_values = torch.split(model(x, t), C, dim=1)
        frac = (var_values + 1) / 2
        log_var = frac * col(np.log(betas), t) + (1 - frac) * col(log_var_clipped, t)
        x0 = col(np.sqrt(1 / ac), t) * x - col(np.sqrt(1 / ac - 1), t) * eps
        not_last = (t != 0).float().view(-1, 1, 1, 1)
        if sampler == "ddpm":
            mean = col(coef1, t) * x0 + col(coef2, t) * x
            noise = torch.randn_like(x)
            x = mean + not_last * torch.exp(0.5 * log_var) * noise
        else:
            eps = (col(np.sqrt(1 / ac), t) * x - x0) / col(np.sqrt(1 / ac - 1), t)
            a, a_prev = col(ac, t), col(ac_prev, t)
            sigma = eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
            noise = torch.randn_like(x)
            mean = x0 * torch.sqrt(a_prev) + torch.sqrt(1 - a_prev - sigma**2) * eps
            x = mean + not_last * sigma * noise
    return x[:n]


@pytest.mark.parametrize("scale", [1.0, 4.0])
@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_global_rng_reproduces_the_official_loop(sampler, eta, scale):
    net, fam = TinyNet(), family()
    y = torch.tensor([1, 7, 3, 0])
    z = torch.randn(4, C, H, W)
    options = {"eta": eta} if sampler == "ddim" else {}
    torch.manual_seed(123)
    ours = fam.sample(
        net,
        y,
        noise=z,
        sampler=sampler,
        steps=10,
        cfg=scale,
        cfg_channels=3,
        null_label=NUM_CLASSES,
        **options,
    )
    after_ours = torch.get_rng_state()
    torch.manual_seed(123)
    kept = [round(k * 999 / 9) for k in range(10)]
    with torch.no_grad():
        ref = reference_dit_loop(net.eval(), z, y, kept=kept, scale=scale, sampler=sampler, eta=eta)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert torch.equal(after_ours, torch.get_rng_state())  # same number of draws, same sizes
    torch.manual_seed(123)
    again = fam.sample(
        net,
        y,
        noise=z,
        sampler=sampler,
        steps=10,
        cfg=scale,
        cfg_channels=3,
        null_label=NUM_CLASSES,
        **options,
    )
    assert torch.equal(ours, again)


def test_guidance_interval_uses_original_index_noise_level():
    sizes = []

    def net(x, t, y):
        sizes.append((int(t[0]), x.shape[0]))
        return torch.zeros(x.shape[0], 2 * C, H, W)

    family().sample(
        net,
        torch.tensor([1, 2]),
        noise=torch.randn(2, C, H, W),
        sampler="ddim",
        steps=10,
        cfg=3.0,
        cfg_interval=(0.0, 0.5),
        null_label=NUM_CLASSES,
    )
    # Noise level = t/1000: guided (doubled batch of 4) only for t <= 500.
    assert sizes == [
        (t, 4 if t <= 500 else 2) for t in (999, 888, 777, 666, 555, 444, 333, 222, 111, 0)
    ]


def test_sampling_uses_eval_mode_and_restores_training():
    net = TinyNet()
    net.train()
    modes = []
    net.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    family().sample(
        net,
        torch.tensor([1]),
        noise=torch.randn(1, C, H, W),
        sampler="ddim",
        steps=3,
        null_label=NUM_CLASSES,
    )
    assert modes == [False, False, False] and net.training


def test_sampler_errors():
    fam, net = family(), TinyNet()
    kw = dict(noise=torch.randn(1, C, H, W), steps=3, null_label=NUM_CLASSES)
    with pytest.raises(GenzooError, match="ddpm, ddim"):
        fam.sample(net, torch.tensor([1]), sampler="euler", **kw)
    with pytest.raises(GenzooError, match="eta"):
        fam.sample(net, torch.tensor([1]), sampler="ddim", etta=0.5, **kw)
    with pytest.raises(GenzooError, match="learn_sigma"):
        fam.sample(TinyNet(learn_sigma=False), torch.tensor([1]), sampler="ddim", **kw)
    with pytest.raises(GenzooError, match="predict"):
        family(predict="score")


# -- training -------------------------------------------------------------------------------
def test_loss_draws_t_then_noise():
    """Without learned variance the loss is the eps MSE at t ~ U{0..T-1}, noise ~ N(0, I)."""
    net, fam = TinyNet(learn_sigma=False), family(learn_sigma=False)
    x, y = torch.rand(3, C, H, W) * 2 - 1, torch.tensor([0, 4, 9])
    ac = base_alphas_cumprod()

    def expected(t, noise):
        x_t = col(np.sqrt(ac), t) * x + col(np.sqrt(1 - ac), t) * noise
        return ((noise - net(x_t, t, y)) ** 2).mean()

    got = fam.loss(net, x, y, generator=torch.Generator().manual_seed(3))["loss"]
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, T, (3,), generator=g)
    torch.testing.assert_close(got, expected(t, torch.randn(x.shape, generator=g)))

    torch.manual_seed(4)
    got = fam.loss(net, x, y)["loss"]
    torch.manual_seed(4)
    t = torch.randint(0, T, (3,))
    torch.testing.assert_close(got, expected(t, torch.randn_like(x)))


def test_v_prediction_target():
    fam = family(predict="v")
    x0, eps = torch.randn(2, C, H, W), torch.randn(2, C, H, W)
    t = torch.tensor([10, 700])
    ac = base_alphas_cumprod()
    expected = col(np.sqrt(ac), t) * eps - col(np.sqrt(1 - ac), t) * x0
    torch.testing.assert_close(fam.target(x0, eps, t), expected)


def learned_log_variance(v: torch.Tensor, t: int) -> np.ndarray:
    """IDDPM learned range from the full 1000-step schedule, float64."""
    betas = np.linspace(1e-4, 0.02, T)
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post = betas * (1 - ac_prev) / (1 - ac)
    min_log = np.log(post[1]) if t == 0 else np.log(post[t])
    frac = (v.double().numpy() + 1) / 2
    return frac * np.log(betas[t]) + (1 - frac) * min_log


def test_vb_term_at_t0_is_the_decoder_nll():
    fam = family()
    torch.manual_seed(0)
    x0 = torch.randint(0, 256, (2, C, H, W)).float() / 127.5 - 1  # 8-bit data in [-1, 1]
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the open-ended edge bins
    eps_hat = torch.randn(2, C, H, W) * 0.1
    v = torch.rand(2, C, H, W) * 2 - 1
    ac0 = base_alphas_cumprod()[0]
    x_t = torch.from_numpy(math.sqrt(ac0) * x0.double().numpy()).float()
    got = fam.vb_bits(x0, x_t, torch.zeros(2, dtype=torch.long), eps_hat, v)

    # At t = 0 the model mean is x0_hat itself (posterior coefficients 1 and 0).
    mean = (x_t.double().numpy() - math.sqrt(1 - ac0) * eps_hat.double().numpy()) / math.sqrt(ac0)
    std = np.exp(0.5 * learned_log_variance(v, 0))
    xs = x0.double().numpy()
    upper = np.where(xs > 0.999, 1.0, norm.cdf((xs + 1 / 255 - mean) / std))
    lower = np.where(xs < -0.999, 0.0, norm.cdf((xs - 1 / 255 - mean) / std))
    nll_bits = -np.log(upper - lower).reshape(2, -1).mean(1) / math.log(2)
    np.testing.assert_allclose(got.numpy(), nll_bits, rtol=2e-3)


def test_vb_term_for_t_positive_is_the_gaussian_kl():
    fam = family()
    torch.manual_seed(1)
    x0, x_t = torch.rand(1, C, H, W) * 2 - 1, torch.randn(1, C, H, W)
    eps_hat, v = torch.randn(1, C, H, W), torch.rand(1, C, H, W) * 2 - 1
    t = 400
    got = fam.vb_bits(x0, x_t, torch.tensor([t]), eps_hat, v)

    betas = np.linspace(1e-4, 0.02, T)
    ac = np.cumprod(1 - betas)
    a, a_prev = ac[t], ac[t - 1]
    c1, c2 = betas[t] * np.sqrt(a_prev) / (1 - a), (1 - a_prev) * np.sqrt(1 - betas[t]) / (1 - a)
    xs, xt = x0.double().numpy(), x_t.double().numpy()
    x0_hat = (xt - np.sqrt(1 - a) * eps_hat.double().numpy()) / np.sqrt(a)
    var_q = betas[t] * (1 - a_prev) / (1 - a)
    var_p = np.exp(learned_log_variance(v, t))
    mu_q, mu_p = c1 * xs + c2 * xt, c1 * x0_hat + c2 * xt
    kl = 0.5 * (np.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1)
    np.testing.assert_allclose(got.numpy(), [kl.mean() / math.log(2)], rtol=1e-4)


class SplitNet(nn.Module):
    """Mean branch a·x and variance branch tanh(b), with separate parameters."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))
        self.b = nn.Parameter(torch.tensor(0.2))

    def forward(self, x, t, y):
        return torch.cat([self.a * x, torch.tanh(self.b) * torch.ones_like(x)], 1)


def test_vb_term_has_no_gradient_into_the_mean():
    fam, net = family(), SplitNet()
    x, y = torch.rand(4, C, H, W) * 2 - 1, torch.zeros(4, dtype=torch.long)
    out = fam.loss(net, x, y, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert out["vb"] > 0 and net.b.grad is not None and net.b.grad != 0
    # The same draws, MSE alone: the mean branch gets exactly this gradient.
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, T, (4,), generator=g)
    noise = torch.randn(x.shape, generator=g)
    ac = base_alphas_cumprod()
    x_t = col(np.sqrt(ac), t) * x + col(np.sqrt(1 - ac), t) * noise
    a = torch.tensor(0.3, requires_grad=True)
    ((noise - a * x_t) ** 2).mean().backward()
    torch.testing.assert_close(net.a.grad, a.grad)
    torch.testing.assert_close(out["loss"], out["mse"] + out["vb"])


@pytest.mark.slow
def test_hybrid_loss_decreases_when_training():
    torch.manual_seed(0)
    fam, net = family(), TinyNet()
    # Toy data: each class is a constant image at its own gray level.
    y = torch.arange(8) % 4
    x = (y.float() / 2 - 0.75).view(-1, 1, 1, 1).expand(-1, C, H, W).contiguous()

    def evaluate():
        with torch.no_grad():
            return (
                sum(
                    fam.loss(net, x, y, generator=torch.Generator().manual_seed(s))["loss"]
                    for s in range(8)
                )
                / 8
            )

    before = evaluate()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(100)
    for _ in range(30):
        loss = fam.loss(net, x, y, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.9 * before
