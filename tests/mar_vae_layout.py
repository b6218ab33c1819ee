"""For the tests: MAR's KL-16 VAE layout and forward pass, written from the specification (§7).

Independent of genzoo's modules: keys and shapes from §7's description of the LDM encoder and
decoder (attention at running resolution 16, decoder levels stored by level index), and a
float64 functional forward (GroupNorm 32 groups eps 1e-6, swish, right/bottom padding before
the stride-2 conv, nearest ×2 then conv, single-head attention with scale c^−½).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KL16 = dict(embed_dim=16, ch_mult=(1, 1, 2, 2, 4), ch=128, resolution=256)
KL16_KEYS, KL16_PARAMS = 312, 66_456_019
# Tiny: 32 px, three levels (stride 4), attention on the level at running resolution 16.
TINY_VAE = dict(embed_dim=4, ch_mult=(1, 1, 2), ch=32, resolution=32)


def _res(prefix, cin, cout):
    rows = [(prefix + "norm1.weight", (cin,)), (prefix + "norm1.bias", (cin,)),
            (prefix + "conv1.weight", (cout, cin, 3, 3)), (prefix + "conv1.bias", (cout,)),
            (prefix + "norm2.weight", (cout,)), (prefix + "norm2.bias", (cout,)),
            (prefix + "conv2.weight", (cout, cout, 3, 3)),
            (prefix + "conv2.bias", (cout,))]  # fmt: skip
    if cin != cout:
        rows += [(prefix + "nin_shortcut.weight", (cout, cin, 1, 1)),
                 (prefix + "nin_shortcut.bias", (cout,))]  # fmt: skip
    return rows


def _attn(prefix, c):
    rows = [(prefix + "norm.weight", (c,)), (prefix + "norm.bias", (c,))]
    for name in ("q", "k", "v", "proj_out"):
        rows += [(f"{prefix}{name}.weight", (c, c, 1, 1)), (f"{prefix}{name}.bias", (c,))]
    return rows


def vae_shapes(embed_dim, ch_mult, ch, resolution):
    widths, last, res = [ch] + [ch * m for m in ch_mult], len(ch_mult) - 1, resolution
    rows = [("encoder.conv_in.weight", (ch, 3, 3, 3)), ("encoder.conv_in.bias", (ch,))]
    for i in range(len(ch_mult)):
        for j in range(2):
            cin = widths[i] if j == 0 else widths[i + 1]
            rows += _res(f"encoder.down.{i}.block.{j}.", cin, widths[i + 1])
        if res == 16:
            rows += _attn(f"encoder.down.{i}.attn.0.", widths[i + 1])
            rows += _attn(f"encoder.down.{i}.attn.1.", widths[i + 1])
        if i != last:
            rows += [(f"encoder.down.{i}.downsample.conv.weight", (widths[i + 1],) * 2 + (3, 3)),
                     (f"encoder.down.{i}.downsample.conv.bias", (widths[i + 1],))]  # fmt: skip
            res //= 2
    top = widths[-1]

    def mid(part):
        return (_res(f"{part}.mid.block_1.", top, top) + _attn(f"{part}.mid.attn_1.", top)
                + _res(f"{part}.mid.block_2.", top, top))  # fmt: skip

    rows += mid("encoder")
    rows += [("encoder.norm_out.weight", (top,)), ("encoder.norm_out.bias", (top,)),
             ("encoder.conv_out.weight", (2 * embed_dim, top, 3, 3)),
             ("encoder.conv_out.bias", (2 * embed_dim,))]  # fmt: skip
    rows += [("decoder.conv_in.weight", (top, embed_dim, 3, 3)), ("decoder.conv_in.bias", (top,))]
    rows += mid("decoder")
    ins = {}  # a decoder level's input width: the output of the level below it (deeper)
    width = top
    for i in reversed(range(len(ch_mult))):
        ins[i], width = width, ch * ch_mult[i]
    for i in range(len(ch_mult)):
        out = ch * ch_mult[i]
        for j in range(3):
            rows += _res(f"decoder.up.{i}.block.{j}.", ins[i] if j == 0 else out, out)
        if i != 0:
            rows += [(f"decoder.up.{i}.upsample.conv.weight", (out, out, 3, 3)),
                     (f"decoder.up.{i}.upsample.conv.bias", (out,))]  # fmt: skip
    rows += [("decoder.norm_out.weight", (ch,)), ("decoder.norm_out.bias", (ch,)),
             ("decoder.conv_out.weight", (3, ch, 3, 3)), ("decoder.conv_out.bias", (3,)),
             ("quant_conv.weight", (2 * embed_dim, 2 * embed_dim, 1, 1)),
             ("quant_conv.bias", (2 * embed_dim,)),
             ("post_quant_conv.weight", (embed_dim, embed_dim, 1, 1)),
             ("post_quant_conv.bias", (embed_dim,))]  # fmt: skip
    return rows


def random_vae_state(seed, **args):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in vae_shapes(**args):
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif "norm" in key and key.endswith("weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def _conv(s, p, x, pad=1, stride=1):
    return F.conv2d(x, s[p + ".weight"].double(), s[p + ".bias"].double(), stride, pad)


def _gn(s, p, x):
    return F.group_norm(x, 32, s[p + ".weight"].double(), s[p + ".bias"].double(), 1e-6)


def _swish(x):
    return x * torch.sigmoid(x)


def _resblock(s, p, x):
    h = _conv(s, p + "conv1", _swish(_gn(s, p + "norm1", x)))
    h = _conv(s, p + "conv2", _swish(_gn(s, p + "norm2", h)))
    skip = _conv(s, p + "nin_shortcut", x, pad=0) if p + "nin_shortcut.weight" in s else x
    return skip + h


def _attnblock(s, p, x):
    b, c, hh, ww = x.shape
    h = _gn(s, p + "norm", x)
    q, k, v = (_conv(s, p + n, h, pad=0).reshape(b, c, hh * ww) for n in ("q", "k", "v"))
    w = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (b, query, key)
    out = (v @ w.transpose(1, 2)).reshape(b, c, hh, ww)
    return x + _conv(s, p + "proj_out", out, pad=0)


def _mid(s, part, h):
    h = _resblock(s, f"{part}.mid.block_1.", h)
    return _resblock(s, f"{part}.mid.block_2.", _attnblock(s, f"{part}.mid.attn_1.", h))


def reference_posterior(s, x, levels):
    """(mean, std) unscaled, float64."""
    h = _conv(s, "encoder.conv_in", x.double())
    for i in range(levels):
        for j in range(2):
            h = _resblock(s, f"encoder.down.{i}.block.{j}.", h)
            if f"encoder.down.{i}.attn.{j}.q.weight" in s:
                h = _attnblock(s, f"encoder.down.{i}.attn.{j}.", h)
        if i != levels - 1:
            h = _conv(s, f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), 0, 2)
    h = _conv(s, "encoder.conv_out", _swish(_gn(s, "encoder.norm_out", _mid(s, "encoder", h))))
    mean, logvar = _conv(s, "quant_conv", h, pad=0).chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30, 20))


def reference_decode(s, z, levels):
    """Image from unscaled latents, float64 (the decoder runs from the deepest level up)."""
    h = _mid(s, "decoder", _conv(s, "decoder.conv_in", _conv(s, "post_quant_conv", z.double(), 0)))
    for i in reversed(range(levels)):
        for j in range(3):
            h = _resblock(s, f"decoder.up.{i}.block.{j}.", h)
        if i != 0:
            h = _conv(s, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0))
    return _conv(s, "decoder.conv_out", _swish(_gn(s, "decoder.norm_out", h)))
