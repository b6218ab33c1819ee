"""Test helper: the official 1d-tokenizer layouts of the MaskGIT generators (ImageBert,
UViTBert) and of the MaskGIT VQGAN, and slow float64 forward passes, written from the spec.

Independent of genzoo's modules: keys, shapes and order come from onedtok.md §3 and §6 (and the
HuggingFace BERT key names it lists); the reference computations follow the spec's wording step
by step with plain tensor operations. Used to build random "official" files and to check
genzoo's networks against them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Tiny generators: V codes, L tokens, K classes (V + K + 2 embedding rows).
V, L, K = 16, 9, 5  # L = a 3×3 grid
TINY_VIT = dict(
    model_type="ViT",
    codebook_size=V,
    image_seq_len=L,
    condition_num_classes=K,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
)
TINY_UVIT = dict(TINY_VIT, model_type="UViT", num_hidden_layers=4)
# Released generators (spec table): sizes and state-dict element counts, V = 4096, K = 1000.
PUBLISHED_GENERATORS = {
    "titok-l32": ("ViT", dict(L=32, D=768, depth=24, inner=3072), 177_202_432),
    "titok-b64": ("ViT", dict(L=64, D=768, depth=24, inner=3072), 177_227_008),
    "titok-s128": ("UViT", dict(L=128, D=1024, depth=20, inner=4096), 294_990_848),
}
# The published VQGAN (spec §6) and a tiny one: stride 4, 16 codes of 32 dimensions.
PUBLISHED_VQGAN = dict(
    num_embeddings=1024,
    embedding_dim=256,
    channel_mult=(1, 1, 2, 2, 4),
    hidden_channels=128,
    num_res_blocks=2,
    z_channels=256,
    num_channels=3,
)
TINY_VQGAN = dict(num_embeddings=16, embedding_dim=32, channel_mult=(1, 2, 2),
                  hidden_channels=32, num_res_blocks=1, z_channels=32, num_channels=3)  # fmt: skip


def imagebert_shapes(V, L, K, D, depth, inner) -> list[tuple[str, tuple[int, ...]]]:
    """HuggingFace BertModel (no pooler) keys under `model.`, then `model.lm_head`."""
    out = [
        ("model.embeddings.word_embeddings.weight", (V + K + 2, D)),
        ("model.embeddings.position_embeddings.weight", (L + 1, D)),
        ("model.embeddings.token_type_embeddings.weight", (2, D)),
        ("model.embeddings.LayerNorm.weight", (D,)),
        ("model.embeddings.LayerNorm.bias", (D,)),
    ]
    for i in range(depth):
        p = f"model.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            out += [
                (f"{p}attention.self.{name}.weight", (D, D)),
                (f"{p}attention.self.{name}.bias", (D,)),
            ]
        out += [
            (f"{p}attention.output.dense.weight", (D, D)),
            (f"{p}attention.output.dense.bias", (D,)),
            (f"{p}attention.output.LayerNorm.weight", (D,)),
            (f"{p}attention.output.LayerNorm.bias", (D,)),
            (f"{p}intermediate.dense.weight", (inner, D)),
            (f"{p}intermediate.dense.bias", (inner,)),
            (f"{p}output.dense.weight", (D, inner)),
            (f"{p}output.dense.bias", (D,)),
            (f"{p}output.LayerNorm.weight", (D,)),
            (f"{p}output.LayerNorm.bias", (D,)),
        ]
    return out + [("model.lm_head.weight", (V, D)), ("model.lm_head.bias", (V,))]  # fmt: skip


def _uvit_block(p: str, D: int, inner: int, skip: bool) -> list:
    out = [(f"{p}norm1.weight", (D,)), (f"{p}norm1.bias", (D,)),
           (f"{p}attn.qkv.weight", (3 * D, D)),
           (f"{p}attn.proj.weight", (D, D)), (f"{p}attn.proj.bias", (D,)),
           (f"{p}norm2.weight", (D,)), (f"{p}norm2.bias", (D,)),
           (f"{p}mlp.fc1.weight", (inner, D)), (f"{p}mlp.fc1.bias", (inner,)),
           (f"{p}mlp.fc2.weight", (D, inner)), (f"{p}mlp.fc2.bias", (D,))]  # fmt: skip
    if skip:
        out += [(f"{p}skip_linear.weight", (D, 2 * D)), (f"{p}skip_linear.bias", (D,))]
    return out


def uvitbert_shapes(V, L, K, D, depth, inner) -> list[tuple[str, tuple[int, ...]]]:
    # pos_embed is a direct parameter: state_dict() lists it before every submodule
    out = [("pos_embed", (1, L + 1, D)), ("embeddings.weight", (V + K + 2, D))]
    for i in range(depth // 2):
        out += _uvit_block(f"in_blocks.{i}.", D, inner, skip=False)
    out += _uvit_block("mid_block.", D, inner, skip=False)
    for i in range(depth // 2):
        out += _uvit_block(f"out_blocks.{i}.", D, inner, skip=True)
    out += [("norm.weight", (D,)), ("norm.bias", (D,))]
    return out + [("lm_head.weight", (V, D)), ("lm_head.bias", (V,))]


def generator_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    sizes = dict(V=cfg["codebook_size"], L=cfg["image_seq_len"], K=cfg["condition_num_classes"],
                 D=cfg["hidden_size"], depth=cfg["num_hidden_layers"],
                 inner=cfg["intermediate_size"])  # fmt: skip
    return (imagebert_shapes if cfg["model_type"] == "ViT" else uvitbert_shapes)(**sizes)


def _res_block(p: str, c_in: int, c_out: int) -> list:
    out = [(f"{p}norm1.weight", (c_in,)), (f"{p}norm1.bias", (c_in,)),
           (f"{p}conv1.weight", (c_out, c_in, 3, 3)),
           (f"{p}norm2.weight", (c_out,)), (f"{p}norm2.bias", (c_out,)),
           (f"{p}conv2.weight", (c_out, c_out, 3, 3))]  # fmt: skip
    if c_in != c_out:
        out.append((f"{p}nin_shortcut.weight", (c_out, c_out, 1, 1)))
    return out


def vqgan_shapes(c: dict) -> list[tuple[str, tuple[int, ...]]]:
    hc, mult, nb, z = c["hidden_channels"], c["channel_mult"], c["num_res_blocks"], c["z_channels"]
    top = hc * mult[-1]
    out = [("encoder.conv_in.weight", (hc, c["num_channels"], 3, 3))]
    for i, m in enumerate(mult):
        for j in range(nb):
            c_in = hc * ((1, *mult)[i] if j == 0 else m)
            out += _res_block(f"encoder.down.{i}.block.{j}.", c_in, hc * m)
    for j in range(nb):
        out += _res_block(f"encoder.mid.{j}.", top, top)
    out += [("encoder.norm_out.weight", (top,)), ("encoder.norm_out.bias", (top,)),
            ("encoder.conv_out.weight", (z, top, 1, 1)), ("encoder.conv_out.bias", (z,)),
            ("decoder.conv_in.weight", (top, z, 3, 3)),
            ("decoder.conv_in.bias", (top,))]  # fmt: skip
    for j in range(nb):
        out += _res_block(f"decoder.mid.{j}.", top, top)
    for i, m in enumerate(mult):
        above = hc * (mult[i + 1] if i + 1 < len(mult) else mult[-1])
        for j in range(nb):
            out += _res_block(f"decoder.up.{i}.block.{j}.", above if j == 0 else hc * m, hc * m)
        if i:
            out += [(f"decoder.up.{i}.upsample_conv.weight", (hc * m, hc * m, 3, 3)),
                    (f"decoder.up.{i}.upsample_conv.bias", (hc * m,))]  # fmt: skip
    base = hc * mult[0]
    out += [("decoder.norm_out.weight", (base,)), ("decoder.norm_out.bias", (base,)),
            ("decoder.conv_out.weight", (c["num_channels"], base, 3, 3)),
            ("decoder.conv_out.bias", (c["num_channels"],))]  # fmt: skip
    return out + [("quantize.embedding.weight", (c["num_embeddings"], c["embedding_dim"]))]


def random_state(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 tensors: norm weights near 1, other vectors small, matrices and kernels
    scaled by 1/√fan_in so activations stay of order one."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes:
        x = torch.randn(shape, generator=g)
        is_norm = "norm" in key.lower() and len(shape) == 1
        if is_norm and key.endswith("weight"):
            x = 1 + 0.1 * x
        elif len(shape) == 1:
            x = 0.1 * x
        elif "embedding" in key or key == "pos_embed":
            x = 0.5 * x
        else:
            x = x / math.sqrt(math.prod(shape[1:]))
        state[key] = x
    return state


# -- reference computations (float64) --------------------------------------------------------------


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _attention(q, k, v, heads):
    b, t, d = q.shape
    split = [z.reshape(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v)]
    scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads)
    return (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(b, t, d)


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def reference_logits(state, cfg: dict, tokens, y) -> torch.Tensor:
    """(B, L, V) float64: the spec's forward of [class id, tokens]; y == K is the null class."""
    s = {k: v.double() for k, v in state.items()}
    V_, heads = cfg["codebook_size"], cfg["num_attention_heads"]
    ids = torch.cat([(y + V_ + 1)[:, None], tokens], dim=1)
    lin = lambda x, p: x @ s[p + ".weight"].T + s.get(p + ".bias", 0)  # noqa: E731
    if cfg["model_type"] == "ViT":
        e = "model.embeddings."
        x = (
            s[e + "word_embeddings.weight"][ids]
            + s[e + "position_embeddings.weight"][: ids.shape[1]]
        )
        x = _ln(x + s[e + "token_type_embeddings.weight"][0], s[e + "LayerNorm.weight"],
                s[e + "LayerNorm.bias"], 1e-12)  # fmt: skip
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.encoder.layer.{i}."
            att = _attention(*(lin(x, f"{p}attention.self.{n}") for n in ("query", "key", "value")),
                             heads)  # fmt: skip
            a = _ln(lin(att, f"{p}attention.output.dense") + x,
                    s[f"{p}attention.output.LayerNorm.weight"],
                    s[f"{p}attention.output.LayerNorm.bias"], 1e-12)  # fmt: skip
            h = _gelu(lin(a, f"{p}intermediate.dense"))
            x = _ln(lin(h, f"{p}output.dense") + a, s[f"{p}output.LayerNorm.weight"],
                    s[f"{p}output.LayerNorm.bias"], 1e-12)  # fmt: skip
        return lin(x[:, 1:], "model.lm_head")

    def block(x, p, skip=None):
        if skip is not None:  # [current, skip], current first
            x = lin(torch.cat([x, skip], dim=-1), p + "skip_linear")
        n1 = _ln(x, s[p + "norm1.weight"], s[p + "norm1.bias"], 1e-5)
        q, k, v = lin(n1, p + "attn.qkv").chunk(3, dim=-1)
        x = x + lin(_attention(q, k, v, heads), p + "attn.proj")
        n2 = _ln(x, s[p + "norm2.weight"], s[p + "norm2.bias"], 1e-5)
        return x + lin(_gelu(lin(n2, p + "mlp.fc1")), p + "mlp.fc2")

    x = s["embeddings.weight"][ids] + s["pos_embed"][0, : ids.shape[1]]
    half, skips = cfg["num_hidden_layers"] // 2, []
    for i in range(half):
        x = block(x, f"in_blocks.{i}.")
        skips.append(x)
    x = block(x, "mid_block.")
    for i in range(half):
        x = block(x, f"out_blocks.{i}.", skips.pop())  # last in, first out
    x = _ln(x, s["norm.weight"], s["norm.bias"], 1e-5)
    return lin(x[:, 1:], "lm_head")


def _group_norm(x, w, b):
    n, c, h, wd = x.shape
    g = x.reshape(n, 32, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + 1e-6)
    return g.reshape(n, c, h, wd) * w[:, None, None] + b[:, None, None]


def _conv(x, s, p):
    w = s[p + ".weight"]
    return F.conv2d(x, w, s.get(p + ".bias"), padding=w.shape[-1] // 2)  # "same", stride 1


def _res(x, s, p):
    h = _conv(F.silu(_group_norm(x, s[p + "norm1.weight"], s[p + "norm1.bias"])), s, p + "conv1")
    h = _conv(F.silu(_group_norm(h, s[p + "norm2.weight"], s[p + "norm2.bias"])), s, p + "conv2")
    if p + "nin_shortcut.weight" in s:  # the shortcut maps the branch output
        return h + _conv(h, s, p + "nin_shortcut")
    return h + x


def _blocks(x, s, prefix):
    j = 0
    while f"{prefix}{j}.norm1.weight" in s:
        x = _res(x, s, f"{prefix}{j}.")
        j += 1
    return x


def reference_encode(state, c: dict, x01):
    """Encoder output z (B, z, h, w) and squared distances (B, h·w, codes), float64; x01 in
    [0, 1]."""
    s = {k: v.double() for k, v in state.items()}
    levels = len(c["channel_mult"])
    h = _conv(x01.double(), s, "encoder.conv_in")
    for i in range(levels):
        h = _blocks(h, s, f"encoder.down.{i}.block.")
        if i < levels - 1:
            n, ch, hh, ww = h.shape
            h = h.reshape(n, ch, hh // 2, 2, ww // 2, 2).mean(dim=(3, 5))  # 2×2 average
    h = _blocks(h, s, "encoder.mid.")
    h = F.silu(_group_norm(h, s["encoder.norm_out.weight"], s["encoder.norm_out.bias"]))
    z = _conv(h, s, "encoder.conv_out")
    flat = z.flatten(2).transpose(1, 2)  # (B, h·w, C), row-major positions
    codes = s["quantize.embedding.weight"]
    return z, ((flat[:, :, None, :] - codes[None, None]) ** 2).sum(-1)


def reference_decode(state, c: dict, ids):
    """The decoder's raw output (not clamped) for ids (B, h, w), float64."""
    s = {k: v.double() for k, v in state.items()}
    h = s["quantize.embedding.weight"][ids].permute(0, 3, 1, 2)
    h = _blocks(_conv(h, s, "decoder.conv_in"), s, "decoder.mid.")
    for i in reversed(range(len(c["channel_mult"]))):  # lowest resolution first
        h = _blocks(h, s, f"decoder.up.{i}.block.")
        if i:
            h = _conv(h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), s,
                      f"decoder.up.{i}.upsample_conv")  # fmt: skip
    h = F.silu(_group_norm(h, s["decoder.norm_out.weight"], s["decoder.norm_out.bias"]))
    return _conv(h, s, "decoder.conv_out")
