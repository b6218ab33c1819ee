"""MAR: official layout, loading from every container, the forward pass, the head and its loss,
and `sample_tokens` against the official draw order, on random official-layout weights."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from mar_layout import (
    PUBLISHED,
    TINY,
    official_shapes,
    patchify,
    random_official_state_dict,
    reference_condition,
    reference_guided_head,
    reference_head,
    reference_loss,
    reference_sample,
    sizes,
)
from safetensors.torch import save_file

import genzoo
from genzoo.backbones.mar import MAR, MARConfig
from genzoo.errors import GenzooError
from genzoo.zoo.kinds import guess_kind
from genzoo.zoo.mar import MAR_SIZES, infer_mar_config, load_mar, load_mar_model

pytestmark = pytest.mark.usefixtures("one_thread")

_, L, CT = sizes(**TINY)
K, D_DEC = TINY["class_num"], TINY["decoder_embed_dim"]


@pytest.fixture(scope="module")
def state():
    return random_official_state_dict(0, **TINY)


@pytest.fixture(scope="module")
def pipe(state):
    return genzoo.load_official("mar", state, device="cpu", **TINY)


def close(a, b, tol=1e-5):
    a, b = a.double(), b.double()
    return torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())))


# -- layout and loading ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["B", "L", "H"])
def test_published_sizes_have_the_official_keys_and_parameter_counts(size):
    width, depth, heads, head_depth, head_width, params, keys = PUBLISHED[size]
    assert MAR_SIZES[size] == dict(
        encoder_embed_dim=width, encoder_depth=depth, encoder_num_heads=heads,
        decoder_embed_dim=width, decoder_depth=depth, decoder_num_heads=heads,
        diffloss_d=head_depth, diffloss_w=head_width,
    )  # fmt: skip
    with torch.device("meta"):
        model = MAR(MARConfig(**MAR_SIZES[size]))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == official_shapes(**MAR_SIZES[size])
    assert len(got) == keys and sum(math.prod(s) for _, s in got) == params
    assert not list(model.buffers())


def test_tiny_model_has_the_official_keys_shapes_and_order():
    model = MAR(MARConfig(**TINY))
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == official_shapes(**TINY)
    assert model.head_net.final_layer.linear.weight.abs().sum() == 0  # official zero init


def test_loads_model_ema_first_then_model_then_a_plain_dict(tmp_path, state):
    other = random_official_state_dict(1, **TINY)
    extras = {"optimizer": {}, "epoch": 3, "args": argparse.Namespace(model="mar_base")}
    torch.save({"model": other, "model_ema": state, **extras}, tmp_path / "ckpt.pth")
    torch.save({"model": state}, tmp_path / "model.pth")
    torch.save(state, tmp_path / "flat.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    for source in ("ckpt.pth", "model.pth", "flat.pth", "w.safetensors"):
        model, cfg = load_mar_model(tmp_path / source, device="cpu", **TINY)
        assert not model.training and cfg.decoder_embed_dim == D_DEC
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items()), source
    assert all(v.device.type == "cpu" for v in state.values())


def test_unknown_arguments_wrong_shapes_and_other_kinds_are_refused(state):
    with pytest.raises(GenzooError, match="unknown MAR argument.*norm_layer"):
        load_mar_model(state, norm_layer=None, **TINY)
    with pytest.raises(GenzooError, match=r"(?s)do not fit MAR.*mis-shaped keys"):
        load_mar_model(state, **{**TINY, "vae_embed_dim": 8})
    dit_like = {"x_embedder.proj.weight": torch.zeros(4, 4, 2, 2), "t_embedder.mlp.0.weight":
                torch.zeros(4, 256)}  # fmt: skip
    with pytest.raises(GenzooError, match="looks like an official DiT"):
        load_mar_model(dit_like, **TINY)
    assert guess_kind({"model_ema": state}) == "mar"


def test_constructor_arguments_not_given_are_read_from_the_shapes(state):
    found = infer_mar_config(state)
    for key in ("encoder_embed_dim", "decoder_embed_dim", "encoder_depth", "decoder_depth",
                "buffer_size", "class_num", "diffloss_d", "diffloss_w"):  # fmt: skip
        assert found[key] == TINY[key]
    grid = {k: TINY[k] for k in ("img_size", "vae_stride", "patch_size", "vae_embed_dim")}
    model, cfg = load_mar_model(state, device="cpu", encoder_num_heads=4, decoder_num_heads=2,
                                num_sampling_steps="10", **grid)  # fmt: skip
    assert cfg == MARConfig(**TINY)


# -- forward ------------------------------------------------------------------------------------


def test_patchify_follows_the_official_feature_order_and_unpatchify_inverts_it(pipe):
    latents = torch.randn(2, 4, 8, 8)
    tokens = pipe.model.patchify(latents)
    assert torch.equal(tokens, patchify(latents, 2))
    assert torch.equal(pipe.model.unpatchify(tokens), latents)


def test_condition_matches_the_reference_with_the_null_class(pipe, state):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(3, L, CT, generator=g)
    mask = torch.zeros(3, L)
    for i in range(3):
        mask[i, torch.randperm(L, generator=g)[:7]] = 1
    y = torch.tensor([2, K, 9])  # class_num selects the fake latent
    z = pipe.model.condition(tokens, mask, y)
    assert z.shape == (3, L, D_DEC)
    assert close(z, reference_condition(state, TINY, tokens, mask, y))
    with pytest.raises(GenzooError, match="same number of tokens"):
        pipe.model.condition(tokens, torch.cat([mask[:2], torch.zeros(1, L)]), y)
    with pytest.raises(GenzooError, match=r"labels y must be .* in \[0, 10\]"):
        pipe.model.condition(tokens, mask, torch.tensor([0, 1, K + 1]))


def test_head_and_guided_head_match_the_reference(pipe, state):
    g = torch.Generator().manual_seed(4)
    x, z = torch.randn(6, CT, generator=g), torch.randn(6, D_DEC, generator=g)
    t = torch.tensor([999, 500, 0, 999, 500, 0])
    assert close(pipe.model.head(x, t, z), reference_head(state, x, t, z))
    assert close(pipe.model.head(x, t, z, cfg=2.5), reference_guided_head(state, x, t, z, 2.5))


def test_head_loss_draws_t_then_noise_from_the_global_rng(pipe, state):
    g = torch.Generator().manual_seed(5)
    target, z = torch.randn(10, CT, generator=g) * 0.3, torch.randn(10, D_DEC, generator=g)
    mask = (torch.rand(10, generator=g) < 0.6).float()
    torch.manual_seed(11)
    loss = pipe.model.head_loss(target, z, mask).detach()
    torch.manual_seed(11)
    t = torch.randint(0, 1000, (10,))
    noise = torch.randn_like(target)
    assert float(loss) == pytest.approx(float(reference_loss(state, target, z, t, noise, mask)),
                                        rel=1e-5)  # fmt: skip
    given = pipe.model.head_loss(target, z, None, t=t, noise=noise).detach()
    assert float(given) == pytest.approx(
        float(reference_loss(state, target, z, t, noise)), rel=1e-5
    )


# -- sample_tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(num_iter=4, cfg=3.0, cfg_schedule="linear", temperature=0.9, steps=5),
        dict(num_iter=5, cfg=2.0, cfg_schedule="constant", temperature=1.0, steps=4),
        dict(num_iter=3, cfg=1.0, cfg_schedule="linear", temperature=1.1, steps=3),
    ],
)
def test_sample_tokens_reproduces_the_official_sampler_from_the_global_rngs(pipe, state, options):
    y = torch.tensor([3, 7])
    steps = options.pop("steps")
    np.random.seed(2)
    torch.manual_seed(2)
    got = pipe.sample_tokens(y, head_steps=steps, **options)
    assert got.shape == (2, 4, 8, 8)
    np.random.seed(2)
    torch.manual_seed(2)
    expected = reference_sample(state, TINY, y, steps=steps, schedule=options.pop("cfg_schedule"),
                                **options)  # fmt: skip
    assert close(pipe.model.patchify(got), expected, 1e-4)


def test_unconditional_sampling_uses_the_fake_latent_and_needs_bsz(pipe, state):
    np.random.seed(0)
    torch.manual_seed(0)
    got = pipe.sample_tokens(None, num_iter=2, cfg=1.5, head_steps=3, bsz=2)
    np.random.seed(0)
    torch.manual_seed(0)
    expected = reference_sample(state, TINY, torch.tensor([K, K]), num_iter=2, cfg=1.5, steps=3)
    assert close(pipe.model.patchify(got), expected, 1e-4)
    with pytest.raises(GenzooError, match="needs bsz"):
        pipe.sample_tokens(None, num_iter=2)


def test_given_orders_and_noise_tables_make_sampling_deterministic(pipe, state):
    g = torch.Generator().manual_seed(6)
    y = torch.tensor([1, 4])
    orders = torch.stack([torch.randperm(L, generator=g) for _ in range(2)])
    noise = torch.randn(2, L, 4 + 1, CT, generator=g)
    kwargs = dict(num_iter=3, cfg=2.5, head_steps=4, orders=orders, noise=noise)
    a = pipe.sample_tokens(y, **kwargs)
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(a, pipe.sample_tokens(y, **kwargs))
    expected = reference_sample(state, TINY, y, num_iter=3, cfg=2.5, steps=4, orders=orders,
                                noise=noise)  # fmt: skip
    assert close(pipe.model.patchify(a), expected, 1e-4)


def spy_on_head(pipe, monkeypatch):
    calls = []
    objective = pipe.model.objective
    original = objective.sample

    def spy(head, z, **kw):
        calls.append((z.shape[0], kw["cfg"]))
        return original(head, z, **kw)

    monkeypatch.setattr(objective, "sample", spy)
    return calls


def test_linear_guidance_uses_the_post_step_count_and_never_reaches_cfg(pipe, monkeypatch):
    calls = spy_on_head(pipe, monkeypatch)
    pipe.sample_tokens([0], num_iter=4, cfg=3.0, head_steps=2)
    assert [s for _, s in calls] == [1.25, 1.625, 2.25, 2.875]  # L = 16, 4 steps
    assert [n for n, _ in calls] == [2 * 2, 2 * 3, 2 * 5, 2 * 6]  # 16 → 14 → 11 → 6 → 0


def test_tokens_come_from_the_back_of_the_order(pipe):
    orders = torch.arange(L)[None].flip(1)  # position 15 first in the order, position 0 last
    noise = torch.randn(1, L, 3, CT, generator=torch.Generator().manual_seed(7))
    latents = pipe.sample_tokens([0], num_iter=2, head_steps=2, orders=orders, noise=noise)
    tokens = pipe.model.patchify(latents)
    # step 1 keeps floor(16·cos(π/4)) = 11 masked, orders[:, :11] = positions 15 … 5: the back
    # of the order, positions 0 … 4, is predicted first, from the all-masked context
    z = pipe.model.condition(torch.zeros(1, L, CT), torch.ones(1, L), torch.tensor([0]))
    head = pipe.model.head_net
    alone = pipe.model.objective.sample(head, z[0, :5], steps=2, noise=noise[0, :5])
    assert close(tokens[0, :5], alone)
    later = pipe.model.objective.sample(head, z[0, 5:10], steps=2, noise=noise[0, 5:10])
    assert not close(tokens[0, 5:10], later)  # predicted at step 2, from another context


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_iter=0), "num_iter=0"),
        (dict(num_iter=L + 1), "num_iter=17"),
        (dict(num_iter=4, cfg_schedule="cosine"), "cfg_schedule='cosine'"),
        (dict(num_iter=4, head_steps=0), "head_steps=0"),
        (dict(num_iter=4, temperature=0.0), "temperature=0.0"),
        (dict(num_iter=4, orders=torch.zeros(1, L, dtype=torch.long)), "orders and noise together"),
    ],
)
def test_bad_sampling_options_are_refused_by_name(pipe, kwargs, message):
    with pytest.raises(GenzooError, match=message):
        pipe.sample_tokens([0], **kwargs)
    with pytest.raises(GenzooError, match="outside"):
        pipe.sample_tokens([K], num_iter=2)


def test_pipeline_sample_decodes_with_the_vae_and_samples_depend_on_seed_and_index(state):
    from mar_vae_layout import random_vae_state

    vae_args = dict(embed_dim=4, ch_mult=(1, 1, 2), ch=32, resolution=32)
    vae = genzoo.load_official_tokenizer("mar-kl16", {"model": random_vae_state(0, **vae_args)},
                                         device="cpu", **vae_args)  # fmt: skip
    pipe = load_mar(state, vae=vae, device="cpu", **TINY)
    images = pipe.sample([1, 2, 3], seed=5, num_iter=2, head_steps=3)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    again = pipe.sample([2, 3], seed=5, indices=[1, 2], num_iter=2, head_steps=3)
    assert (again == images[1:]).all()


def test_the_cli_samples_an_official_checkpoint(tmp_path):
    from mar_vae_layout import TINY_VAE, random_vae_state

    from genzoo.cli import main

    args = {**TINY, "decoder_embed_dim": 32, "encoder_num_heads": 16, "decoder_num_heads": 16}
    torch.save({"model_ema": random_official_state_dict(3, **args)}, tmp_path / "mar.pth")
    torch.save({"model": random_vae_state(0, **TINY_VAE)}, tmp_path / "kl16.ckpt")
    out = tmp_path / "s.npz"
    argv = ["sample", "--official", "mar", "--weights", str(tmp_path / "mar.pth"), "--vae",
            str(tmp_path / "kl16.ckpt"), "--image-size", "32", "--num", "2", "--out", str(out),
            "--num-iter", "2", "--head-steps", "3", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert np.load(out)["arr_0"].shape == (2, 32, 32, 3)
    assert main([*argv[:5], "--vae", "stabilityai/sd-vae-ft-mse", *argv[7:]]) == 2
