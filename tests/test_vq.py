"""The LlamaGen-layout VQ tokenizer, its official loader, the VQGAN losses and the vqgan family."""

from __future__ import annotations

import contextlib
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file
from vq_layout import (
    TINY,
    official_vq_shapes,
    patchgan_shapes,
    random_official_vq,
    reference_decoder,
    reference_encoder,
    reference_ids,
    reference_lookup,
)

from genzoo.errors import GenzooError
from genzoo.families.vqgan import VQGANConfig, VQGANTraining
from genzoo.tokenizers.rfid import reconstruction_fid
from genzoo.tokenizers.vq import VQTokenizer, VQTokenizerConfig, load_official_vq
from genzoo.tokenizers.vq_losses import (
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_disc_weight,
    disc_factor,
    hinge_d_loss,
    hinge_g_loss,
)
from genzoo.tokenizers.vq_model import VQConfig, VQModel

RES = 32  # tiny images: stride 4 → 8×8 ids


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def state():
    return random_official_vq(seed=0, **TINY)


@pytest.fixture(scope="module")
def tok(state):
    return load_official_vq(state, device="cpu", **TINY)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(1)) * 2 - 1


# -- layout and loading -----------------------------------------------------------------------


def test_official_key_counts_match_the_spec():
    assert len(official_vq_shapes()) == 344  # VQ-16
    assert (
        len(official_vq_shapes(encoder_ch_mult=(1, 2, 2, 4), decoder_ch_mult=(1, 2, 2, 4))) == 300
    )
    vq16 = dict(official_vq_shapes())
    assert vq16["encoder.conv_out.weight"] == (256, 512, 3, 3)
    assert vq16["decoder.conv_blocks.3.res.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    with torch.device("meta"):
        model = VQModel(VQConfig())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == vq16


@pytest.mark.parametrize("container", ["model-pt", "flat-pt", "safetensors", "dict"])
def test_strict_load_of_each_container(tmp_path, state, container):
    if container == "model-pt":
        weights = tmp_path / "vq.pt"
        torch.save({"model": state}, weights)
    elif container == "flat-pt":
        weights = tmp_path / "vq.pt"
        torch.save(state, weights)
    elif container == "safetensors":
        weights = tmp_path / "vq.safetensors"
        save_file(state, str(weights))
    else:
        weights = state
    tok = load_official_vq(weights, device="cpu", **TINY)
    loaded = tok.model.state_dict()
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    assert not tok.training and not any(p.requires_grad for p in tok.parameters())


def test_usage_buffer_is_optional_and_loading_draws_no_random_numbers(state):
    without = {k: v for k, v in state.items() if k != "quantize.codebook_used"}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    load_official_vq(without, device="cpu", **TINY)
    assert torch.equal(torch.get_rng_state(), before)  # a seeded sampler stays reproducible


def test_properties_and_latent_shape(tok):
    assert tok.discrete and tok.vocab_size == 64 and tok.stride == 4 and tok.channels == 4
    assert tok.latent_shape(RES) == (8, 8)
    with pytest.raises(GenzooError, match="multiple"):
        tok.latent_shape(30)


# -- encoding and decoding --------------------------------------------------------------------


def test_encode_ids_equal_an_independent_nearest_code(tok, state, images):
    ids = tok.encode(images)
    assert ids.dtype == torch.long and ids.shape == (2, 8, 8)
    assert torch.equal(ids, reference_ids(state, images))
    assert len(torch.unique(ids)) > 1


def test_decode_matches_the_reference_and_ids_equal_latents(tok, state, images):
    ids = tok.encode(images)
    latents = reference_lookup(state, ids)  # normalised codebook rows, looked up in the test
    from_ids, from_latents = tok.decode(ids), tok.decode(latents)
    assert from_ids.shape == (2, 3, RES, RES)
    torch.testing.assert_close(from_ids, from_latents, rtol=0, atol=1e-6)
    reference = reference_decoder(state, latents.contiguous())
    torch.testing.assert_close(from_ids, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tok.quantize(images), latents, rtol=0, atol=1e-7)


def test_forward_losses_follow_their_formulas(state, images):
    model = VQModel(VQConfig(**TINY, commit_loss_beta=0.25, entropy_loss_ratio=0.1))
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        _, losses = model(images)
    z = reference_encoder(state, images).permute(0, 2, 3, 1).reshape(-1, 4)
    z = z / z.norm(dim=1, keepdim=True)
    ids = reference_ids(state, images).reshape(-1)
    codes = state["quantize.embedding.weight"]
    codes = codes / codes.norm(dim=1, keepdim=True)
    gap = ((codes[ids] - z) ** 2).mean()
    torch.testing.assert_close(losses["codebook"], gap, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(losses["commit"], 0.25 * gap, rtol=1e-4, atol=1e-6)
    assert float(losses["usage"]) == pytest.approx(len(torch.unique(ids)) / 64)
    # entropy: mean per-vector entropy − entropy of the mean, of softmax(−|z − e|² / 0.01)
    p = torch.softmax(-((z[:, None] - codes[None]) ** 2).sum(-1) / 0.01, dim=-1)
    per_vector = -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()
    mean_p = p.mean(0)
    expected = 0.1 * (per_vector + (mean_p * torch.log(mean_p + 1e-5)).sum())
    torch.testing.assert_close(losses["entropy"], expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bad", [64, -1, 1000])
def test_ids_out_of_range_are_refused(tok, bad):
    ids = torch.zeros(1, 8, 8, dtype=torch.long)
    ids[0, 3, 3] = bad
    with pytest.raises(GenzooError, match=rf"code id {bad} is outside the codebook \[0, 64\)"):
        tok.decode(ids)


def test_mismatching_codebook_is_refused_by_name(state):
    with pytest.raises(GenzooError, match="codebook_size: the file has 64 codes.*says 128"):
        load_official_vq(state, device="cpu", **{**TINY, "codebook_size": 128})
    with pytest.raises(GenzooError, match="codebook_embed_dim: .*4 dimensions.*says 8"):
        load_official_vq(state, device="cpu", **{**TINY, "codebook_embed_dim": 8})
    with pytest.raises(GenzooError, match="z_channels=16"):
        load_official_vq(state, device="cpu", **{**TINY, "z_channels": 32})
    with pytest.raises(GenzooError, match="unknown VQ argument.*bogus"):
        load_official_vq(state, device="cpu", bogus=1)
    with pytest.raises(GenzooError, match="multiples of 32"):
        VQModel(VQConfig(ch=16))
    # `dropout` names the official dropout_p
    assert load_official_vq(state, device="cpu", **TINY, dropout=0.0).model.cfg.dropout_p == 0.0


def test_a_weights_file_source_reads_its_sizes_from_the_shapes(tmp_path, state, images, tok):
    weights = tmp_path / "vq.safetensors"
    save_file(state, str(weights))
    from_source = VQTokenizer.from_config(VQTokenizerConfig(source=str(weights)))
    assert from_source.model.cfg.encoder_ch_mult == (1, 1, 2)
    assert torch.equal(from_source.encode(images), tok.encode(images))


# -- losses -----------------------------------------------------------------------------------


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 − real) = (0, 0.5, 2) → mean 5/6; relu(1 + fake) = (0, 1, 2.5) → mean 7/6
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (2.5 / 3 + 3.5 / 3))
    assert float(hinge_g_loss(fake)) == pytest.approx(0.5 / 3)


def test_disc_factor_and_adaptive_weight():
    assert [disc_factor(s, 3) for s in range(4)] == [0.0, 0.0, 1.0, 1.0]
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 1.0, 0.0])
    weight = adaptive_disc_weight((w * a).sum(), (w * b).sum(), w)  # gradients a and b
    assert float(weight) == pytest.approx(5.0 / (1.0 + 1e-4))


def test_patch_discriminator_layout():
    disc = PatchDiscriminator()
    assert {k: tuple(v.shape) for k, v in disc.state_dict().items()} == patchgan_shapes()
    assert PatchDiscriminator(ndf=8)(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 2, 2)


VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128),
               12: (256, 256), 14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512),
               24: (512, 512), 26: (512, 512), 28: (512, 512)}  # fmt: skip


def test_perceptual_loss_reads_vgg_from_a_local_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    vgg = {}  # torchvision's vgg16 key layout (features only), random values
    for i, (out, inp) in VGG16_CONVS.items():
        vgg[f"features.{i}.weight"] = torch.randn(out, inp, 3, 3, generator=g) * 0.05
        vgg[f"features.{i}.bias"] = torch.randn(out, generator=g) * 0.01
    save_file(vgg, str(tmp_path / "vgg16.safetensors"))
    loss = PerceptualLoss(tmp_path / "vgg16.safetensors")
    trunk = loss.lpips.net
    assert torch.equal(getattr(trunk.slice3, "10").weight, vgg["features.10.weight"])
    assert torch.equal(getattr(trunk.slice5, "28").bias, vgg["features.28.bias"])
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x, -x)) > 0
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(GenzooError, match="VGG16"):
        PerceptualLoss(tmp_path / "bad.safetensors")


# -- training ---------------------------------------------------------------------------------


class FakeContext:
    """What the trainer hands `train_step`, for one step on fixed images."""

    def __init__(self, model, aux, optimizers, images, step, accum=1):
        self.model = self.net = model
        self.aux, self.optimizers = aux, optimizers
        self.images, self.step, self.total_steps, self.accum = images, step, 3, accum

    batches_drawn = 0

    def next_batch(self):
        self.batches_drawn += 1
        return self.images, torch.zeros(len(self.images), dtype=torch.long), torch.Generator()

    def autocast(self):
        return contextlib.nullcontext()

    def clip(self, params):
        return float(torch.nn.utils.clip_grad_norm_(list(params), 1.0))


def test_vqgan_trains_three_steps_with_the_disc_switched_on(state):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    model = VQModel(VQConfig(**TINY))
    model.load_state_dict(state)
    model.train()
    cfg = VQGANConfig(disc_start=2, disc_dim=8, disc_layers=2, disc_adaptive=True, l1_weight=0.5)
    family = VQGANTraining(cfg)
    aux = family.auxiliary(None)
    train_cfg = SimpleNamespace(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    optimizers = family.make_optimizers(model, aux, train_cfg)
    assert set(optimizers) == {"model", "disc"}
    keys = {"loss", "rec_l1", "rec_l2", "perceptual", "commit", "codebook", "g_adv", "d_loss",
            "usage"}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random LPIPS trunk
        for step in range(3):
            disc_before = [p.detach().clone() for p in aux["disc"].parameters()]
            model_before = [p.detach().clone() for p in model.parameters()]
            accum = 2 if step == 2 else 1  # the last step in two micro-batches
            ctx = FakeContext(model, aux, optimizers, images, step, accum)
            logged = family.train_step(ctx)
            assert ctx.batches_drawn == accum
            assert keys <= set(logged) and all(math.isfinite(v) for v in logged.values())
            assert 0.0 <= logged["usage"] <= 1.0
            disc_moved = any(
                not torch.equal(a, b) for a, b in zip(disc_before, aux["disc"].parameters())
            )
            assert any(not torch.equal(a, b) for a, b in zip(model_before, model.parameters()))
            on = step + 1 >= cfg.disc_start  # the official step count starts at 1
            assert disc_moved == on and bool(logged["disc_active"]) == on
            assert (logged["d_loss"] > 0) == on and (logged["g_adv"] != 0) == on
            if on:
                assert logged["disc_weight"] > 0  # the adaptive weight was computed
        evaluated = family.loss(model, images, None, step=5)
    assert {"loss", "g_adv", "perceptual"} <= set(evaluated)
    assert torch.isfinite(evaluated["loss"])
    with pytest.raises(GenzooError, match="does not generate"):
        family.sample(model, torch.zeros(1), generators=None, null_label=0)


# -- rFID -------------------------------------------------------------------------------------


def _tiny_features(images_uint8_nchw):
    x = images_uint8_nchw.float() / 255.0
    pooled = torch.nn.functional.avg_pool2d(x, 8).flatten(1)  # 3 × 2 × 2 = 12 features
    return {"pool3": pooled[:, :6]}


def _frechet(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_reconstruction_fid(tok):
    g = torch.Generator().manual_seed(3)
    reals = torch.randint(0, 256, (16, 16, 16, 3), dtype=torch.uint8, generator=g)
    rfid = reconstruction_fid(tok, reals.numpy(), features=_tiny_features, batch_size=6)
    x = reals.permute(0, 3, 1, 2).float() / 127.5 - 1
    recon = (127.5 * tok.decode(tok.encode(x)) + 128).clamp(0, 255).to(torch.uint8)
    expected = _frechet(
        _tiny_features(reals.permute(0, 3, 1, 2))["pool3"].double().numpy(),
        _tiny_features(recon)["pool3"].double().numpy(),
    )
    assert rfid == pytest.approx(expected, rel=1e-6, abs=1e-9)
    from genzoo.tokenizers.pixels import PixelTokenizer

    perfect = reconstruction_fid(PixelTokenizer(), [reals[:9], reals[9:]], features=_tiny_features)
    assert perfect == pytest.approx(0.0, abs=1e-9)
