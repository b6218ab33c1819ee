"""Test helper: the official LlamaGen VQModel state-dict layout and a plain functional forward,
both written from the specification (llamagen.md §8), independent of genzoo's modules.

`official_vq_shapes` lists (key, shape); `random_official_vq` fills it with random tensors (the
codebook deliberately not unit-norm); `reference_*` run the encoder, quantizer and decoder with
torch.nn.functional calls on such a state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULTS = dict(
    codebook_size=16384,
    codebook_embed_dim=8,
    encoder_ch_mult=(1, 1, 2, 2, 4),
    decoder_ch_mult=(1, 1, 2, 2, 4),
    z_channels=256,
    ch=128,
)
TINY = dict(
    codebook_size=64,
    codebook_embed_dim=4,
    encoder_ch_mult=(1, 1, 2),
    decoder_ch_mult=(1, 1, 2),
    z_channels=16,
    ch=32,
)


def _conv(key: str, out: int, inp: int, k: int) -> list:
    return [(f"{key}.weight", (out, inp, k, k)), (f"{key}.bias", (out,))]


def _norm(key: str, c: int) -> list:
    return [(f"{key}.weight", (c,)), (f"{key}.bias", (c,))]


def _res(key: str, inp: int, out: int) -> list:
    rows = _norm(f"{key}.norm1", inp) + _conv(f"{key}.conv1", out, inp, 3)
    rows += _norm(f"{key}.norm2", out) + _conv(f"{key}.conv2", out, out, 3)
    if inp != out:
        rows += _conv(f"{key}.nin_shortcut", out, inp, 1)
    return rows


def _attn(key: str, c: int) -> list:
    rows = _norm(f"{key}.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        rows += _conv(f"{key}.{name}", c, c, 1)
    return rows


def official_vq_shapes(**args) -> list[tuple[str, tuple[int, ...]]]:
    a = {**DEFAULTS, **args}
    ch, z, n, d = a["ch"], a["z_channels"], a["codebook_size"], a["codebook_embed_dim"]
    enc, dec = list(a["encoder_ch_mult"]), list(a["decoder_ch_mult"])
    rows = _conv("encoder.conv_in", ch, 3, 3)
    width = ch
    for i, m in enumerate(enc):
        out = ch * m
        for j in range(2):
            rows += _res(f"encoder.conv_blocks.{i}.res.{j}", width, out)
            width = out
        if i == len(enc) - 1:
            rows += _attn(f"encoder.conv_blocks.{i}.attn.0", out)
            rows += _attn(f"encoder.conv_blocks.{i}.attn.1", out)
        else:
            rows += _conv(f"encoder.conv_blocks.{i}.downsample.conv", out, out, 3)
    rows += _res("encoder.mid.0", width, width) + _attn("encoder.mid.1", width)
    rows += _res("encoder.mid.2", width, width)
    rows += _norm("encoder.norm_out", width) + _conv("encoder.conv_out", z, width, 3)

    width = ch * dec[-1]
    rows += _conv("decoder.conv_in", width, z, 3)
    rows += _res("decoder.mid.0", width, width) + _attn("decoder.mid.1", width)
    rows += _res("decoder.mid.2", width, width)
    for j, level in enumerate(reversed(range(len(dec)))):  # index 0 = deepest level
        out = ch * dec[level]
        for r in range(3):
            rows += _res(f"decoder.conv_blocks.{j}.res.{r}", width, out)
            width = out
            if j == 0:
                rows += _attn(f"decoder.conv_blocks.{j}.attn.{r}", out)
        if level != 0:
            rows += _conv(f"decoder.conv_blocks.{j}.upsample.conv", out, out, 3)
    rows += _norm("decoder.norm_out", width) + _conv("decoder.conv_out", 3, width, 3)

    rows += [("quantize.embedding.weight", (n, d)), ("quantize.codebook_used", (65536,))]
    rows += _conv("quant_conv", d, z, 1) + _conv("post_quant_conv", z, d, 1)
    return rows


def random_official_vq(seed: int = 0, **args) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout; small conv weights keep activations tame."""
    g = torch.Generator().manual_seed(seed)
    size = {**DEFAULTS, **args}["codebook_size"]
    state = {}
    for key, shape in official_vq_shapes(**args):
        if key == "quantize.codebook_used":
            state[key] = torch.randint(0, size, shape, generator=g).float()
        elif ".norm" in key and key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key == "quantize.embedding.weight":
            state[key] = 0.5 * torch.randn(shape, generator=g)  # stored without unit norm
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


# -- a plain functional forward ---------------------------------------------------------------


def _gn(s, key, x):
    return F.group_norm(x, 32, s[f"{key}.weight"], s[f"{key}.bias"], eps=1e-6)


def _c(s, key, x, stride=1, padding=None):
    w = s[f"{key}.weight"]
    pad = w.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, w, s[f"{key}.bias"], stride=stride, padding=pad)


def _swish(x):
    return x * torch.sigmoid(x)


def _res_f(s, key, x):
    h = _c(s, f"{key}.conv1", _swish(_gn(s, f"{key}.norm1", x)))
    h = _c(s, f"{key}.conv2", _swish(_gn(s, f"{key}.norm2", h)))
    if f"{key}.nin_shortcut.weight" in s:
        x = _c(s, f"{key}.nin_shortcut", x)
    return x + h


def _attn_f(s, key, x):
    n, c, h, w = x.shape
    t = _gn(s, f"{key}.norm", x)
    q, k, v = (_c(s, f"{key}.{p}", t).flatten(2) for p in ("q", "k", "v"))  # (n, c, hw)
    scores = torch.einsum("nci,ncj->nij", q, k) / c**0.5  # query i, key j
    out = torch.einsum("nij,ncj->nci", scores.softmax(dim=-1), v).reshape(n, c, h, w)
    return x + _c(s, f"{key}.proj_out", out)


def _levels(s, prefix):
    return sorted({int(k.split(".")[2]) for k in s if k.startswith(f"{prefix}.conv_blocks.")})


def reference_encoder(s, x):
    """Images → the pre-quantization vectors (after quant_conv)."""
    h = _c(s, "encoder.conv_in", x)
    for i in _levels(s, "encoder"):
        for j in range(2):
            h = _res_f(s, f"encoder.conv_blocks.{i}.res.{j}", h)
            if f"encoder.conv_blocks.{i}.attn.{j}.q.weight" in s:
                h = _attn_f(s, f"encoder.conv_blocks.{i}.attn.{j}", h)
        if f"encoder.conv_blocks.{i}.downsample.conv.weight" in s:
            h = _c(s, f"encoder.conv_blocks.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), 2, 0)
    h = _res_f(s, "encoder.mid.0", h)
    h = _attn_f(s, "encoder.mid.1", h)
    h = _res_f(s, "encoder.mid.2", h)
    h = _c(s, "encoder.conv_out", _swish(_gn(s, "encoder.norm_out", h)))
    return _c(s, "quant_conv", h)


def normalised_codebook(s):
    e = s["quantize.embedding.weight"]
    return e / e.norm(dim=1, keepdim=True)


def reference_ids(s, x):
    """Nearest l2-normalised code of each l2-normalised vector, by explicit differences."""
    z = reference_encoder(s, x).double()
    n, d, h, w = z.shape
    vectors = z.permute(0, 2, 3, 1).reshape(-1, d)
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    codes = normalised_codebook(s).double()
    dist = ((vectors[:, None, :] - codes[None, :, :]) ** 2).sum(-1)
    return dist.argmin(dim=1).reshape(n, h, w)


def reference_lookup(s, ids):
    """Ids (N, h, w) → normalised code vectors (N, d, h, w)."""
    return normalised_codebook(s)[ids].permute(0, 3, 1, 2)


def reference_decoder(s, z):
    h = _c(s, "decoder.conv_in", _c(s, "post_quant_conv", z))
    h = _res_f(s, "decoder.mid.0", h)
    h = _attn_f(s, "decoder.mid.1", h)
    h = _res_f(s, "decoder.mid.2", h)
    for j in _levels(s, "decoder"):
        for r in range(3):
            h = _res_f(s, f"decoder.conv_blocks.{j}.res.{r}", h)
            if f"decoder.conv_blocks.{j}.attn.{r}.q.weight" in s:
                h = _attn_f(s, f"decoder.conv_blocks.{j}.attn.{r}", h)
        if f"decoder.conv_blocks.{j}.upsample.conv.weight" in s:
            up = F.interpolate(h, scale_factor=2, mode="nearest")
            h = _c(s, f"decoder.conv_blocks.{j}.upsample.conv", up)
    return _c(s, "decoder.conv_out", _swish(_gn(s, "decoder.norm_out", h)))


# The PatchGAN discriminator of taming-transformers (n_layers=3, ndf=64): key → shape.
def patchgan_shapes(ndf: int = 64, n_layers: int = 3, in_channels: int = 3) -> dict:
    rows = {"main.0.weight": (ndf, in_channels, 4, 4), "main.0.bias": (ndf,)}
    idx, width = 2, ndf
    for n in range(1, n_layers + 1):
        out = ndf * min(2**n, 8)
        rows[f"main.{idx}.weight"] = (out, width, 4, 4)  # no bias: BatchNorm follows
        for p in ("weight", "bias", "running_mean", "running_var"):
            rows[f"main.{idx + 1}.{p}"] = (out,)
        rows[f"main.{idx + 1}.num_batches_tracked"] = ()
        idx, width = idx + 3, out
    rows[f"main.{idx}.weight"] = (1, width, 4, 4)
    rows[f"main.{idx}.bias"] = (1,)
    return rows
