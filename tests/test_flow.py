"""Flow family: interpolants, velocity loss, ODE/SDE samplers and the official SiT loops."""

import math

import pytest
import torch
from torch import nn

from genzoo.errors import GenzooError
from genzoo.families.flow import Flow, FlowConfig
from genzoo.families.interpolants import GVPPath, LinearPath

C, H, W = 4, 4, 4
NUM_CLASSES = 10


class TinyVelocityNet(nn.Module):
    """conv(x)·(1 + t) + embedding(y); `sigma_half` appends C unused channels (like SiT-XL/2)."""

    def __init__(self, sigma_half: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        out = 2 * C if sigma_half else C
        self.conv = nn.Conv2d(C, out, 3, padding=1)
        self.emb = nn.Embedding(NUM_CLASSES + 1, out)
        with torch.no_grad():
            self.conv.weight.mul_(0.3)

    def forward(self, x, t, y):
        return self.conv(x) * (1 + t).view(-1, 1, 1, 1) + self.emb(y)[:, :, None, None]


class Recorder:
    """Wraps a net, remembering the (batch size, t) of every call."""

    def __init__(self, net):
        self.net, self.calls = net, []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], t.clone()))
        return self.net(x, t, y)


def flow(path="linear") -> Flow:
    return Flow(FlowConfig(path=path))


def sample(fam, net, z, y, sampler, steps, **kw):
    return fam.sample(net, y, noise=z, sampler=sampler, steps=steps, null_label=NUM_CLASSES, **kw)


# -- interpolants ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", [LinearPath(), GVPPath()])
def test_score_from_velocity_matches_gaussian_score(path):
    """Data x1 ~ N(m, s²), noise x0 ~ N(0, 1): x_t = α x1 + σ x0 is Gaussian, with known score and
    known velocity E[α̇ x1 + σ̇ x0 | x_t]."""
    m, s = 0.7, 0.5
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).view(-1, 1, 1, 1)
    for t_value in (0.1, 0.5, 0.9):
        t = torch.full_like(x, t_value)
        if isinstance(path, LinearPath):
            a, da, sg, dsg = t_value, 1.0, 1 - t_value, -1.0
        else:
            q = math.pi / 2
            a, da = math.sin(q * t_value), q * math.cos(q * t_value)
            sg, dsg = math.cos(q * t_value), -q * math.sin(q * t_value)
        var = a * a * s * s + sg * sg
        e_x1 = m + a * s * s / var * (x - a * m)
        e_x0 = sg / var * (x - a * m)
        velocity = da * e_x1 + dsg * e_x0
        expected_score = -(x - a * m) / var
        got = path.score_from_velocity(velocity, x, t)
        torch.testing.assert_close(got, expected_score, rtol=1e-10, atol=1e-10)


def test_interpolants_end_points_and_velocity():
    x0, x1 = torch.randn(2, C, H, W), torch.randn(2, C, H, W)
    for path in (LinearPath(), GVPPath()):
        at0, _ = path.interpolate(x0, x1, torch.zeros(2, 1, 1, 1))
        at1, _ = path.interpolate(x0, x1, torch.ones(2, 1, 1, 1))
        torch.testing.assert_close(at0, x0)
        torch.testing.assert_close(at1, x1, atol=1e-6, rtol=0)
    t = torch.full((2, 1, 1, 1), 0.3)
    _, u = GVPPath().interpolate(x0, x1, t)
    q = math.pi / 2
    torch.testing.assert_close(u, q * math.cos(q * 0.3) * x1 - q * math.sin(q * 0.3) * x0)


# -- loss -----------------------------------------------------------------------------------
def test_loss_draws_noise_then_t_like_sit():
    fam, net = flow(), TinyVelocityNet()
    x, y = torch.randn(3, C, H, W), torch.tensor([1, 2, 3])

    def expected(x0, t):
        tt = t.view(-1, 1, 1, 1)
        return ((net(tt * x + (1 - tt) * x0, t, y) - (x - x0)) ** 2).mean()

    got = fam.loss(net, x, y, generator=torch.Generator().manual_seed(0))["loss"]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(got, expected(x0, torch.rand((3,), generator=g)))

    torch.manual_seed(1)
    got = fam.loss(net, x, y)["loss"]
    torch.manual_seed(1)
    x0 = torch.randn_like(x)
    torch.testing.assert_close(got, expected(x0, torch.rand((3,))))


def test_loss_uses_the_first_half_of_a_sigma_output():
    x, y = torch.randn(2, C, H, W), torch.tensor([0, 1])
    net = TinyVelocityNet(sigma_half=True)
    got = flow().loss(net, x, y, generator=torch.Generator().manual_seed(0))["loss"]
    g = torch.Generator().manual_seed(0)
    x0, t = torch.randn(x.shape, generator=g), torch.rand((2,), generator=g)
    tt = t.view(-1, 1, 1, 1)
    v = net(tt * x + (1 - tt) * x0, t, y)[:, :C]
    torch.testing.assert_close(got, ((v - (x - x0)) ** 2).mean())
    with pytest.raises(GenzooError, match="channels"):
        flow().loss(lambda x, t, y: x[:, :3], x, y)


@pytest.mark.slow
def test_flow_training_reduces_the_loss():
    torch.manual_seed(0)
    fam, net = flow(), TinyVelocityNet()
    y = torch.arange(8) % 4
    x = (y.float() / 2 - 0.75).view(-1, 1, 1, 1).expand(-1, C, H, W).contiguous()

    def evaluate():
        with torch.no_grad():
            seeds = range(8)
            return sum(fam.loss(net, x, y, torch.Generator().manual_seed(s))["loss"] for s in seeds)

    before = evaluate()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(100)
    for _ in range(30):
        loss = fam.loss(net, x, y, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.9 * before


# -- ODE samplers ---------------------------------------------------------------------------
def test_euler_integrates_a_constant_velocity_exactly():
    shift = torch.randn(NUM_CLASSES + 1, C, 1, 1)
    z, y = torch.randn(2, C, H, W), torch.tensor([3, 8])
    out = sample(flow(), lambda x, t, y: shift[y].expand_as(x), z, y, "euler", 9)
    torch.testing.assert_close(out, z + shift[y], atol=1e-6, rtol=0)


@pytest.mark.parametrize("rate", [-0.7, 1.3])
def test_heun_on_a_linear_ode(rate):
    """dx/dt = a·x: each Heun step multiplies by 1 + ah + (ah)²/2, and the error is O(h²)."""
    z, y = torch.randn(2, C, H, W, dtype=torch.float64), torch.tensor([0, 1])
    fam = flow()
    errors = []
    for steps in (11, 21):
        out = sample(fam, lambda x, t, y: rate * x, z, y, "heun", steps)
        h = 1 / (steps - 1)
        torch.testing.assert_close(out, z * (1 + rate * h + (rate * h) ** 2 / 2) ** (steps - 1))
        errors.append((out - z * math.exp(rate)).abs().max().item())
    assert 3.5 < errors[0] / errors[1] < 4.5


@pytest.mark.parametrize(
    "sampler,options,calls",
    [
        ("euler", {}, 6),
        ("heun", {}, 12),
        ("euler-maruyama", {}, 7),  # 6 stochastic steps + the "Mean" last step
        ("euler-maruyama", {"last_step": None}, 6),
    ],
)
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_network_calls_and_times(sampler, options, calls, scale):
    net = Recorder(TinyVelocityNet())
    z, y = torch.randn(3, C, H, W), torch.tensor([1, 2, 3])
    sample(flow(), net, z, y, sampler, 7, cfg=scale, generator=torch.Generator(), **options)
    assert len(net.calls) == calls
    assert all(n == (6 if scale != 1 else 3) for n, _ in net.calls)
    for _, t in net.calls:
        assert t.dtype == torch.float32 and t.shape == (net.calls[0][0],)
        assert t.min() >= 0 and t.max() <= 1 and torch.all(t == t[0])
    if sampler == "euler":
        assert [round(float(t[0]), 6) for _, t in net.calls] == [round(k / 6, 6) for k in range(6)]


# -- SDE sampler ----------------------------------------------------------------------------
def test_euler_maruyama_is_deterministic_given_a_generator():
    net, fam = TinyVelocityNet(), flow()
    z, y = torch.randn(2, C, H, W), torch.tensor([1, 2])

    def run(seed):
        return sample(
            fam, net, z, y, "euler-maruyama", 8, generator=torch.Generator().manual_seed(seed)
        )

    state = torch.get_rng_state()
    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    assert torch.equal(state, torch.get_rng_state())


def test_euler_maruyama_without_diffusion_is_euler():
    net, fam = TinyVelocityNet(), flow()
    z, y = torch.randn(2, C, H, W), torch.tensor([4, 5])
    with torch.no_grad():
        out = sample(
            fam,
            net,
            z,
            y,
            "euler-maruyama",
            6,
            diffusion_norm=0.0,
            generator=torch.Generator().manual_seed(0),
        )
        # Euler written out on the same points, 0, 0.192, …, 0.96, then the last step to 1.
        grid = [0.96 * k / 5 for k in range(6)] + [1.0]
        x = z
        for t0, t1 in zip(grid[:-1], grid[1:]):
            x = x + (t1 - t0) * net(x, torch.full((2,), t0), y)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_sde_option_errors():
    net, fam = TinyVelocityNet(), flow()
    z, y = torch.randn(1, C, H, W), torch.tensor([1])
    with pytest.raises(GenzooError, match="sample_eps"):
        sample(fam, net, z, y, "euler-maruyama", 5, diffusion_form="SBDM")
    out = sample(fam, net, z, y, "euler-maruyama", 5, diffusion_form="SBDM", sample_eps=1e-3)
    assert torch.isfinite(out).all()
    with pytest.raises(GenzooError, match="Tweedie"):
        sample(fam, net, z, y, "euler-maruyama", 5, last_step="Exact")
    with pytest.raises(GenzooError, match="diffusion_form"):
        sample(fam, net, z, y, "euler-maruyama", 5, diffusion_form="cubic")
    with pytest.raises(GenzooError, match="last_step"):
        sample(fam, net, z, y, "euler", 5, last_step="Mean")
    with pytest.raises(GenzooError, match="euler, heun, euler-maruyama"):
        sample(fam, net, z, y, "ddpm", 5)
    with pytest.raises(GenzooError, match="at least 2"):
        sample(fam, net, z, y, "heun", 1)
    with pytest.raises(GenzooError, match="velocity"):
        Flow(FlowConfig(predict="noise"))


# -- the official SiT loops, written out ----------------------------------------------------
def sit_model(net, scale, labels):
    """SiT's forward_with_cfg on the doubled batch (3 guided channels), or the plain forward."""

    def model(x, t):
        if scale == 1.0:
            return net(x, t, labels)[:, :C]
        half = x[: len(x) // 2]
        out = net(torch.cat([half, half]), t, labels)[:, :C]
        eps, rest = out[:, :3], out[:, 3:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond + scale * (cond - uncond)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    return model


def doubled(z, y, scale):
    if scale == 1.0:
        return z, y
    return torch.cat([z, z]), torch.cat([y, torch.full_like(y, NUM_CLASSES)])


def reference_sit_ode(net, z, y, scale, steps, method):
    """torchdiffeq's fixed-grid loop on linspace(0, 1, steps) over the (doubled) state."""
    x, labels = doubled(z, y, scale)
    model = sit_model(net, scale, labels)
    grid = torch.linspace(0, 1, steps)

    def f(t, x):
        return model(x, torch.ones(x.size(0)) * t)

    for t0, t1 in zip(grid[:-1], grid[1:]):
        dt = t1 - t0
        if method == "euler":
            dy = dt * f(t0, x)
        else:
            f0 = f(t0, x)
            f1 = f(t0 + dt, x + f0 * dt)
            dy = dt * 0.5 * (f0 + f1)
        x = x + dy
    return x[: z.shape[0]]


def reference_sit_sde(net, z, y, scale, steps, last_step, last_step_size=0.04):
    """SiT's Euler–Maruyama sampler (linear path, velocity model, diffusion form "sigma"):
    every step draws randn(x.size()) for the whole (doubled) state on the CPU."""
    x, labels = doubled(z, y, scale)
    model = sit_model(net, scale, labels)

    def score(x, t):
        tt = t.view(-1, 1, 1, 1)
        ratio = tt / 1
        return (ratio * model(x, t) - x) / ((1 - tt) ** 2 - ratio * -1 * (1 - tt))

    def w(t):
        return 1.0 * (1 - t.view(-1, 1, 1, 1))

    def drift(x, t):
        return model(x, t) + w(t) * score(x, t)

    if last_step is None:
        last_step_size = 0.0
    t1 = 1 - last_step_size
    grid = torch.linspace(0, t1, steps)
    dt = grid[1] - grid[0]
    for ti in grid[:-1]:
        w_cur = torch.randn(x.size()).to(x)
        t = torch.ones(x.size(0)).to(x) * ti
        dw = w_cur * torch.sqrt(dt)
        mean_x = x + drift(x, t) * dt
        x = mean_x + torch.sqrt(2 * w(t)) * dw
    ts = torch.ones(x.size(0)) * t1
    if last_step == "Mean":
        x = x + drift(x, ts) * last_step_size
    elif last_step == "Euler":
        x = x + model(x, ts) * last_step_size
    elif last_step == "Tweedie":
        alpha, sigma = ts[0], (1 - ts)[0]
        x = x / alpha + (sigma**2) / alpha * score(x, ts)
    return x[: z.shape[0]]


@pytest.mark.parametrize("scale", [1.0, 4.0])
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_ode_reproduces_the_official_loop(method, scale):
    net = TinyVelocityNet(sigma_half=True)
    z, y = torch.randn(4, C, H, W), torch.tensor([1, 7, 3, 0])
    ours = sample(flow(), net, z, y, method, 6, cfg=scale, cfg_channels=3)
    with torch.no_grad():
        ref = reference_sit_ode(net, z, y, scale, 6, method)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 4.0])
@pytest.mark.parametrize("last_step", ["Mean", "Euler", "Tweedie", None])
def test_sde_global_rng_reproduces_the_official_loop(last_step, scale):
    net = TinyVelocityNet(sigma_half=True)
    z, y = torch.randn(4, C, H, W), torch.tensor([1, 7, 3, 0])
    torch.manual_seed(7)
    ours = sample(
        flow(), net, z, y, "euler-maruyama", 6, cfg=scale, cfg_channels=3, last_step=last_step
    )
    state = torch.get_rng_state()
    torch.manual_seed(7)
    with torch.no_grad():
        ref = reference_sit_sde(net, z, y, scale, 6, last_step)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert torch.equal(state, torch.get_rng_state())
