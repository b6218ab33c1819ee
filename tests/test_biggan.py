"""BigGAN / BigGAN-deep: official layouts, loaders, spectral norm, truncated sampling, GAN steps.

Expected values come from the specification (key counts, parameter counts) or from direct
re-computations in tests/biggan_layout.py and below, never from the code under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from biggan_layout import (
    DEEP_KW,
    EPS,
    TINY_DEEP_LAYERS,
    TINY_KW,
    FakeContext,
    d_layout,
    power_step,
    random_state,
    reference_d,
    reference_deep,
    reference_g,
    reference_translate_cutout,
    tiny_deep_state,
    tiny_g_state,
)
from scipy.stats import truncnorm

from genzoo.backbones.biggan import (
    BigGAN,
    BigGANConfig,
    BigGANDiscriminator,
    BigGANGenerator,
    biggan_preset,
)
from genzoo.backbones.biggan_deep import RELEASED_LAYERS, BigGANDeep, BigGANDeepConfig
from genzoo.errors import GenzooError
from genzoo.families.diffaugment import diff_augment
from genzoo.families.gan import (
    GAN,
    GANConfig,
    add_ortho_gradient,
    hinge_d_loss,
    hinge_g_loss,
    load_official_discriminator,
    ortho_penalty,
    truncated_noise,
    truncated_normal,
)
from genzoo.nn.conditional_bn import ClassConditionalBatchNorm
from genzoo.zoo.biggan import load_biggan, load_biggan_deep, load_biggan_discriminator

pytestmark = pytest.mark.usefixtures("one_thread")


# -- layouts and sizes ------------------------------------------------------------------------


def test_published_sizes():
    """Key and parameter counts of the released architectures (spec §2, §3)."""
    with torch.device("meta"):
        for res, dim_z, attn, keys, params in [
            (128, 120, "64", 166, 70_433_988),
            (256, 140, "128", 194, 82_097_604),
            (512, 128, "64", 222, 82_296_804),
        ]:
            cfg = BigGANConfig(resolution=res, dim_z=dim_z, g_attn=attn)
            g = BigGANGenerator(cfg, skip_init=True)
            assert len(g.state_dict()) == keys
            assert sum(p.numel() for p in g.parameters()) == params
        d = BigGANDiscriminator(BigGANConfig(), skip_init=True)
        assert (len(d.state_dict()), sum(p.numel() for p in d.parameters())) == (88, 87_982_370)
        for res, keys, params, elements in [
            (128, 506, 50_388_609, 52_687_425),
            (256, 602, 55_880_833, 58_573_185),
            (512, 698, 56_163_905, 58_908_865),
        ]:
            m = BigGANDeep(BigGANDeepConfig(output_dim=res, layers=RELEASED_LAYERS[res]))
            state = m.state_dict()
            assert len(state) == keys
            assert sum(p.numel() for p in m.parameters()) == params
            assert sum(v.numel() for v in state.values()) == elements
        assert BigGANGenerator(BigGANConfig(dim_z=128), skip_init=True).dim_z == 126  # 6 × 21


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_generator_loads_strictly_and_matches_reference(tmp_path, suffix):
    state = tiny_g_state()
    assert len(state) == 166
    path = tmp_path / f"G_ema{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    pipe = load_biggan(path, device="cpu", **TINY_KW, **EPS)
    loaded = pipe.model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    assert not pipe.model.training and pipe.dim_z == 30
    z, y = torch.randn(3, 30), torch.tensor([0, 4, 9])
    with torch.no_grad():
        out = pipe.model(z, y)
        again = pipe.model(z, y, truncation=0.3)  # accepted and ignored
    assert out.shape == (3, 3, 128, 128) and out.abs().max() <= 1
    torch.testing.assert_close(out, reference_g(state, z, y), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(again, out, atol=0, rtol=0)  # eval leaves u0 as it was
    assert torch.equal(pipe.model.state_dict()["linear.u0"], state["linear.u0"])


def test_generator_shapes_are_inferred_and_conversions_without_sv_load(tmp_path):
    state = tiny_g_state(sv=False)  # TF-hub conversions have no sv0
    assert not any(k.endswith("sv0") for k in state)
    with pytest.warns(UserWarning, match="BN_eps=1e-4"):
        pipe = load_biggan(state, device="cpu")  # everything inferred from shapes
    assert (pipe.config.g_ch, pipe.config.num_classes, pipe.config.g_attn) == (8, 10, "64")
    pipe = load_biggan(state, device="cpu", BN_eps=1e-4, SN_eps=1e-4, no_optim=True)
    z, y = torch.randn(2, 30), torch.tensor([1, 2])
    with torch.no_grad():
        out = pipe.model(z, y)
    ref = reference_g(state, z, y, bn_eps=1e-4, sn_eps=1e-4)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


def test_discriminator_loads_and_matches_reference(tmp_path):
    state = random_state(d_layout(8, 10), seed=1)
    assert len(state) == 88
    torch.save(state, tmp_path / "D.pth")
    d = load_biggan_discriminator(
        tmp_path / "D.pth", device="cpu", D_ch=8, n_classes=10, SN_eps=1e-6
    )
    x, y = torch.rand(2, 3, 128, 128) * 2 - 1, torch.tensor([3, 7])
    with torch.no_grad():
        logits = d(x, y)
    assert logits.shape == (2, 1)
    torch.testing.assert_close(logits, reference_d(state, x, y), atol=2e-5, rtol=1e-5)
    via_family = load_official_discriminator("biggan", state, D_ch=8, n_classes=10, SN_eps=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(via_family(x, y), logits, atol=0, rtol=0)
        d.train()(x, y)  # training mode: one power step per layer, in place
    u_ref, sigma = power_step(state["embed.weight"], state["embed.u0"], 1e-6)
    torch.testing.assert_close(d.embed.u0, u_ref)
    assert d.embed.sv0.item() == pytest.approx(sigma, rel=1e-5)
    assert torch.equal(via_family.embed.u0, state["embed.u0"])  # the file's tensors not aliased


def test_train_mode_power_step_and_batch_statistics():
    state = tiny_g_state()
    pipe = load_biggan(state, device="cpu", **TINY_KW, **EPS)
    g = pipe.model.train()
    z, y = torch.randn(4, 30), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        first = g(z, y)
        second = g(z, y)
    # Each call makes one power step from the stored u, overwrites u and logs σ.
    for key in ("linear", "blocks.2.0.conv1", "blocks.1.0.bn2.gain", "blocks.3.1.theta"):
        u1, _ = power_step(state[key + ".weight"], state[key + ".u0"], 1e-6)
        u2, sigma = power_step(state[key + ".weight"], u1, 1e-6)
        layer = g.get_submodule(key)
        torch.testing.assert_close(layer.u0, u2)
        assert layer.sv0.item() == pytest.approx(sigma, rel=1e-5)
    assert not torch.allclose(first, second)
    assert not torch.equal(g.output_layer[0].stored_mean, state["output_layer.0.stored_mean"])


def test_conditional_batchnorm_statistics():
    bn = ClassConditionalBatchNorm(
        3, torch.nn.Linear(2, 3, bias=False), torch.nn.Linear(2, 3, bias=False)
    )
    x, c = torch.randn(5, 3, 4, 4) * 2 + 1, torch.randn(5, 2)
    out = bn.train()(x, c)
    mean = x.mean(dim=(0, 2, 3))
    biased = x.var(dim=(0, 2, 3), unbiased=False)
    unbiased = x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.stored_mean, 0.1 * mean)
    torch.testing.assert_close(bn.stored_var, 0.9 + 0.1 * unbiased)
    scale = (1 + bn.gain(c))[:, :, None, None]
    expected = (x - mean[None, :, None, None]) / torch.sqrt(biased[None, :, None, None] + 1e-5)
    torch.testing.assert_close(out, expected * scale + bn.bias(c)[:, :, None, None])


# -- BigGAN-deep ------------------------------------------------------------------------------


def test_deep_loads_and_matches_reference(tmp_path):
    state = tiny_deep_state()
    assert len(state) == 410
    torch.save(state, tmp_path / "pytorch_model.bin")
    pipe = load_biggan_deep(tmp_path / "pytorch_model.bin", device="cpu", **DEEP_KW)
    inferred = load_biggan_deep(state, device="cpu")  # fields read from the shapes
    assert inferred.config.layers == pipe.config.layers
    assert inferred.config.attention_layer_position == 4
    z = torch.randn(2, 16)
    labels = torch.tensor([2, 9])
    mixture = torch.softmax(torch.randn(2, 10), dim=1)
    for t in (1.0, 0.5, 0.37):  # row 50, row 25, and a blend of rows 18 and 19
        with torch.no_grad():
            out = pipe.model(z, labels, truncation=t)
            mixed = pipe.model(z, mixture, truncation=t)
        assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
        onehot = torch.nn.functional.one_hot(labels, 10).float()
        ref = reference_deep(state, z, onehot, t, layers=TINY_DEEP_LAYERS, attention=4)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
        ref = reference_deep(state, z, mixture, t, layers=TINY_DEEP_LAYERS, attention=4)
        torch.testing.assert_close(mixed, ref, atol=2e-5, rtol=1e-5)


def test_deep_train_mode_runs_torch_power_step():
    state = tiny_deep_state()
    pipe = load_biggan_deep(state, device="cpu", **DEEP_KW)
    with torch.no_grad():
        pipe.model.train()(torch.randn(1, 16), torch.tensor([0]), truncation=1.0)
    w = state["generator.gen_z.weight_orig"]
    v = torch.nn.functional.normalize(w.t() @ state["generator.gen_z.weight_u"], dim=0, eps=1e-4)
    u = torch.nn.functional.normalize(w @ v, dim=0, eps=1e-4)
    torch.testing.assert_close(pipe.model.generator.gen_z.weight_u, u)
    torch.testing.assert_close(pipe.model.generator.gen_z.weight_v, v)


def test_sample_images_is_model_of_truncated_noise():
    pipe = load_biggan_deep(tiny_deep_state(), device="cpu", **DEEP_KW)
    images = pipe.sample_images([1, 5], truncation=0.4, seed=3)
    z = truncated_noise(2, 16, 0.4, 3)
    with torch.no_grad():
        expected = pipe.model(z, torch.tensor([1, 5]), truncation=0.4)
    torch.testing.assert_close(images, expected, atol=0, rtol=0)
    uint8 = pipe.sample([1, 5], truncation=0.4, seed=3)
    assert uint8.shape == (2, 64, 64, 3) and uint8.dtype == np.uint8


# -- truncated noise --------------------------------------------------------------------------


def test_truncated_noise_is_the_official_draw_and_per_sample():
    z = truncated_noise(5, 7, 0.5, seed=11)
    state = np.random.RandomState(11)
    official = 0.5 * truncnorm.rvs(-2, 2, size=(5, 7), random_state=state).astype(np.float32)
    assert z.dtype == torch.float32 and z.shape == (5, 7)
    assert np.array_equal(z.numpy(), official)
    assert z.abs().max() <= 1.0  # |z| ≤ 2t
    bigger = truncated_noise(9, 7, 0.5, seed=11)
    assert torch.equal(bigger[:5], z)  # row i depends on (seed, i) only
    assert torch.equal(truncated_noise(3, 7, 0.5, seed=11, first=4), bigger[4:7])
    assert not torch.equal(truncated_noise(5, 7, 0.5, seed=12), z)


def test_truncated_normal_from_generators():
    gens = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    z = truncated_normal(3, 6, gens, truncation=0.8)
    alone = truncated_normal(1, 6, [torch.Generator().manual_seed(101)], truncation=0.8)
    assert torch.equal(z[1], alone[0])
    u = torch.rand(6, generator=torch.Generator().manual_seed(100), dtype=torch.float64)
    expected = 0.8 * truncnorm.ppf(u.numpy(), -2, 2)
    np.testing.assert_allclose(z[0].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert z.abs().max() <= 1.6


def test_gan_sample_is_per_sample_and_in_range():
    torch.manual_seed(0)
    model = BigGAN(biggan_preset("biggan-tiny"))
    fam = GAN()
    y = torch.tensor([1, 2, 3])
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    out = fam.sample(model, y, generators=gens, null_label=None, truncation=0.5)
    one = fam.sample(
        model, y[2:], generators=[torch.Generator().manual_seed(2)], null_label=None, truncation=0.5
    )
    assert out.shape == (3, 3, 32, 32) and out.abs().max() <= 1
    torch.testing.assert_close(out[2:], one, atol=1e-6, rtol=0)
    assert model.training  # eval only while sampling


# -- training ---------------------------------------------------------------------------------


def _run_steps(steps=2):
    torch.manual_seed(0)
    cfg = biggan_preset("biggan-tiny")
    model, disc = BigGAN(cfg), BigGAN.make_discriminator(cfg)
    family = GAN(GANConfig(diffaugment="color,translation,cutout", r1_gamma=1.0, d_ortho=1e-4))
    ctx = FakeContext(model, disc, family)

    def state():
        nets = {"G.": model, "D.": disc}
        return {p + k: v.clone() for p, m in nets.items() for k, v in m.state_dict().items()}

    before = state()
    logs = [family.train_step(ctx) for _ in range(steps)]
    return state(), ctx, before, logs


def test_gan_train_steps_update_both_networks_reproducibly():
    after, ctx, before, logs = _run_steps()
    assert ctx.calls == 2 * 2  # steps × accum: each of the 2 D updates takes one micro-batch
    for entry in logs:
        assert {"loss", "d_loss", "g_loss", "r1", "d_real", "d_fake"} <= set(entry)
        assert all(np.isfinite(v) for v in entry.values())
    for net in ("G.", "D."):
        changed = [k for k in before if k.startswith(net) and not torch.equal(before[k], after[k])]
        assert any(k.endswith("weight") for k in changed), net
    assert not torch.equal(before["G.linear.u0"], after["G.linear.u0"])
    assert not torch.equal(
        before["G.blocks.0.0.bn1.stored_mean"], after["G.blocks.0.0.bn1.stored_mean"]
    )
    again, _, _, logs_again = _run_steps()
    assert logs_again == logs
    assert all(torch.equal(v, again[k]) for k, v in after.items())
    # BigGAN's ema.update(itr) pegs the EMA to G while the 1-based iteration itr < ema_start
    assert GAN(GANConfig(ema_start=5)).ema_decay(3, 0.999) == 0.0  # itr 4
    assert GAN(GANConfig(ema_start=5)).ema_decay(4, 0.999) == 0.999  # itr 5


def test_losses_and_ortho_gradient():
    d_fake, d_real = torch.tensor([[-2.0], [0.5]]), torch.tensor([[2.0], [0.25]])
    real, fake = hinge_d_loss(d_fake, d_real)
    assert real.item() == pytest.approx((0 + 0.75) / 2) and fake.item() == pytest.approx(
        (0 + 1.5) / 2
    )
    assert hinge_g_loss(d_fake).item() == pytest.approx(0.75)
    w = torch.randn(4, 3, 2, 2, requires_grad=True)
    ortho_penalty([w], strength=0.01).backward()
    rows = w.detach().reshape(4, -1)
    expected = torch.zeros_like(rows)
    for k in range(4):
        for j in range(4):
            if j != k:
                expected[k] += 2 * 0.01 * (rows[k] @ rows[j]) * rows[j]
    torch.testing.assert_close(w.grad.reshape(4, -1), expected)
    p = torch.nn.Parameter(w.detach().clone())
    p.grad = torch.ones_like(p)
    add_ortho_gradient([p], 0.01)
    torch.testing.assert_close(p.grad.reshape(4, -1), expected + 1)


def test_diffaugment_reproduces_the_draw_order():
    x = torch.randn(3, 3, 8, 8)
    torch.manual_seed(5)
    out = diff_augment(x, "color,translation,cutout")
    torch.manual_seed(5)
    b, s, c = (torch.rand(3, 1, 1, 1) for _ in range(3))
    tx, ty = torch.randint(-1, 2, (3, 1, 1)), torch.randint(-1, 2, (3, 1, 1))
    cx, cy = torch.randint(0, 9, (3, 1, 1)), torch.randint(0, 9, (3, 1, 1))  # side 4: +1
    y = x + (b - 0.5)
    y = (y - y.mean(1, keepdim=True)) * (2 * s) + y.mean(1, keepdim=True)
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - m) * (c + 0.5) + m
    torch.testing.assert_close(out, reference_translate_cutout(y, tx, ty, cx, cy, side=4))


# -- errors -----------------------------------------------------------------------------------


def test_bad_inputs_raise_genzoo_errors(tmp_path):
    state = tiny_g_state()
    with pytest.raises(GenzooError, match="unknown official BigGAN Generator argument"):
        load_biggan(state, G_chh=8)
    with pytest.raises(GenzooError, match=r"mis-shaped(.|\n)*G_ch=8"):
        load_biggan(state, G_ch=16, **EPS)
    with pytest.raises(GenzooError, match="does not look like a BigGAN generator"):
        load_biggan({"pos_embed": torch.zeros(1, 4, 8)})
    pipe = load_biggan(state, device="cpu", **TINY_KW, **EPS)
    with pytest.raises(GenzooError, match="expected z"):
        pipe.model(torch.randn(2, 29), torch.tensor([0, 1]))
    with pytest.raises(GenzooError, match="labels must lie in"):
        pipe.sample_images([10])
    deep = load_biggan_deep(tiny_deep_state(), device="cpu", **DEEP_KW)
    for t in (0.0, 1.5):
        with pytest.raises(GenzooError, match="outside"):
            deep.model(torch.randn(1, 16), torch.tensor([0]), truncation=t)
    with pytest.raises(GenzooError, match="class vector"):
        deep.model(torch.randn(1, 16), torch.rand(1, 9))
    with pytest.raises(GenzooError, match="unknown BigGAN-deep config field"):
        load_biggan_deep(tiny_deep_state(), z_dimension=16)
    with pytest.raises(GenzooError, match="unknown DiffAugment policy"):
        diff_augment(torch.zeros(1, 3, 8, 8), "color,flip")
    with pytest.raises(GenzooError, match="gan.loss"):
        GAN(GANConfig(loss="wgan"))
    with pytest.raises(GenzooError, match="seed"):
        truncated_noise(2, 4, seed=-1)
    with pytest.raises(GenzooError, match="only 'biggan'"):
        load_official_discriminator("biggan-deep", state)
    with pytest.raises(GenzooError, match="unknown BigGAN preset"):
        biggan_preset("biggan-1024")
    with pytest.raises(GenzooError, match="model.resolution"):
        BigGANGenerator(BigGANConfig(resolution=100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_biggan(state, device="cpu", **TINY_KW, **EPS)  # sv0 present: no warning
