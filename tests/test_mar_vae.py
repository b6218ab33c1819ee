"""MAR's KL-16 VAE (`mar-kl16`): official layout and counts, loading kl16.ckpt's container,
posterior / encode / decode against a reference written from the specification."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from mar_vae_layout import (
    KL16,
    KL16_KEYS,
    KL16_PARAMS,
    TINY_VAE,
    random_vae_state,
    reference_decode,
    reference_posterior,
    vae_shapes,
)
from safetensors.torch import save_file

import genzoo
from genzoo.errors import GenzooError
from genzoo.tokenizers import build_tokenizer
from genzoo.tokenizers.mar_vae import AutoencoderKL16, MARVAEConfig, infer_mar_vae_args
from genzoo.zoo.kinds import guess_kind

pytestmark = pytest.mark.usefixtures("one_thread")
LEVELS = len(TINY_VAE["ch_mult"])


@pytest.fixture(scope="module")
def state():
    return random_vae_state(0, **TINY_VAE)


@pytest.fixture(scope="module")
def tok(state):
    return genzoo.load_official_tokenizer("mar-kl16", {"model": state}, device="cpu",
                                          scale=0.2325, **TINY_VAE)  # fmt: skip


def test_the_official_vae_has_312_keys_and_66_456_019_parameters():
    with torch.device("meta"):
        vae = AutoencoderKL16(**KL16)
    got = [(k, tuple(v.shape)) for k, v in vae.state_dict().items()]
    assert got == vae_shapes(**KL16)
    assert len(got) == KL16_KEYS and sum(math.prod(s) for _, s in got) == KL16_PARAMS
    shapes = dict(got)
    assert shapes["encoder.down.4.attn.1.proj_out.weight"] == (512, 512, 1, 1)
    assert "encoder.down.3.attn.0.q.weight" not in shapes  # attention only at resolution 16
    assert not any(".attn." in k for k in shapes if k.startswith("decoder.up."))
    assert shapes["decoder.conv_in.weight"] == (512, 16, 3, 3)
    assert infer_mar_vae_args(vae.state_dict()) == KL16


def test_tiny_layout_places_attention_by_running_resolution():
    with torch.device("meta"):
        vae = AutoencoderKL16(**TINY_VAE)
    got = [(k, tuple(v.shape)) for k, v in vae.state_dict().items()]
    assert got == vae_shapes(**TINY_VAE)
    assert any(k.startswith("encoder.down.1.attn.") for k, _ in got)  # 32 → 16 at level 1
    assert infer_mar_vae_args(vae.state_dict()) == TINY_VAE


def test_posterior_encode_and_decode_match_the_reference(tok, state):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, std = tok.posterior(x)
    ref_mean, ref_std = reference_posterior(state, x, LEVELS)
    assert mean.shape == (2, 4, 8, 8) and tok.stride == 4 and tok.channels == 4
    assert torch.allclose(mean.double(), ref_mean, atol=1e-5)
    assert torch.allclose(std.double(), ref_std, atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(3)
    z = tok.encode(x, generator=g)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z.double(), (ref_mean + ref_std * eps.double()) * 0.2325, atol=1e-5)
    torch.manual_seed(4)  # no generator: the global CPU RNG, as the official sample()
    z_global = tok.encode(x)
    torch.manual_seed(4)
    assert torch.allclose(z_global, (mean + std * torch.randn(mean.shape)) * 0.2325, atol=1e-6)
    image = tok.decode(z)
    assert image.shape == (2, 3, 32, 32)
    assert torch.allclose(image.double(), reference_decode(state, z.double() / 0.2325, LEVELS),
                          atol=1e-4)  # fmt: skip


def test_containers_extra_keys_missing_keys_and_other_kinds(tmp_path, state):
    torch.save({"model": {**state, "loss.logvar": torch.zeros(())}, "epoch": 3},
               tmp_path / "kl16.ckpt")  # fmt: skip
    save_file(state, str(tmp_path / "kl16.safetensors"))
    for name in ("kl16.ckpt", "kl16.safetensors"):
        with (
            pytest.warns(UserWarning, match="loss.logvar")
            if name.endswith("ckpt")
            else nullcontext()
        ):
            tok = genzoo.load_official_tokenizer("mar-kl16", tmp_path / name, device="cpu",
                                                 **TINY_VAE)  # fmt: skip
        assert torch.equal(tok.vae.state_dict()["quant_conv.weight"], state["quant_conv.weight"])
    missing = {k: v for k, v in state.items() if k != "encoder.conv_out.bias"}
    with pytest.raises(GenzooError, match="missing keys.*encoder.conv_out.bias"):
        genzoo.load_official_tokenizer("mar-kl16", missing, **TINY_VAE)
    with pytest.raises(GenzooError, match="mis-shaped"):
        genzoo.load_official_tokenizer("mar-kl16", state, **{**TINY_VAE, "embed_dim": 8})
    vq_like = {"encoder.conv_blocks.0.res.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(GenzooError, match="looks like a LlamaGen VQ tokenizer"):
        genzoo.load_official_tokenizer("mar-kl16", vq_like, **TINY_VAE)
    assert guess_kind({"model": state}) == "mar-kl16"
    with pytest.raises(GenzooError, match="multiples of 32"):
        genzoo.load_official_tokenizer("mar-kl16", state, **{**TINY_VAE, "ch": 24})


def test_a_run_names_the_vae_by_its_file(tmp_path, state):
    torch.save({"model": state}, tmp_path / "kl16.ckpt")
    cfg = MARVAEConfig(source=str(tmp_path / "kl16.ckpt"), **TINY_VAE)
    tok = build_tokenizer(cfg)
    assert tok.spec == f"mar-kl16:{tmp_path / 'kl16.ckpt'}" and tok.latent_shape(32) == (4, 8, 8)
    assert not any(p.requires_grad for p in tok.parameters())
    with pytest.raises(GenzooError, match="needs its weights"):
        build_tokenizer(MARVAEConfig())
