"""LlamaGen's class-conditional GPT (Sun et al. 2024, "Autoregressive Model Beats Diffusion").

A Llama-style decoder over image token ids: [class token] + image tokens in raster order,
position j predicting image token j; pre-norm blocks with RMSNorm, a bias-free SwiGLU MLP and
bias-free attention with 2-D RoPE, no absolute positions. The state dict has the official keys,
order and shapes (released weights load strictly: genzoo.zoo.llamagen); numerics are official.

Two details decide whether official logits are reproduced (see rope_2d_table): the 2-D RoPE
pairs adjacent channels, first half of the pairs by row, second by column; and the class token's
entry is cos = sin = 0, not the identity, so its q and k vanish (its key scores 0 against every
query, its value still counts).

`qk_norm=True` (per-head RMSNorm on q and k before RoPE) is a genzoo addition; off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.embeddings import LabelEmbedder
from genzoo.nn.kv_cache import KVCache, causal_mask_from
from genzoo.nn.norms import RMSNorm
from genzoo.nn.rope import rotate_pairs


@dataclass
class GPTConfig:
    """The official `ModelArgs` (same names and defaults) plus `qk_norm`."""

    dim: int = 4096
    n_layer: int = 32
    n_head: int = 32
    n_kv_head: int | None = None  # None = n_head (no grouped-query attention)
    multiple_of: int = 256  # the SwiGLU width is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout_p: float = 0.1
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    drop_path_rate: float = 0.0
    num_classes: int = 1000
    caption_dim: int = 2048  # text-to-image only; unused by the class-conditional model
    class_dropout_prob: float = 0.1
    model_type: str = "c2i"  # only class-to-image is supported
    vocab_size: int = 16384
    cls_token_num: int = 1
    block_size: int = 256  # image tokens per sample, a square grid
    max_batch_size: int = 32  # official bookkeeping; caches are sized by setup_cache
    max_seq_len: int = 2048
    qk_norm: bool = False


# Published class-conditional sizes (the official presets set only these three fields).
LLAMAGEN_SIZES: dict[str, dict[str, int]] = {
    "B": {"n_layer": 12, "n_head": 12, "dim": 768},
    "L": {"n_layer": 24, "n_head": 16, "dim": 1024},
    "XL": {"n_layer": 36, "n_head": 20, "dim": 1280},
    "XXL": {"n_layer": 48, "n_head": 24, "dim": 1536},
    "3B": {"n_layer": 24, "n_head": 32, "dim": 3200},
}


POSITIVE = ("dim", "n_layer", "n_head", "multiple_of", "vocab_size", "block_size", "num_classes")
RATES = ("token_dropout_p", "attn_dropout_p", "resid_dropout_p", "ffn_dropout_p", "drop_path_rate")


def swiglu_hidden(cfg: GPTConfig) -> int:
    """int(2·4D/3), times ffn_dim_multiplier if set, rounded up to a multiple of multiple_of."""
    hidden = int(2 * (4 * cfg.dim) / 3)
    if cfg.ffn_dim_multiplier is not None:
        hidden = int(cfg.ffn_dim_multiplier * hidden)
    return -(-hidden // cfg.multiple_of) * cfg.multiple_of


def check_gpt_config(cfg: GPTConfig) -> None:
    """Raise GenzooError naming the first field that cannot build a LlamaGen GPT."""
    if cfg.model_type != "c2i" or cfg.cls_token_num != 1:
        raise GenzooError(
            f"model.model_type={cfg.model_type!r}, cls_token_num={cfg.cls_token_num}: only the "
            "class-to-image GPT ('c2i', with exactly one class token) is built"
        )
    for name in POSITIVE:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {value!r}")
    for name in (*RATES, "class_dropout_prob"):
        if not 0 <= getattr(cfg, name) < 1:
            raise GenzooError(f"model.{name} must lie in [0, 1), got {getattr(cfg, name)}")
    kv = cfg.n_head if cfg.n_kv_head is None else cfg.n_kv_head
    head_dim = cfg.dim // cfg.n_head
    if cfg.dim % cfg.n_head or kv < 1 or cfg.n_head % kv or head_dim % 4:
        raise GenzooError(
            f"model.dim={cfg.dim}, n_head={cfg.n_head}, n_kv_head={cfg.n_kv_head}: n_head must "
            "divide dim with a head dimension divisible by 4 (for the 2-D RoPE), and n_kv_head "
            "(None = n_head) must divide n_head"
        )
    if math.isqrt(cfg.block_size) ** 2 != cfg.block_size:
        raise GenzooError(
            f"model.block_size={cfg.block_size} is not a square number of image tokens; the "
            "2-D RoPE needs a G×G token grid (e.g. 256 for 16×16)"
        )
    if cfg.ffn_dim_multiplier is not None and cfg.ffn_dim_multiplier <= 0:
        raise GenzooError(f"model.ffn_dim_multiplier must be > 0, got {cfg.ffn_dim_multiplier}")


def check_ids(ids: Tensor, what: str, top: int, shape: tuple[int, ...], hint: str) -> None:
    """GenzooError unless `ids` is an integer tensor of `shape` (-1: any) with values < top."""
    fits = ids.ndim == len(shape) and all(n in (-1, m) for n, m in zip(shape, ids.shape))
    if not fits or ids.dtype not in (torch.int64, torch.int32):
        raise GenzooError(
            f"{what} must be an integer tensor of shape {shape} (-1: any size), got "
            f"{tuple(ids.shape)} {ids.dtype}"
        )
    if ids.numel() and bool(((ids < 0) | (ids >= top)).any()):
        raise GenzooError(
            f"{what} hold values from {int(ids.min())} to {int(ids.max())}, outside [0, {top}); "
            + hint
        )


def rope_2d_table(grid_size: int, head_dim: int, base: float, prefix: int) -> tuple[Tensor, Tensor]:
    """cos and sin tables (prefix + G², head_dim), one angle per channel pair repeated for both
    channels. Row `prefix + n` belongs to image token n (row n // G, column n % G); the prefix
    rows are all zero (cos and sin), so prefix q and k vanish. Float32, official operation order.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    per_axis = torch.outer(torch.arange(grid_size).float(), freqs)  # (G, d/4)
    rows = per_axis[:, None, :].expand(-1, grid_size, -1)  # first half of the pairs: the row
    cols = per_axis[None, :, :].expand(grid_size, -1, -1)  # second half: the column
    angles = torch.cat([rows, cols], dim=-1).flatten(0, 1)  # (G², d/2)
    zeros = torch.zeros(prefix, half)
    cos = torch.cat([zeros, torch.cos(angles)]).repeat_interleave(2, dim=-1)
    sin = torch.cat([zeros, torch.sin(angles)]).repeat_interleave(2, dim=-1)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each adjacent pair (a, b) of x (B, H, T, d) to (a cos − b sin, b cos + a sin),
    in float32; cos/sin broadcast to (B, 1, T, d)."""
    x32 = x.float()
    return (x32 * cos + rotate_pairs(x32) * sin).type_as(x)


class FeedForward(nn.Module):
    """SwiGLU without biases: w2(SiLU(w1 x) ⊙ w3 x) (the official key layout w1, w3, w2)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        hidden = swiglu_hidden(cfg)
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)
        self.ffn_dropout = nn.Dropout(cfg.ffn_dropout_p)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Attention(nn.Module):
    """Causal self-attention: one bias-free wqkv giving q (D), k and v (H_kv·d each), 2-D RoPE
    on q and k, SDPA with scale d^-½, then wo. k/v heads are repeat-interleaved for H_kv < H."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_kv_head = cfg.n_head if cfg.n_kv_head is None else cfg.n_kv_head
        self.head_dim = cfg.dim // cfg.n_head
        self.dim = cfg.dim
        total = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.wqkv = nn.Linear(cfg.dim, total, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.attn_dropout_p = cfg.attn_dropout_p
        self.resid_dropout = nn.Dropout(cfg.resid_dropout_p)
        self.kv_cache: KVCache | None = None  # set by GPT.setup_cache while decoding

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, start: int | None = None) -> Tensor:
        batch, length, _ = x.shape
        kv_size = self.n_kv_head * self.head_dim
        q, k, v = (  # each (B, heads, T, d)
            t.view(batch, length, -1, self.head_dim).transpose(1, 2)
            for t in self.wqkv(x).split([self.dim, kv_size, kv_size], dim=-1)
        )
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask, causal = None, True
        if start is not None:  # as LlamaGen: attend over the whole zero-padded cache, masked
            self.kv_cache.update(start, k, v)
            k, v = self.kv_cache.k_cache, self.kv_cache.v_cache
            keys = causal_mask_from(start, length, x.device, keys=k.shape[2])
            mask, causal = keys.repeat(batch, 1, 1, 1), False
        if self.n_kv_head < self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        p = self.attn_dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, mask, p, is_causal=causal)
        out = out.transpose(1, 2).contiguous().view(batch, length, self.dim)
        return self.resid_dropout(self.wo(out))


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: in training, drop a sample's residual branch with probability p."""
    if p == 0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep.div_(1 - p)


class TransformerBlock(nn.Module):
    """h = x + Attn(RMSNorm(x)); out = h + FFN(RMSNorm(h))."""

    def __init__(self, cfg: GPTConfig, drop_path: float):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.drop_path_rate = drop_path

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, start: int | None = None) -> Tensor:
        attended = self.attention(self.attention_norm(x), cos, sin, start)
        h = x + drop_path(attended, self.drop_path_rate, self.training)
        return h + drop_path(
            self.feed_forward(self.ffn_norm(h)), self.drop_path_rate, self.training
        )


class GPT(nn.Module):
    """forward(tokens (B, T) long, y (B,) long, orders=None) -> float32 logits (B, T, V).

    Row i is the distribution of image token i given the class and tokens[:, :i]; the last
    input token is not used. `y == num_classes` is the null class. With `orders` (B, T), the
    tokens are given in that order (tokens[b, i] sits at raster position orders[b, i]) and each
    is rotated by its own grid position. In training mode (and with `drop_labels_in_forward`)
    labels are dropped to the null class with probability class_dropout_prob from the global
    RNG, as the official code does.

    Decoding: setup_cache(...), then decode(None, y, 0) for the class token and
    decode(tokens, None, start) for image tokens at positions start… (image token n sits at
    position 1 + n); clear_cache() when done.
    """

    Config = GPTConfig

    @staticmethod
    def resolve(cfg: GPTConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Fill vocab_size, block_size (h·w image tokens) and num_classes from the run."""
        h, w = tokenizer.latent_shape(res)[-2:]
        if getattr(tokenizer, "vocab_size", None) is None or h != w:
            raise GenzooError(
                f"model.kind=gpt generates a square grid of token ids; tokenizer "
                f"{getattr(tokenizer, 'spec', '?')} gives {h}×{w} latents and vocab_size="
                f"{getattr(tokenizer, 'vocab_size', None)}. Use a discrete (VQ) tokenizer"
            )
        cfg.vocab_size, cfg.block_size, cfg.num_classes = tokenizer.vocab_size, h * w, num_classes

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        check_gpt_config(cfg)
        self.cfg = cfg
        self.block_size, self.grid_size = cfg.block_size, math.isqrt(cfg.block_size)
        self.prefix_len = cfg.cls_token_num  # sequence positions before image token 0
        # the null-class label, or None when the class table has no null row
        self.null_label = cfg.num_classes if cfg.class_dropout_prob > 0 else None
        self.cls_embedding = LabelEmbedder(cfg.num_classes, cfg.dim, cfg.class_dropout_prob)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.tok_dropout = nn.Dropout(cfg.token_dropout_p)
        rates = [cfg.drop_path_rate * i / max(cfg.n_layer - 1, 1) for i in range(cfg.n_layer)]
        self.layers = nn.ModuleList(TransformerBlock(cfg, rate) for rate in rates)
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self._build_rope_tables()
        # genzoo's trainer drops labels itself (from its seeded generators) and turns this off.
        self.drop_labels_in_forward = True
        self.initialize_weights()

    def _build_rope_tables(self) -> None:
        """Build the fixed RoPE tables: plain float32 CPU attributes (moved to the input's
        device on use), not buffers, as in the official code, so that casting the model to
        bf16 keeps the rotation in float32 and a model built on the meta device has them."""
        head_dim = self.cfg.dim // self.cfg.n_head
        with torch.device("cpu"):
            tables = rope_2d_table(self.grid_size, head_dim, self.cfg.rope_base, self.prefix_len)
        self._rope_tables = tables

    def rope_tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The (prefix + block_size, head_dim) cos and sin tables on `device`."""
        cos, sin = self._rope_tables
        if cos.device != device:
            cos, sin = self._rope_tables = (cos.to(device), sin.to(device))
        return cos, sin

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The official init: normal(0, initializer_range) for every linear and embedding
        (class table included), then a zero output layer."""
        if self.output.weight.is_meta:  # shapes only (loading): nothing to initialise
            return
        std = self.cfg.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
        nn.init.zeros_(self.output.weight)

    def _check_tokens(self, tokens: Tensor, batch: int = -1) -> None:
        hint = "not ids of this model's vocabulary; pass ids of the tokenizer it was built for"
        check_ids(tokens, "tokens", self.cfg.vocab_size, (batch, -1), hint)

    def _check_labels(self, y: Tensor, batch: int) -> None:
        top = self.cfg.num_classes + (1 if self.null_label is not None else 0)
        null = f"{self.null_label} is the null class" if self.null_label is not None else "no null"
        hint = f"this model has {self.cfg.num_classes} classes ({null})"
        check_ids(y, "labels y", top, (batch,), hint)

    def _positions(self, length: int, orders: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
        """cos/sin for the `length` input positions, shaped to broadcast over (B, H, T, d)."""
        cos, sin = self.rope_tables(self.tok_embeddings.weight.device)
        if orders is None:
            return cos[None, None, :length], sin[None, None, :length]
        check_ids(orders, "orders", self.cfg.block_size, (batch, length), "raster positions")
        # the class token keeps its zero entry; input token i sits at grid position orders[i]
        rows = torch.cat([orders[:, :1] * 0, self.prefix_len + orders[:, : length - 1]], dim=1)
        return cos[rows][:, None], sin[rows][:, None]

    def forward(self, tokens: Tensor, y: Tensor, orders: Tensor | None = None) -> Tensor:
        self._check_tokens(tokens)
        batch, length = tokens.shape
        if not 1 <= length <= self.cfg.block_size:
            raise GenzooError(
                f"tokens have length {length}; this model takes 1 to block_size="
                f"{self.cfg.block_size} image tokens"
            )
        self._check_labels(y, batch)
        drop = self.training and self.drop_labels_in_forward
        cond = self.cls_embedding(y, train=drop)[:, None]
        x = torch.cat([cond, self.tok_embeddings(tokens[:, :-1])], dim=1)
        x = self.tok_dropout(x)
        cos, sin = self._positions(length, orders, batch)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.output(self.norm(x)).float()

    # -- cached decoding ------------------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None):
        """A KV cache per layer for `batch_size` sequences of `max_len` positions (default all)."""
        limit = self.prefix_len + self.cfg.block_size
        max_len = limit if max_len is None else int(max_len)
        if max_len > limit:
            raise GenzooError(
                f"setup_cache(max_len={max_len}): this model has only {limit} positions (class "
                f"token + block_size={self.cfg.block_size} image tokens)"
            )
        device = self.output.weight.device if device is None else device
        dtype = self.tok_embeddings.weight.dtype if dtype is None else dtype
        for layer in self.layers:
            shape = (batch_size, max_len, layer.attention.n_kv_head, layer.attention.head_dim)
            layer.attention.kv_cache = KVCache(*shape, device=device, dtype=dtype, pad_to=8)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None

    def decode(self, tokens: Tensor | None, y: Tensor | None, start: int) -> Tensor:
        """Feed positions start … start+t−1 (the class token when y is given, at start 0, then
        `tokens` (B, t)) through the cache; float32 logits (B, V) of the next image token."""
        cache = self.layers[0].attention.kv_cache
        if cache is None:
            raise GenzooError("decode() needs a KV cache: call setup_cache(batch_size) first")
        if tokens is None and y is None:
            raise GenzooError("decode() needs tokens, labels y, or both")
        parts = []
        if y is not None:
            if start != 0:
                raise GenzooError(f"the class token sits at position 0; got start={start}")
            self._check_labels(y, -1 if tokens is None else tokens.shape[0])
            parts.append(self.cls_embedding(y, train=False)[:, None])
        if tokens is not None:
            self._check_tokens(tokens)
            parts.append(self.tok_embeddings(tokens))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        length = x.shape[1]
        cache.check_span(start, length)
        cos, sin = self.rope_tables(x.device)
        cos, sin = cos[None, None, start : start + length], sin[None, None, start : start + length]
        for layer in self.layers:
            x = layer(x, cos, sin, start=start)
        return self.output(self.norm(x)).float()[:, -1]
