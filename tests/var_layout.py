"""Test helper: the official VAR / VQ-VAE state-dict layouts and the quantiser's formulas, written
from the specification (var.md §1-3), independently of genzoo's modules.

Layouts are [(key, shape)] in the official state-dict order. Random "official" checkpoints are
built from them. The references below recompute, from raw tensors with plain torch calls, f̂
and the teacher-forcing input, the transformer's forward pass (no cache), and the official
sampler step by step with its global-RNG draws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TINY_PATCH_NUMS = (1, 2, 3, 4)  # L = 30, images 64×64
# Which φ serves each scale (spec §2), for 4 convolutions.
PHI_MAPS = {
    2: [0, 3],
    3: [0, 2, 3],  # k = 1 ties between the ticks 13/36 and 23/36; float64 resolves it upward
    4: [0, 1, 2, 3],
    10: [0, 0, 1, 1, 1, 2, 2, 3, 3, 3],
    14: [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3],
}


# -- the multi-scale VQ-VAE ---------------------------------------------------------------------


def _resnet(prefix: str, c_in: int, c_out: int) -> list:
    rows = [
        (prefix + "norm1.weight", (c_in,)),
        (prefix + "norm1.bias", (c_in,)),
        (prefix + "conv1.weight", (c_out, c_in, 3, 3)),
        (prefix + "conv1.bias", (c_out,)),
        (prefix + "norm2.weight", (c_out,)),
        (prefix + "norm2.bias", (c_out,)),
        (prefix + "conv2.weight", (c_out, c_out, 3, 3)),
        (prefix + "conv2.bias", (c_out,)),
    ]
    if c_in != c_out:
        rows += [
            (prefix + "nin_shortcut.weight", (c_out, c_in, 1, 1)),
            (prefix + "nin_shortcut.bias", (c_out,)),
        ]
    return rows


def _attn(prefix: str, c: int) -> list:
    return [
        (prefix + "norm.weight", (c,)),
        (prefix + "norm.bias", (c,)),
        (prefix + "qkv.weight", (3 * c, c, 1, 1)),
        (prefix + "qkv.bias", (3 * c,)),
        (prefix + "proj_out.weight", (c, c, 1, 1)),
        (prefix + "proj_out.bias", (c,)),
    ]


def _conv(prefix: str, c_out: int, c_in: int, k: int) -> list:
    return [(prefix + "weight", (c_out, c_in, k, k)), (prefix + "bias", (c_out,))]


def _mid(prefix: str, c: int) -> list:
    return (
        _resnet(prefix + "mid.block_1.", c, c)
        + _attn(prefix + "mid.attn_1.", c)
        + _resnet(prefix + "mid.block_2.", c, c)
    )


def vqvae_layout(ch=160, z=32, vocab=4096, scales=10, share=4, phi_count=None, ks=3) -> list:
    """Channel multipliers (1,1,2,2,4); 2 blocks per encoder level, 3 per decoder level;
    attention at the lowest level (2 in the encoder, 3 in the decoder) and in the middle."""
    mult = (1, 1, 2, 2, 4)
    rows = _conv("encoder.conv_in.", ch, 3, 3)
    c = ch
    for level, m in enumerate(mult):
        for b in range(2):
            rows += _resnet(f"encoder.down.{level}.block.{b}.", c, ch * m)
            c = ch * m
        if level == 4:
            rows += _attn("encoder.down.4.attn.0.", c) + _attn("encoder.down.4.attn.1.", c)
        else:
            rows += _conv(f"encoder.down.{level}.downsample.conv.", c, c, 3)
    rows += _mid("encoder.", c)
    rows += [("encoder.norm_out.weight", (c,)), ("encoder.norm_out.bias", (c,))]
    rows += _conv("encoder.conv_out.", z, c, 3)
    rows += _conv("decoder.conv_in.", 4 * ch, z, 3) + _mid("decoder.", 4 * ch)
    ins = {4: 4 * ch, 3: 4 * ch, 2: 2 * ch, 1: 2 * ch, 0: ch}  # input width of each up level
    for level, m in enumerate(mult):
        c = ins[level]
        for b in range(3):
            rows += _resnet(f"decoder.up.{level}.block.{b}.", c, ch * m)
            c = ch * m
        if level == 4:
            rows += sum((_attn(f"decoder.up.4.attn.{i}.", c) for i in range(3)), [])
        if level > 0:
            rows += _conv(f"decoder.up.{level}.upsample.conv.", c, c, 3)
    rows += [("decoder.norm_out.weight", (ch,)), ("decoder.norm_out.bias", (ch,))]
    rows += _conv("decoder.conv_out.", 3, ch, 3)
    rows.append(("quantize.ema_vocab_hit_SV", (scales, vocab)))
    if share == 1:
        rows += _conv("quantize.quant_resi.qresi.", z, z, 3)
    elif share >= 2:
        rows += sum(
            (_conv(f"quantize.quant_resi.qresi_ls.{i}.", z, z, 3) for i in range(share)), []
        )
    else:
        rows += sum(
            (_conv(f"quantize.quant_resi.{i}.", z, z, 3) for i in range(phi_count or scales)), []
        )
    rows.append(("quantize.embedding.weight", (vocab, z)))
    rows += _conv("quant_conv.", z, z, ks) + _conv("post_quant_conv.", z, z, ks)
    return rows


def random_vqvae_state(layout: list, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith("ema_vocab_hit_SV"):
            t = torch.rand(shape, generator=g)
        elif "norm" in key and key.endswith("weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("bias"):
            t = 0.05 * torch.randn(shape, generator=g)
        elif key.endswith("embedding.weight"):
            t = torch.randn(shape, generator=g)
        else:  # convolutions: unit-ish gain
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        state[key] = t
    return state


# -- the VAR transformer --------------------------------------------------------------------------


def token_levels(patch_nums) -> torch.Tensor:
    return torch.tensor([k for k, p in enumerate(patch_nums) for _ in range(p * p)])


def var_layout(depth=16, width=None, heads=None, vocab=4096, cv=32, patch_nums=None,
               classes=1000, shared_aln=False, l2_norm=True, mlp_ratio=4.0) -> list:  # fmt: skip
    """[(key, shape)]; buffers included (lvl_1L, attn_bias_for_masking, zero_k_bias)."""
    c = width or 64 * depth
    h = heads or depth
    patch_nums = patch_nums or (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    length, first = sum(p * p for p in patch_nums), patch_nums[0] ** 2
    hidden = round(c * mlp_ratio)
    rows = [
        ("pos_start", (1, first, c)),
        ("pos_1LC", (1, length, c)),
        ("lvl_1L", (1, length)),
        ("attn_bias_for_masking", (1, 1, length, length)),
        ("word_embed.weight", (c, cv)),
        ("word_embed.bias", (c,)),
        ("class_emb.weight", (classes + 1, c)),
        ("lvl_embed.weight", (len(patch_nums), c)),
    ]
    if shared_aln:
        rows += [("shared_ada_lin.1.weight", (6 * c, c)), ("shared_ada_lin.1.bias", (6 * c,))]
    for i in range(depth):
        b = f"blocks.{i}."
        rows += [(b + "ada_gss", (1, 1, 6, c))] if shared_aln else []
        rows += [(b + "attn.scale_mul_1H11", (1, h, 1, 1))] if l2_norm else []
        rows += [
            (b + "attn.q_bias", (c,)),
            (b + "attn.v_bias", (c,)),
            (b + "attn.zero_k_bias", (c,)),
            (b + "attn.mat_qkv.weight", (3 * c, c)),
            (b + "attn.proj.weight", (c, c)),
            (b + "attn.proj.bias", (c,)),
            (b + "ffn.fc1.weight", (hidden, c)),
            (b + "ffn.fc1.bias", (hidden,)),
            (b + "ffn.fc2.weight", (c, hidden)),
            (b + "ffn.fc2.bias", (c,)),
        ]
        if not shared_aln:
            rows += [(b + "ada_lin.1.weight", (6 * c, c)), (b + "ada_lin.1.bias", (6 * c,))]
    rows += [
        ("head_nm.ada_lin.1.weight", (2 * c, c)),
        ("head_nm.ada_lin.1.bias", (2 * c,)),
        ("head.weight", (vocab, c)),
        ("head.bias", (vocab,)),
    ]
    return rows


BUFFERS = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias")


def random_var_state(layout: list, patch_nums, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights; the buffers as the spec defines them (levels, block-causal 0/−inf mask)."""
    g = torch.Generator().manual_seed(seed)
    level = token_levels(patch_nums)
    state = {}
    for key, shape in layout:
        if key == "lvl_1L":
            t = level.view(1, -1).clone()
        elif key == "attn_bias_for_masking":
            visible = level[:, None] >= level[None, :]
            t = torch.where(visible, 0.0, -math.inf).view(shape)
        elif key.endswith("zero_k_bias"):
            t = torch.zeros(shape)
        elif key.endswith("scale_mul_1H11"):
            t = math.log(4.0) + 0.3 * torch.randn(shape, generator=g)
        elif key.endswith("bias") or key.endswith("ada_gss") or key.startswith("pos"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif key in ("class_emb.weight", "lvl_embed.weight"):
            t = 0.5 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        state[key] = t
    return state


def element_count(layout: list) -> int:
    return sum(math.prod(s) for k, s in layout if not k.endswith(BUFFERS))


# -- the quantiser's formulas (spec §2) -----------------------------------------------------------


def phi(state: dict, h: torch.Tensor, index: int, ratio: float = 0.5) -> torch.Tensor:
    """(1 − ratio)·h + ratio·conv3×3(h) with φ number `index` (4 shared convolutions)."""
    w = state[f"quantize.quant_resi.qresi_ls.{index}.weight"]
    b = state[f"quantize.quant_resi.qresi_ls.{index}.bias"]
    return (1 - ratio) * h + ratio * F.conv2d(h, w, b, padding=1)


def code_map(state: dict, ids: torch.Tensor, side: int) -> torch.Tensor:
    """Codebook rows of row-major ids (B, side²) as (B, Cv, side, side)."""
    rows = state["quantize.embedding.weight"][ids]  # (B, side², Cv)
    return rows.permute(0, 2, 1).reshape(ids.shape[0], -1, side, side)


def contribution(state: dict, h: torch.Tensor, k: int, patch_nums) -> torch.Tensor:
    """φ_k(bicubic(h) to the last side); no resize at the last scale."""
    last = patch_nums[-1]
    if k < len(patch_nums) - 1:
        h = F.interpolate(h, size=(last, last), mode="bicubic", align_corners=False)
    return phi(state, h, PHI_MAPS[len(patch_nums)][k])


def reference_fhat(state: dict, ids: list, patch_nums) -> torch.Tensor:
    """f̂ = Σ_k φ_k(upsampled codes of scale k)."""
    return sum(
        contribution(state, code_map(state, idx, p), k, patch_nums)
        for k, (idx, p) in enumerate(zip(ids, patch_nums))
    )


def reference_var_input(state: dict, ids: list, patch_nums) -> torch.Tensor:
    """For k < K − 1: f̂ after scale k, area-averaged to p_{k+1}², flattened; concatenated."""
    f_hat, pieces = 0, []
    for k in range(len(patch_nums) - 1):
        f_hat = f_hat + contribution(state, code_map(state, ids[k], patch_nums[k]), k, patch_nums)
        nxt = F.adaptive_avg_pool2d(f_hat, patch_nums[k + 1])
        pieces.append(nxt.flatten(2).transpose(1, 2))
    return torch.cat(pieces, dim=1)


# -- the transformer's forward pass and the official sampler (spec §3) ------------------------


def spans(patch_nums) -> list[tuple[int, int]]:
    ends = [sum(p * p for p in patch_nums[: k + 1]) for k in range(len(patch_nums))]
    return [(e - p * p, e) for e, p in zip(ends, patch_nums)]


def reference_var_logits(s, y, x_in, patch_nums, heads, l2=True, shared=False, eps=1e-6):
    """Teacher-forced logits (B, L, V) with the block-causal mask, no cache."""
    b, c = y.shape[0], s["pos_1LC"].shape[-1]

    def lin(x, p):
        return x @ s[p + "weight"].T + s[p + "bias"]

    def ln(x):
        return F.layer_norm(x, (c,), eps=eps)

    cls = s["class_emb.weight"][y]
    first = s["pos_start"].shape[1]
    x = torch.cat([cls[:, None].expand(b, first, c) + s["pos_start"], lin(x_in, "word_embed.")], 1)
    level = token_levels(patch_nums)
    x = x + s["lvl_embed.weight"][level] + s["pos_1LC"][0]
    visible = level[:, None] >= level[None, :]
    for i in range(sum(k.endswith("mat_qkv.weight") for k in s)):
        p = f"blocks.{i}."
        if shared:
            mod = s[p + "ada_gss"] + lin(F.silu(cls), "shared_ada_lin.1.").view(b, 1, 6, c)
        else:
            mod = lin(F.silu(cls), p + "ada_lin.1.").view(b, 1, 6, c)
        g1, g2, s1, s2, sh1, sh2 = mod.unbind(2)  # VAR's chunk order
        h = ln(x) * (1 + s1) + sh1
        bias = torch.cat([s[p + "attn.q_bias"], torch.zeros(c), s[p + "attn.v_bias"]])
        qkv = (h @ s[p + "attn.mat_qkv.weight"].T + bias).view(b, -1, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if l2:
            temp = s[p + "attn.scale_mul_1H11"].clamp(max=math.log(100)).exp()
            q = q / q.norm(dim=-1, keepdim=True) * temp
            k = k / k.norm(dim=-1, keepdim=True)
            scale = 1.0
        else:
            scale = 0.25 / math.sqrt(c // heads)
        att = (q @ k.transpose(-1, -2) * scale).masked_fill(~visible, -math.inf).softmax(-1)
        out = (att @ v).transpose(1, 2).reshape(b, -1, c)
        x = x + g1 * lin(out, p + "attn.proj.")
        h = ln(x) * (1 + s2) + sh2
        x = x + g2 * lin(F.gelu(lin(h, p + "ffn.fc1."), approximate="tanh"), p + "ffn.fc2.")
    scale, shift = lin(F.silu(cls), "head_nm.ada_lin.1.").view(b, 1, 2, c).unbind(2)
    return lin(ln(x) * (1 + scale) + shift, "head.")


def reenact_var_sampler(s, vae, y, patch_nums, heads, cfg, top_k, top_p, more_smooth):
    """autoregressive_infer_cfg step by step, recomputing every scale without a cache and
    drawing from torch's global RNG: per scale one multinomial (with replacement) over the
    (B·p_k², V) matrix, then, with more_smooth, one exponential draw for the Gumbel noise.
    Returns (ids (B, L), f̂)."""
    b, k_scales = y.shape[0], len(patch_nums)
    null = s["class_emb.weight"].shape[0] - 1
    labels = torch.cat([y, torch.full_like(y, null)])
    codebook = vae["quantize.embedding.weight"]
    cv, bounds = codebook.shape[1], spans(patch_nums)
    x_in = torch.zeros(2 * b, bounds[-1][1] - bounds[0][1], cv)  # later scales: never seen
    f_hat, ids = 0, []
    for k, p in enumerate(patch_nums):
        begin, end = bounds[k]
        logits = reference_var_logits(s, labels, x_in, patch_nums, heads)[:, begin:end]
        ratio = k / (k_scales - 1)
        t = cfg * ratio
        logits = (1 + t) * logits[:b] - t * logits[b:]
        if top_k:
            kth = logits.sort(dim=-1, descending=True).values[..., top_k - 1 : top_k]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if top_p > 0:
            srt, order = logits.sort(dim=-1)
            drop = srt.softmax(-1).cumsum(-1) <= 1 - top_p
            drop[..., -1] = False
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -math.inf)
        probs = logits.softmax(-1).reshape(-1, logits.shape[-1])
        idx = torch.multinomial(probs, 1, replacement=True).view(b, p * p)
        ids.append(idx)
        if more_smooth:
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)
            gumbel = -torch.empty_like(logits).exponential_().log()
            rows = ((logits * (1 + ratio) + gumbel) / tau).softmax(-1) @ codebook
        else:
            rows = codebook[idx]
        f_hat = f_hat + contribution(vae, rows.transpose(1, 2).reshape(b, cv, p, p), k, patch_nums)
        if k < k_scales - 1:
            nb, ne = (i - bounds[0][1] for i in bounds[k + 1])
            nxt = F.adaptive_avg_pool2d(f_hat, patch_nums[k + 1]).flatten(2).transpose(1, 2)
            x_in[:, nb:ne] = torch.cat([nxt, nxt])
    return torch.cat(ids, 1), f_hat
