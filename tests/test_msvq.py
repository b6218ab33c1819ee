"""VAR's multi-scale VQ-VAE (`msvq`): official layout, strict loading, codecs against the spec."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from var_layout import (
    PHI_MAPS,
    TINY_PATCH_NUMS,
    code_map,
    contribution,
    element_count,
    random_vqvae_state,
    reference_fhat,
    reference_var_input,
    vqvae_layout,
)

from genzoo.errors import GenzooError
from genzoo.tokenizers.msvq import MSVQConfig, MultiScaleVQTokenizer
from genzoo.zoo.var import load_var_vqvae

TINY = dict(ch=32, z=8, vocab=64, scales=4)
TINY_ARGS = dict(v_patch_nums=TINY_PATCH_NUMS, device="cpu")


@pytest.fixture(scope="module")
def tiny_state():
    return random_vqvae_state(vqvae_layout(**TINY), seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "vae_tiny.pth"
    torch.save(tiny_state, path)
    return load_var_vqvae(path, **TINY_ARGS)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


# -- a direct re-implementation of the convolutional trunk (spec §2) -------------------------


def _gn(s, p, x):
    return F.group_norm(x, 32, s[p + "weight"], s[p + "bias"], eps=1e-6)


def _conv(s, p, x, **kw):
    return F.conv2d(x, s[p + "weight"], s[p + "bias"], **kw)


def _resnet(s, p, x):
    h = _conv(s, p + "conv1.", F.silu(_gn(s, p + "norm1.", x)), padding=1)
    h = _conv(s, p + "conv2.", F.silu(_gn(s, p + "norm2.", h)), padding=1)
    short = _conv(s, p + "nin_shortcut.", x) if p + "nin_shortcut.weight" in s else x
    return short + h


def _attn(s, p, x):
    b, c, hh, ww = x.shape
    q, k, v = _conv(s, p + "qkv.", _gn(s, p + "norm.", x)).reshape(b, 3, c, hh * ww).unbind(1)
    w = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, query, key)
    out = (v @ w.transpose(1, 2)).reshape(b, c, hh, ww)
    return x + _conv(s, p + "proj_out.", out)


def _mid(s, p, h):
    return _resnet(
        s, p + "mid.block_2.", _attn(s, p + "mid.attn_1.", _resnet(s, p + "mid.block_1.", h))
    )


def reference_encoder(s, x):
    h = _conv(s, "encoder.conv_in.", x, padding=1)
    for level in range(5):
        for b in range(2):
            h = _resnet(s, f"encoder.down.{level}.block.{b}.", h)
            if level == 4:
                h = _attn(s, f"encoder.down.4.attn.{b}.", h)
        if level < 4:  # pad right and bottom only, stride-2 conv without padding
            h = _conv(s, f"encoder.down.{level}.downsample.conv.", F.pad(h, (0, 1, 0, 1)), stride=2)
    h = _mid(s, "encoder.", h)
    h = _conv(s, "encoder.conv_out.", F.silu(_gn(s, "encoder.norm_out.", h)), padding=1)
    return _conv(s, "quant_conv.", h, padding=1)


def reference_decoder(s, f_hat):
    h = _conv(s, "decoder.conv_in.", _conv(s, "post_quant_conv.", f_hat, padding=1), padding=1)
    h = _mid(s, "decoder.", h)
    for level in reversed(range(5)):
        for b in range(3):
            h = _resnet(s, f"decoder.up.{level}.block.{b}.", h)
            if level == 4:
                h = _attn(s, f"decoder.up.4.attn.{b}.", h)
        if level > 0:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = _conv(s, f"decoder.up.{level}.upsample.conv.", h, padding=1)
    h = _conv(s, "decoder.conv_out.", F.silu(_gn(s, "decoder.norm_out.", h)), padding=1)
    return h.clamp(-1, 1)


def reference_encode(s, x, patch_nums):
    """Residual quantisation: area-average the rest, nearest codebook row, subtract φ(codes)."""
    rest, ids = reference_encoder(s, x), []
    codebook = s["quantize.embedding.weight"]
    for k, p in enumerate(patch_nums):
        z = rest if k == len(patch_nums) - 1 else F.adaptive_avg_pool2d(rest, p)
        z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        idx = torch.cdist(z, codebook).argmin(dim=1).view(x.shape[0], p * p)
        rest = rest - contribution(s, code_map(s, idx, p), k, patch_nums)
        ids.append(idx)
    return ids


# -- layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table, cfg",
    [
        (dict(), MSVQConfig()),
        (TINY, MSVQConfig(ch=32, z_channels=8, vocab_size=64, v_patch_nums=TINY_PATCH_NUMS)),
        (dict(share=1), MSVQConfig(share_quant_resi=1)),
        (dict(share=0), MSVQConfig(share_quant_resi=0)),
    ],
)
def test_tokenizer_has_the_official_keys_shapes_and_order(table, cfg):
    with torch.device("meta"):
        tok = MultiScaleVQTokenizer(cfg)
    assert [(k, tuple(v.shape)) for k, v in tok.state_dict().items()] == vqvae_layout(**table)


def test_released_layout_matches_the_published_counts():
    layout = vqvae_layout()
    usage = 10 * 4096  # the per-scale usage buffer is not a parameter
    assert len(layout) == 324
    assert element_count(layout) - usage == 108_948_355


def test_phi_schedule_copies_the_official_tie_breaking():
    with torch.device("meta"):
        tok = MultiScaleVQTokenizer(MSVQConfig())
    bank = tok.quantize.quant_resi
    for scales, expected in PHI_MAPS.items():
        assert [bank.index(k, scales) for k in range(scales)] == expected


# -- loading ----------------------------------------------------------------------------------


def test_strict_load_from_pth_and_safetensors(tiny_state, tmp_path):
    pth, st = tmp_path / "vae.pth", tmp_path / "vae.safetensors"
    torch.save(tiny_state, pth)
    save_file(tiny_state, str(st))
    for path in (pth, st):
        tok = load_var_vqvae(path, **TINY_ARGS)
        assert (tok.vocab_size, tok.channels, tok.patch_nums) == (64, 8, TINY_PATCH_NUMS)
        for k, v in tok.state_dict().items():
            assert torch.equal(v, tiny_state[k]), k
        assert not any(p.requires_grad for p in tok.parameters())
        assert not tok.training


def test_a_file_with_another_scale_schedule_loads(tiny_state):
    """The usage buffer's first axis is the number of scales; it is replaced, as officially."""
    state = dict(tiny_state, **{"quantize.ema_vocab_hit_SV": torch.rand(10, 64)})
    tok = load_var_vqvae(state, v_patch_nums=(1, 2, 4), device="cpu")
    assert tok.patch_nums == (1, 2, 4)
    assert tok.quantize.ema_vocab_hit_SV.shape == (3, 64)
    assert torch.equal(tok.quantize.embedding.weight, tiny_state["quantize.embedding.weight"])


def test_mismatched_weights_are_refused_by_name(tiny_state):
    with pytest.raises(GenzooError, match="ch"):
        load_var_vqvae(tiny_state, ch=64, **TINY_ARGS)
    broken = dict(tiny_state)
    del broken["decoder.conv_out.bias"]
    with pytest.raises(GenzooError, match="decoder.conv_out.bias"):
        load_var_vqvae(broken, **TINY_ARGS)
    with pytest.raises(GenzooError, match="unknown official VQVAE argument"):
        load_var_vqvae(tiny_state, v_patchnums=TINY_PATCH_NUMS, device="cpu")
    with pytest.raises(GenzooError, match="VQ-VAE"):
        load_var_vqvae({"x": torch.zeros(1)})
    with pytest.raises(GenzooError, match="VAR transformer"):  # told what the file is instead
        load_var_vqvae({"pos_1LC": torch.zeros(1, 1, 1), "lvl_1L": torch.zeros(1, 1)})


# -- codecs -----------------------------------------------------------------------------------


def test_encode_equals_the_residual_quantisation_formula(tiny, tiny_state, images):
    ids = tiny.encode(images)
    assert [tuple(t.shape) for t in ids] == [(2, p * p) for p in TINY_PATCH_NUMS]
    assert all(t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) < 64 for t in ids)
    expected = reference_encode(tiny_state, images, TINY_PATCH_NUMS)
    assert all(torch.equal(a, b) for a, b in zip(ids, expected))
    assert sum(len(set(t.flatten().tolist())) for t in ids) > 8  # not a degenerate code


def test_decode_is_the_decoder_of_the_accumulated_codes(tiny, tiny_state, images):
    ids = tiny.encode(images)
    f_hat = reference_fhat(tiny_state, ids, TINY_PATCH_NUMS)
    torch.testing.assert_close(tiny.ids_to_fhat(ids), f_hat, atol=1e-5, rtol=1e-5)
    out = tiny.decode(ids)
    assert out.shape == (2, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out, reference_decoder(tiny_state, f_hat), atol=1e-4, rtol=1e-4)
    # the same ids concatenated (B, L), or as (B, p, p) maps, decode the same
    torch.testing.assert_close(tiny.decode(torch.cat(ids, 1)), out)
    maps = [t.view(2, p, p) for t, p in zip(ids, TINY_PATCH_NUMS)]
    torch.testing.assert_close(tiny.decode(maps), out)


def test_var_input_equals_the_formula(tiny, tiny_state):
    g = torch.Generator().manual_seed(3)
    ids = [torch.randint(0, 64, (3, p * p), generator=g) for p in TINY_PATCH_NUMS]
    got = tiny.var_input(ids)
    assert got.shape == (3, 30 - 1, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference_var_input(tiny_state, ids, TINY_PATCH_NUMS))
    changed = [t.clone() for t in ids]
    changed[-1] = (changed[-1] + 1) % 64  # the last scale is never an input
    torch.testing.assert_close(tiny.var_input(changed), got)


def test_bad_inputs_raise_genzoo_errors(tiny):
    with pytest.raises(GenzooError, match="64, 64"):
        tiny.encode(torch.zeros(1, 3, 32, 32))
    ids = [torch.zeros(1, p * p, dtype=torch.long) for p in TINY_PATCH_NUMS]
    with pytest.raises(GenzooError, match="4 maps"):
        tiny.decode(ids[:3])
    with pytest.raises(GenzooError, match=r"\[0, 64\)"):
        tiny.decode(ids[:3] + [torch.full((1, 16), 64)])
    with pytest.raises(GenzooError, match="scale 1"):
        tiny.decode([ids[0], ids[1].float(), *ids[2:]])
    with pytest.raises(GenzooError, match="30"):
        tiny.decode(torch.zeros(1, 29, dtype=torch.long))
    with pytest.raises(GenzooError, match="multiple of 32"):
        MultiScaleVQTokenizer(MSVQConfig(ch=48))
    with pytest.raises(GenzooError, match="v_patch_nums"):
        MultiScaleVQTokenizer(MSVQConfig(v_patch_nums=(2, 1)))
