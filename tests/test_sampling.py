"""Sampler registry, family construction and the families driving a real DiT end to end."""

import pytest
import torch

from genzoo.config import apply_overrides
from genzoo.errors import GenzooError
from genzoo.families import build_family
from genzoo.families.diffusion import GaussianDiffusion
from genzoo.families.flow import Flow
from genzoo.sampling import SAMPLERS, check_sampler
from genzoo.zoo.presets import preset


def test_sampler_registry():
    assert SAMPLERS == {"diffusion": ("ddpm", "ddim"), "flow": ("euler", "heun", "euler-maruyama")}
    assert check_sampler("flow", "heun") == "heun"
    with pytest.raises(GenzooError, match="ddpm, ddim"):
        check_sampler("diffusion", "heun")
    with pytest.raises(GenzooError, match="diffusion, flow"):
        check_sampler("gan", "heun")


def test_build_family_from_presets():
    assert isinstance(build_family(preset("dit-tiny")), GaussianDiffusion)
    assert isinstance(build_family(preset("sit-tiny")), Flow)
    cfg = preset("dit-tiny")
    cfg.family.noise_schedule = "cosine"
    fam = build_family(cfg)
    assert fam.schedule.betas[-1] == pytest.approx(0.999)
    with pytest.raises(GenzooError, match="unknown family kind 'nope'; choose one of: diffusion"):
        apply_overrides(cfg, ["family.kind=nope"])


@pytest.mark.parametrize(
    "name,sampler", [("dit-tiny", "ddpm"), ("dit-tiny", "ddim"), ("sit-tiny", "euler-maruyama")]
)
def test_families_train_and_sample_a_tiny_dit(name, sampler):
    from genzoo.backbones import build_backbone

    cfg = preset(name)
    cfg.model.input_size, cfg.model.num_classes = 8, 5
    torch.manual_seed(0)
    net, fam = build_backbone(cfg.model), build_family(cfg)
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([0, 3])
    out = fam.loss(net, x, y, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    kw = dict(noise=x, sampler=sampler, steps=4, cfg=2.0, null_label=5, progress=True)
    a = fam.sample(net, y, generator=torch.Generator().manual_seed(1), **kw)
    b = fam.sample(net, y, generator=torch.Generator().manual_seed(1), **kw)
    assert a.shape == x.shape and torch.isfinite(a).all() and torch.equal(a, b)
    assert net.training  # restored after sampling in eval mode


@pytest.mark.parametrize("name,sampler", [("dit-tiny", "ddpm"), ("sit-tiny", "euler-maruyama")])
def test_per_sample_generators_make_samples_batch_independent(name, sampler):
    """With one generator per sample, a sample does not depend on the rest of its batch."""
    from genzoo.backbones import build_backbone

    cfg = preset(name)
    cfg.model.input_size, cfg.model.num_classes = 8, 5
    torch.manual_seed(0)
    net, fam = build_backbone(cfg.model).eval(), build_family(cfg)
    z, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 3, 4])

    def run(rows):
        gens = [torch.Generator().manual_seed(100 + i) for i in rows]
        return fam.sample(
            net,
            y[rows],
            noise=z[rows],
            sampler=sampler,
            steps=5,
            cfg=1.5,
            null_label=5,
            generator=gens,
        )

    batch = run([0, 1, 2])
    torch.testing.assert_close(run([1])[0], batch[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run([2, 0]), batch[[2, 0]], atol=1e-5, rtol=1e-5)
    with pytest.raises(GenzooError, match="one generator per sample"):
        fam.sample(
            net,
            y,
            noise=z,
            sampler=sampler,
            steps=3,
            null_label=5,
            generator=[torch.Generator()],
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "name,sampler",
    [
        ("dit-tiny", "ddpm"),
        ("dit-tiny", "ddim"),
        ("sit-tiny", "heun"),
        ("sit-tiny", "euler-maruyama"),
    ],
)
def test_cuda_sampling_with_a_cpu_generator_matches_cpu(name, sampler):
    """Per-step noise from a CPU generator is device independent; only arithmetic may differ."""
    fam = build_family(preset(name))
    learned = fam.family == "diffusion"

    def net(x, t, y):  # closed form, so CPU and CUDA compute the same function
        out = 0.5 * x + 0.01 * y.view(-1, 1, 1, 1).to(x) + 1e-4 * t.view(-1, 1, 1, 1).to(x)
        return torch.cat([out, torch.zeros_like(out)], 1) if learned else out

    z, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    outs = []
    for device in ("cpu", "cuda"):
        g = torch.Generator().manual_seed(0)
        outs.append(
            fam.sample(
                net,
                y.to(device),
                noise=z.to(device),
                sampler=sampler,
                steps=6,
                cfg=2.0,
                null_label=5,
                generator=g,
            ).cpu()
        )
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)
    torch.manual_seed(0)  # the global-RNG path runs on CUDA too
    out = fam.sample(net, y.cuda(), noise=z.cuda(), sampler=sampler, steps=6, cfg=2.0, null_label=5)
    assert out.is_cuda and torch.isfinite(out).all()
