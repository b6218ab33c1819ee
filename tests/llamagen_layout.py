"""For the tests: the official LlamaGen GPT layout and forward pass, written from the specification.

Independent of genzoo's modules: keys and shapes come from the key table (llamagen.md §3), the
reference forward from §4 (float64, complex-number RoPE with explicitly computed angles, the
attention softmax written out), and the reference sampler from §5 (the official loop's
structure, run without a KV cache). Used to build random "official" checkpoints and to check
genzoo's numbers against them.
"""

from __future__ import annotations

import functools
import math

import torch

OFFICIAL_DEFAULTS = dict(
    dim=4096,
    n_layer=32,
    n_head=32,
    n_kv_head=None,
    multiple_of=256,
    ffn_dim_multiplier=None,
    rope_base=10000,
    norm_eps=1e-5,
    num_classes=1000,
    class_dropout_prob=0.1,
    vocab_size=16384,
    cls_token_num=1,
    block_size=256,
)
# The published table of §2: (L, H, D, SwiGLU hidden, parameter count for V = 16384, K = 1000).
PUBLISHED = {
    "B": (12, 12, 768, 2048, 110_888_448),
    "L": (24, 16, 1024, 2816, 342_910_976),
    "XL": (36, 20, 1280, 3584, 774_699_520),
    "XXL": (48, 24, 1536, 4096, 1_410_972_672),
    "3B": (24, 32, 3200, 8704, 3_096_659_200),
}
# The tiny model of §3: dim 64, 2 layers, 4 heads, multiple_of 32, V 64, N 36, K 10.
TINY = dict(
    dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, block_size=36, num_classes=10
)


def hidden_width(dim: int, multiple_of: int, ffn_dim_multiplier=None) -> int:
    """§2: integer part of 2·4D/3 (times the multiplier), rounded up to a multiple."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return math.ceil(hidden / multiple_of) * multiple_of


def official_shapes(**args) -> list[tuple[str, tuple[int, ...]]]:
    """[(key, shape)] in the official order (§3)."""
    a = {**OFFICIAL_DEFAULTS, **args}
    D, H, V, K = a["dim"], a["n_head"], a["vocab_size"], a["num_classes"]
    kv = a["n_kv_head"] or H
    d = D // H
    hidden = hidden_width(D, a["multiple_of"], a["ffn_dim_multiplier"])
    rows = K + 1 if a["class_dropout_prob"] > 0 else K
    table = [("cls_embedding.embedding_table.weight", (rows, D)), ("tok_embeddings.weight", (V, D))]
    for i in range(a["n_layer"]):
        p = f"layers.{i}."
        table += [
            (p + "attention.wqkv.weight", ((H + 2 * kv) * d, D)),
            (p + "attention.wo.weight", (D, D)),
            (p + "feed_forward.w1.weight", (hidden, D)),
            (p + "feed_forward.w3.weight", (hidden, D)),
            (p + "feed_forward.w2.weight", (D, hidden)),
            (p + "attention_norm.weight", (D,)),
            (p + "ffn_norm.weight", (D,)),
        ]
    table += [("norm.weight", (D,)), ("output.weight", (V, D))]
    return table


def random_official_state_dict(seed: int = 0, **args) -> dict[str, torch.Tensor]:
    """Random float32 weights with the official keys and shapes; matrices scaled so that the
    logits are O(1) and attention is far from uniform."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(**args):
        if len(shape) == 1:  # RMSNorm scales
            state[key] = 1 + 0.2 * torch.randn(shape, generator=g)
        elif "embedding" in key:
            state[key] = torch.randn(shape, generator=g)
        else:
            state[key] = torch.randn(shape, generator=g) * (1.5 / math.sqrt(shape[1]))
    return state


# A few characteristic keys of each official layout (from the specifications), for guess_kind.
KIND_KEYS = {
    "dit": "pos_embed x_embedder.proj.weight t_embedder.mlp.0.weight "
    "y_embedder.embedding_table.weight",
    "llamagen": "cls_embedding.embedding_table.weight tok_embeddings.weight "
    "layers.0.attention.wqkv.weight",
    "llamagen-vq": "encoder.conv_in.weight encoder.conv_blocks.0.res.0.conv1.weight "
    "quantize.embedding.weight",
    "rar": "cls_token pos_embed target_aware_pos_embed timesteps_embeddings embeddings.weight "
    "lm_head.weight",
    "var": "pos_start pos_1LC lvl_1L word_embed.weight class_emb.weight lvl_embed.weight "
    "head.weight",
    "var-vqvae": "encoder.down.0.block.0.conv1.weight quantize.ema_vocab_hit_SV "
    "quantize.quant_resi.qresi_ls.0.weight",
    "maskgit": "model.embeddings.word_embeddings.weight model.lm_head.weight",
    "maskgit-vqgan": "encoder.down.0.block.0.conv1.weight decoder.up.1.upsample_conv.weight "
    "quantize.embedding.weight",
    "mar": "fake_latent encoder_pos_embed_learned z_proj.weight diffloss.net.input_proj.weight",
    "mar-kl16": "encoder.conv_in.weight encoder.down.4.attn.0.q.weight quant_conv.weight "
    "decoder.up.0.block.0.conv1.weight",
    "biggan": "shared.weight linear.weight blocks.0.0.conv1.weight output_layer.2.weight",
    "biggan-deep": "embeddings.weight generator.gen_z.weight generator.layers.0.conv_0.weight",
    "biggan-discriminator": "blocks.0.0.conv1.weight blocks.0.0.conv1.u0 linear.weight "
    "embed.weight embed.u0",
    "llamagen-t2i": "cls_embedding.cap_proj.fc1.weight tok_embeddings.weight "
    "layers.0.attention.wqkv.weight",
    "uvit": "pos_embed patch_embed.proj.weight label_emb.weight in_blocks.0.attn.qkv.weight "
    "mid_block.norm1.weight decoder_pred.weight",
    "adm": "time_embed.0.weight label_emb.weight input_blocks.0.0.weight "
    "middle_block.0.in_layers.0.weight output_blocks.0.0.in_layers.0.weight out.2.weight",
    "adm-classifier": "time_embed.0.weight input_blocks.0.0.weight "
    "middle_block.0.in_layers.0.weight out.2.c_proj.weight",
}


# -- §4: the forward pass, directly ---------------------------------------------------------------


def rope_angle(position: int, pair: int, head_dim: int, grid: int, base: float) -> float | None:
    """The rotation angle of channel pair `pair` at sequence position `position` (0 = class
    token, which has no rotation entry: None), from §4's formula."""
    if position == 0:
        return None
    n = position - 1
    row, col = n // grid, n % grid
    quarter = head_dim // 4
    k = pair if pair < quarter else pair - quarter
    f_k = base ** (-2 * k / (head_dim / 2))
    return (row if pair < quarter else col) * f_k


@functools.cache
def rotation_factors(T: int, d: int, grid: int, base: float) -> torch.Tensor:
    """(T, d/2) complex e^{iθ} per position and pair; 0 for the class position."""
    factors = [
        [0j if (t := rope_angle(p, j, d, grid, base)) is None else complex(math.cos(t), math.sin(t))
         for j in range(d // 2)]
        for p in range(T)
    ]  # fmt: skip
    return torch.tensor(factors, dtype=torch.complex128)


def rotate(x: torch.Tensor, grid: int, base: float) -> torch.Tensor:
    """x (B, heads, T, d) float64: adjacent pairs as complex numbers times e^{iθ}; the class
    position is multiplied by 0 (cos = sin = 0)."""
    T, d = x.shape[2], x.shape[3]
    factors = rotation_factors(T, d, grid, base)
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * factors).reshape(x.shape)


def reference_logits(state: dict, tokens: torch.Tensor, y: torch.Tensor, **args) -> torch.Tensor:
    """Teacher-forced logits (B, T, V) in float64: [class token] + tokens[:, :T−1] through the
    pre-norm blocks; position j predicts image token j."""
    a = {**OFFICIAL_DEFAULTS, **args}
    W = {k: v.double() for k, v in state.items()}
    D, H, eps = a["dim"], a["n_head"], a["norm_eps"]
    kv = a["n_kv_head"] or H
    d, grid = D // H, math.isqrt(a["block_size"])
    B, T = tokens.shape

    def rmsnorm(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    x = torch.cat(
        [
            W["cls_embedding.embedding_table.weight"][y][:, None],
            W["tok_embeddings.weight"][tokens[:, : T - 1]],
        ],
        dim=1,
    )
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(a["n_layer"]):
        p = f"layers.{i}."
        h = rmsnorm(x, W[p + "attention_norm.weight"])
        qkv = h @ W[p + "attention.wqkv.weight"].T
        q = qkv[..., :D].reshape(B, T, H, d).transpose(1, 2)
        k = qkv[..., D : D + kv * d].reshape(B, T, kv, d).transpose(1, 2)
        v = qkv[..., D + kv * d :].reshape(B, T, kv, d).transpose(1, 2)
        q, k = rotate(q, grid, a["rope_base"]), rotate(k, grid, a["rope_base"])
        group = H // kv  # query head h reads key/value head h // group
        k, v = k[:, [h // group for h in range(H)]], v[:, [h // group for h in range(H)]]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        weights = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(B, T, D)
        x = x + attended @ W[p + "attention.wo.weight"].T
        h = rmsnorm(x, W[p + "ffn_norm.weight"])
        gate = torch.nn.functional.silu(h @ W[p + "feed_forward.w1.weight"].T)
        x = x + (gate * (h @ W[p + "feed_forward.w3.weight"].T)) @ W[p + "feed_forward.w2.weight"].T
    return rmsnorm(x, W["norm.weight"]) @ W["output.weight"].T


# -- §5: the official sampling loop, without a cache ----------------------------------------------


def reference_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float):
    """logits / max(T, 1e-5) → top-k (ties kept) → top-p (first crossing token kept) → softmax."""
    logits = logits / max(temperature, 1e-5)
    if top_k > 0 or top_p < 1.0:
        logits = logits.clone()
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1, None]
            logits[logits < kth] = -float("inf")
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cum = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
            remove = cum > top_p
            remove[..., 1:] = remove[..., :-1].clone()
            remove[..., 0] = False
            logits[remove.scatter(1, order, remove)] = -float("inf")
    return torch.softmax(logits, dim=-1)


def reference_sample(model, y, *, null, n_tokens, cfg, cfg_interval, temperature, top_k, top_p):
    """The official `generate`: prefill on the class token, then N−1 decode steps, one
    `torch.multinomial` per step on the real batch. `model(tokens, y)` gives teacher-forced
    logits; the logits of step s are row s of the input [sampled so far, any token]."""
    guided = cfg > 1.0
    labels = torch.cat([y, torch.full_like(y, null)]) if guided else y
    n = y.shape[0]
    seq = torch.zeros(n, 0, dtype=torch.long)

    def step_logits(flag: bool) -> torch.Tensor:
        inputs = torch.cat([seq, torch.zeros(n, 1, dtype=torch.long)], dim=1)
        if guided:
            out = model(torch.cat([inputs, inputs]), labels)[:, -1]
            cond, uncond = out[:n], out[n:]
            return uncond + (cond - uncond) * cfg if flag else cond
        return model(inputs, labels)[:, -1]

    def draw(logits: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(reference_probs(logits, temperature, top_k, top_p), 1)

    with torch.no_grad():
        seq = torch.cat([seq, draw(step_logits(True))], dim=1)  # prefill: always guided
        cfg_flag = True
        for i in range(n_tokens - 1):
            if cfg_interval > -1 and i > cfg_interval:
                cfg_flag = False
            seq = torch.cat([seq, draw(step_logits(cfg_flag))], dim=1)
    return seq
