"""Test helper: the official RAR state-dict layout and forward pass, written from the spec.

Independent of genzoo's modules: keys, shapes and order come from onedtok.md §2 (the four direct
parameters, then the blocks, `embeddings`, `adaln_before_head`, `lm_head`), and the reference
forward pass follows its steps 1–9 directly, slowly, in float64. Used to build random "official"
checkpoints and to check genzoo's RAR against them.
"""

from __future__ import annotations

import math

import torch

# Official constructor fields (model.vq_model.codebook_size, model.generator.*).
TINY = dict(
    codebook_size=16,
    image_seq_len=9,  # a 3×3 token grid
    condition_num_classes=5,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)
# Published sizes with their state-dict element counts (spec table; V=1024, L=256, K=1000).
PUBLISHED = {
    "B": (dict(num_hidden_layers=24, hidden_size=768, intermediate_size=3072), 260_923_648),
    "L": (dict(num_hidden_layers=24, hidden_size=1024, intermediate_size=4096), 461_668_352),
    "XL": (dict(num_hidden_layers=32, hidden_size=1280, intermediate_size=5120), 955_425_024),
    "XXL": (dict(num_hidden_layers=40, hidden_size=1408, intermediate_size=6144), 1_498_520_704),
}
RELEASED = dict(codebook_size=1024, image_seq_len=256, condition_num_classes=1000)


def rar_shapes(
    codebook_size: int,
    image_seq_len: int,
    condition_num_classes: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
) -> list[tuple[str, tuple[int, ...]]]:
    """[(key, shape)] of the official state dict, in its order."""
    V, L, K, D, M = (
        codebook_size,
        image_seq_len,
        condition_num_classes,
        hidden_size,
        intermediate_size,
    )
    hd = D // num_attention_heads
    table = [
        ("cls_token", (1, 1, D)),
        ("pos_embed", (1, L + 1024, D)),
        ("target_aware_pos_embed", (1, L + 1024, D)),
        ("timesteps_embeddings", (1, L + 100, D)),
    ]
    per_block = [
        ("norm1.weight", (D,)),
        ("norm1.bias", (D,)),
        ("attn.qkv.weight", (3 * D, D)),
        ("attn.qkv.bias", (3 * D,)),
        ("attn.q_norm.weight", (hd,)),
        ("attn.q_norm.bias", (hd,)),
        ("attn.k_norm.weight", (hd,)),
        ("attn.k_norm.bias", (hd,)),
        ("attn.proj.weight", (D, D)),
        ("attn.proj.bias", (D,)),
        ("norm2.weight", (D,)),
        ("norm2.bias", (D,)),
        ("mlp.fc1.weight", (M, D)),
        ("mlp.fc1.bias", (M,)),
        ("mlp.fc2.weight", (D, M)),
        ("mlp.fc2.bias", (D,)),
        ("adaLN_modulation.1.weight", (6 * D, D)),
        ("adaLN_modulation.1.bias", (6 * D,)),
    ]
    for i in range(num_hidden_layers):
        table += [(f"blocks.{i}.{k}", s) for k, s in per_block]
    table += [
        ("embeddings.weight", (V + K + 2, D)),
        ("adaln_before_head.adaLN_modulation.1.weight", (2 * D, D)),
        ("adaln_before_head.adaLN_modulation.1.bias", (2 * D,)),
        ("lm_head.weight", (V, D)),
        ("lm_head.bias", (V,)),
    ]
    return table


def random_rar_state_dict(seed: int = 0, **args) -> dict[str, torch.Tensor]:
    """Random float32 tensors in the official layout, scaled so that every part matters:
    norm weights near 1, non-zero modulations, logits of order one."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in rar_shapes(**{**TINY, **args}):
        value = torch.randn(shape, generator=gen)
        if "norm" in key and key.endswith("weight"):
            value = 1 + 0.1 * value
        elif key.endswith("bias"):
            value = 0.05 * value
        elif key == "lm_head.weight":
            value = value * (2.0 / shape[-1] ** 0.5)  # peaked next-token distributions
        elif key.startswith(("blocks.", "adaln_before_head")):
            value = value * (0.5 / shape[-1] ** 0.5)  # roughly unit-scale outputs
        else:
            value = 0.5 * value  # embeddings and position tables
        state[key] = value
    return state


# -- a slow, direct re-computation of the specification's forward pass (float64) ---------------


def _linear(x, W, prefix):
    return x @ W[prefix + ".weight"].T + W[prefix + ".bias"]


def _layer_norm(x, weight=None, bias=None):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + 1e-6)
    return out if weight is None else out * weight + bias


def _silu(x):
    return x * torch.sigmoid(x)


def _attention(h, W, p, heads):
    n, d = h.shape
    hd = d // heads
    q, k, v = _linear(h, W, p + "attn.qkv").split(d, dim=-1)
    outs = []
    for head in range(heads):
        cols = slice(head * hd, (head + 1) * hd)
        qh = _layer_norm(q[:, cols], W[p + "attn.q_norm.weight"], W[p + "attn.q_norm.bias"])
        kh = _layer_norm(k[:, cols], W[p + "attn.k_norm.weight"], W[p + "attn.k_norm.bias"])
        scores = qh @ kh.T / math.sqrt(hd)
        future = torch.ones(n, n, dtype=torch.bool).triu(1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        outs.append(weights @ v[:, cols])
    return _linear(torch.cat(outs, dim=-1), W, p + "attn.proj")


def reference_logits(state, tokens, y, orders=None, args=TINY):
    """Spec §2 steps 1–9, one sample at a time: logits (B, T+1, V) float32."""
    V, L = args["codebook_size"], args["image_seq_len"]
    W = {k: v.double() for k, v in state.items()}
    P, T, S = (W[k][0] for k in ("pos_embed", "target_aware_pos_embed", "timesteps_embeddings"))
    E = W["embeddings.weight"]
    out = []
    for b in range(tokens.shape[0]):
        o = list(range(L)) if orders is None else orders[b].tolist()
        n = tokens.shape[1]
        e_c = E[V + 1 + int(y[b])]  # a raw label K lands on the null row V+1+K
        rows = [W["cls_token"][0, 0] + P[0], e_c + P[1] + T[2 + o[0]]]
        for i in range(n):
            row = E[int(tokens[b, o[i]])] + P[2 + o[i]]
            rows.append(row + T[2 + o[i + 1]] if i + 1 < L else row)
        x, c = torch.stack(rows), e_c + S[: n + 2]
        for i in range(args["num_hidden_layers"]):
            p = f"blocks.{i}."
            chunks = _linear(_silu(c), W, p + "adaLN_modulation.1").chunk(6, dim=-1)
            shift1, scale1, gate1, shift2, scale2, gate2 = chunks
            h = _layer_norm(x, W[p + "norm1.weight"], W[p + "norm1.bias"]) * (1 + scale1) + shift1
            x = x + gate1 * _attention(h, W, p, args["num_attention_heads"])
            h = _layer_norm(x, W[p + "norm2.weight"], W[p + "norm2.bias"]) * (1 + scale2) + shift2
            h = _linear(h, W, p + "mlp.fc1")
            h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
            x = x + gate2 * _linear(h, W, p + "mlp.fc2")
        x, c = x[1:], c[1:]
        scale, shift = _linear(_silu(c), W, "adaln_before_head.adaLN_modulation.1").chunk(2, -1)
        out.append(_linear(_layer_norm(x) * (1 + scale) + shift, W, "lm_head"))
    return torch.stack(out).float()
