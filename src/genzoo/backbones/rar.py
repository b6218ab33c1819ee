"""RAR: randomized autoregressive visual generation (Yu et al. 2024, arXiv 2411.00776).

A causal transformer over [cls, class, image tokens] in the official layout: released
checkpoints (`rar_{b,l,xl,xxl}.bin`) load strictly without renaming.

* Training sees the tokens in a random permutation with probability r (annealed 1 → 0 by the
  family); sampling uses raster order. Each token carries the position row of its own raster
  position plus a *target-aware* row of the raster position it must predict next (the class
  token: the first target's; the last token: none).
* The class embedding, plus a learned per-position offset (`timesteps_embeddings`), is the
  adaLN condition of every block.
* One embedding table holds image tokens (0..V−1), a mask token (V, unused), the classes
  (V+1+c) and the null class (V+1+K). The network takes raw labels y in [0, K], K = null.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from genzoo.errors import GenzooError
from genzoo.nn.kv_cache import KVCache, causal_mask_from
from genzoo.nn.mlp import GeluMlp
from genzoo.nn.modulation import adaln_modulation

POS_EXTRA_ROWS = 1024  # the official position tables have L + 1024 rows (rows 0..L+1 are used)
TIMESTEP_EXTRA_ROWS = 100  # and the per-position condition table L + 100

# Published generators (the README's rar_{b,l,xl,xxl}.bin), all on the 1024-code MaskGIT-VQGAN.
_SIZE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
RAR_SIZES = {
    name: dict(zip(_SIZE_FIELDS, sizes))
    for name, sizes in {
        "B": (24, 768, 16, 3072),
        "L": (24, 1024, 16, 4096),
        "XL": (32, 1280, 16, 5120),
        "XXL": (40, 1408, 16, 6144),
    }.items()
}


def _alias(field: str) -> property:
    """A read/write second name for a config field."""
    return property(lambda cfg: getattr(cfg, field), lambda cfg, v: setattr(cfg, field, v))


@dataclass
class RARConfig:
    """The official constructor fields (`model.vq_model.codebook_size`, `model.generator.*`)."""

    codebook_size: int = 1024  # V: the tokenizer's codebook
    image_seq_len: int = 256  # L = h·w image tokens
    condition_num_classes: int = 1000  # K
    hidden_size: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1  # after the attention projection and inside the MLP
    attn_drop: float = 0.1  # on the attention weights
    class_label_dropout: float = 0.1  # label → null in training, when the net drops labels itself
    use_checkpoint: bool = False  # activation checkpointing of each block in training
    # "official": raster tokens in, (B, T+1, V) out; "ar" (genzoo runs): teacher_forcing_logits
    forward_view: str = "official"

    # The generic names a genzoo run fills from the tokenizer and the data.
    vocab_size = _alias("codebook_size")
    block_size = _alias("image_seq_len")
    num_classes = _alias("condition_num_classes")


def check_rar_config(cfg: RARConfig) -> None:
    """Raise GenzooError naming the first field that cannot build a RAR network."""
    sizes = ("codebook_size", "image_seq_len", "condition_num_classes", "intermediate_size")
    for name in (*sizes, *_SIZE_FIELDS[:3]):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {value!r}")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise GenzooError(
            f"model.hidden_size={cfg.hidden_size} is not divisible by model.num_attention_heads="
            f"{cfg.num_attention_heads}; pick a head count that divides the hidden size"
        )
    if cfg.forward_view not in ("official", "ar"):
        raise GenzooError(f"model.forward_view={cfg.forward_view!r}: choose 'official' or 'ar'")
    for name in ("dropout", "attn_drop", "class_label_dropout"):
        if not 0 <= getattr(cfg, name) < 1:
            raise GenzooError(f"model.{name} must lie in [0, 1), got {getattr(cfg, name)}")


class CausalSelfAttention(nn.Module):
    """qkv with bias ([q; k; v] rows), per-head LayerNorm on q and k, causal SDPA, projection.

    Not genzoo.nn.Attention: RAR normalises q/k with LayerNorm (not RMSNorm), masks causally,
    uses dropout and, while decoding (`kv_cache` set by RAR.setup_cache), a KV cache.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, start: int | None = None) -> torch.Tensor:
        """Teacher forcing (start None), or decoding of positions start.. through the cache."""
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, tokens, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        mask, is_causal = None, start is None
        if start is not None:
            k, v = self.kv_cache.update(start, k, v)
            mask = causal_mask_from(start, tokens, x.device)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, mask, drop, is_causal=is_causal)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, tokens, dim)))


class DropoutGeluMlp(GeluMlp):
    """timm's Mlp: fc1 → exact GELU → dropout → fc2 → dropout."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__(dim, hidden, approximate="none")
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


def modulate_tokens(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x·(1 + scale) + shift with a per-position modulation (N, T, D)."""
    return x * (1 + scale) + shift


class RARBlock(nn.Module):
    """x += gate1·Attn(mod(LN1(x))); x += gate2·MLP(mod(LN2(x))), LNs with affine weights."""

    def __init__(self, cfg: RARConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = CausalSelfAttention(d, cfg.num_attention_heads, cfg.attn_drop, cfg.dropout)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        # The official width is int(D · (intermediate / D)), which float rounding can move.
        self.mlp = DropoutGeluMlp(d, int(d * (cfg.intermediate_size / d)), cfg.dropout)
        self.adaLN_modulation = adaln_modulation(d, 6)

    def forward(self, x, c, start: int | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate_tokens(self.norm1(x), shift1, scale1), start)
        return x + gate2 * self.mlp(modulate_tokens(self.norm2(x), shift2, scale2))


class RARFinalLayer(nn.Module):
    """Affine-free LayerNorm, then modulation whose chunks are scale first, shift second."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = adaln_modulation(dim, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.adaLN_modulation(c).chunk(2, dim=-1)
        return modulate_tokens(self.norm_final(x), shift, scale)


class RAR(nn.Module):
    """The RAR generator. forward_view "official" (default): forward(tokens (B, T) in raster
    order, y (B,) raw labels, orders (B, L) | None) -> (B, T+1, V); row i < T predicts
    tokens[b, orders[b, i]] from the class and the tokens before it in that order (T < L only
    in raster order), row T the token after the last. "ar": forward = teacher_forcing_logits.

    Decoding (raster): setup_cache(...), decode(None, y, 0) feeds [cls, class] (positions 0, 1),
    then decode(tokens, None, start) image tokens at positions start.. (token i at 2 + i).
    """

    kind = "rar"
    Config = RARConfig
    prefix_len = 2  # sequence positions before image token 0: [cls, class]

    @staticmethod
    def resolve(cfg: RARConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Fill the codebook, sequence length and class count from the tokenizer and data;
        a genzoo run trains through the `ar` family's forward view."""
        if getattr(tokenizer, "vocab_size", None) is None:
            raise GenzooError(
                f"model.kind=rar generates token ids; tokenizer {getattr(tokenizer, 'spec', '?')} "
                "has no codebook (vocab_size). Use a discrete (VQ) tokenizer"
            )
        h, w = tokenizer.latent_shape(res)[-2:]
        cfg.codebook_size, cfg.image_seq_len = tokenizer.vocab_size, h * w
        cfg.condition_num_classes, cfg.forward_view = num_classes, "ar"

    def __init__(self, cfg: RARConfig):
        super().__init__()
        check_rar_config(cfg)
        self.cfg = cfg
        d, length = cfg.hidden_size, cfg.image_seq_len
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, length + POS_EXTRA_ROWS, d))
        self.target_aware_pos_embed = nn.Parameter(torch.zeros(1, length + POS_EXTRA_ROWS, d))
        self.timesteps_embeddings = nn.Parameter(torch.zeros(1, length + TIMESTEP_EXTRA_ROWS, d))
        self.blocks = nn.ModuleList([RARBlock(cfg) for _ in range(cfg.num_hidden_layers)])
        self.embeddings = nn.Embedding(cfg.codebook_size + 1 + cfg.condition_num_classes + 1, d)
        self.adaln_before_head = RARFinalLayer(d)
        self.lm_head = nn.Linear(d, cfg.codebook_size)
        self.drop_labels_in_forward = True  # genzoo's trainer drops labels itself: False
        self.null_label, self.block_size = cfg.condition_num_classes, cfg.image_seq_len
        self.clear_cache()
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Official init: truncated normal(0.02) linears, embeddings and position tables, zero
        biases and cls token, unit LayerNorms, zero adaLN modulations (adaLN-Zero)."""
        if self.lm_head.weight.is_meta:  # shapes only (loading): nothing to initialise
            return
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear | nn.LayerNorm) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm) and module.weight is not None:
                nn.init.ones_(module.weight)
        for table in (self.pos_embed, self.target_aware_pos_embed, self.timesteps_embeddings):
            nn.init.trunc_normal_(table, std=0.02)
        nn.init.zeros_(self.cls_token)
        for module in [*self.blocks, self.adaln_before_head]:
            nn.init.zeros_(module.adaLN_modulation[-1].weight)
            nn.init.zeros_(module.adaLN_modulation[-1].bias)

    # -- inputs ---------------------------------------------------------------------------------
    def _check_ids(self, x, what: str, high: int, where: str, batch: int | None = None):
        """x must be a long tensor of ids in [0, high], (B,) labels or (B, T) tokens."""
        ndim, shape = (1, "(B,)") if what == "labels" else (2, "(B, T)")
        if not isinstance(x, torch.Tensor) or x.dtype != torch.long or x.ndim != ndim:
            raise GenzooError(f"{where}: {what} must be a {shape} long tensor, got {_describe(x)}")
        if batch is not None and x.shape[0] != batch:
            raise GenzooError(f"{where}: {x.shape[0]} rows of {what} for a batch of {batch}")
        if x.numel() and (x.min() < 0 or x.max() > high):
            note = f"{high} is the null class" if what == "labels" else "the tokenizer's codes"
            raise GenzooError(
                f"{where}: {what} must lie in [0, {high}] ({note}); got values "
                f"{x.min().item()}..{x.max().item()}"
            )
        return x

    def _check_inputs(self, tokens, y, orders) -> torch.Tensor:
        """Validate; (B, L): the raster position of the token generated i-th."""
        full, where = self.cfg.image_seq_len, "RAR forward"
        batch, length = self._check_ids(tokens, "tokens", self.cfg.codebook_size - 1, where).shape
        self._check_ids(y, "labels", self.null_label, where, batch)
        if length > full:
            raise GenzooError(f"{where}: {length} tokens given; image_seq_len is {full}")
        raster = torch.arange(full, device=tokens.device).expand(batch, full)
        if orders is None:
            return raster
        fits = isinstance(orders, torch.Tensor) and tuple(orders.shape) == (batch, full)
        fits = fits and length == full and orders.dtype == torch.long
        if not fits or not torch.equal(orders.sort(1)[0], raster):
            raise GenzooError(
                f"{where}: orders must be a ({batch}, {full}) long tensor of permutations of "
                f"0..{full - 1}, with all {full} tokens given; got {_describe(orders)} for "
                f"{length} tokens"
            )
        return orders

    # -- embeddings -----------------------------------------------------------------------------
    def _class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        return self.embeddings(y + self.cfg.codebook_size + 1)

    def _prefix(self, class_emb: torch.Tensor, first_target: torch.Tensor) -> torch.Tensor:
        """[cls, class] (B, 2, D), the class token told the first target's raster position."""
        pos, target = self.pos_embed[0], self.target_aware_pos_embed[0]
        cls = (self.cls_token[:, 0] + pos[0]).expand(class_emb.shape[0], -1)
        klass = class_emb + pos[1] + target[2 + first_target]
        return torch.stack([cls, klass], dim=1)

    def _image_tokens(self, ids, rows, next_rows) -> torch.Tensor:
        """Embeddings of image tokens `ids` (B, t) at raster positions `rows`, told the raster
        position `next_rows` of their next target (−1: none, a zero target-aware row)."""
        pos, target = self.pos_embed[0], self.target_aware_pos_embed[0]
        x = self.embeddings(ids) + pos[2 + rows]
        aware = target[2 + next_rows.clamp(min=0)]
        return x + torch.where((next_rows >= 0).unsqueeze(-1), aware, torch.zeros_like(aware))

    def _head(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.adaln_before_head(x, c))

    # -- teacher forcing ------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, y: torch.Tensor, orders=None) -> torch.Tensor:
        if self.cfg.forward_view == "ar":  # what a DDP-wrapped network must expose to the family
            return self.teacher_forcing_logits(tokens, y, orders)
        order = self._check_inputs(tokens, y, orders)
        return self._ordered_logits(tokens.gather(1, order[:, : tokens.shape[1]]), y, order)

    def teacher_forcing_logits(self, tokens, y, orders=None) -> torch.Tensor:
        """(B, T, V) for tokens in generation order (tokens[b, i] is the token at raster
        position orders[b, i]): row i predicts tokens[b, i]."""
        return self._ordered_logits(tokens, y, self._check_inputs(tokens, y, orders))[:, :-1]

    def _ordered_logits(self, ids, y, order) -> torch.Tensor:
        batch, length = ids.shape
        if self.training and self.drop_labels_in_forward and self.cfg.class_label_dropout > 0:
            drop = torch.rand(batch, device=y.device) < self.cfg.class_label_dropout
            y = torch.where(drop, self.null_label, y)
        class_emb = self._class_embedding(y)
        rows, next_rows = order[:, :length], order[:, 1 : length + 1]
        if length == self.cfg.image_seq_len:  # the last token has no next target
            next_rows = torch.cat([next_rows, torch.full_like(rows[:, :1], -1)], dim=1)
        image = self._image_tokens(ids, rows, next_rows)
        x = torch.cat([self._prefix(class_emb, order[:, 0]), image], dim=1)
        c = class_emb.unsqueeze(1) + self.timesteps_embeddings[:, : length + 2]
        for block in self.blocks:
            if self.training and self.cfg.use_checkpoint:
                x = checkpoint(block, x, c, use_reentrant=False)
            else:
                x = block(x, c)
        return self._head(x[:, 1:], c[:, 1:])  # drop the cls position

    # -- KV-cached decoding (raster order) ------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None):
        """A KV cache in every block for `batch_size` sequences of up to `max_len` positions
        (default: [cls, class] plus image_seq_len tokens)."""
        limit = self.prefix_len + self.cfg.image_seq_len
        max_len = limit if max_len is None else int(max_len)
        if not 1 <= max_len <= limit:
            raise GenzooError(
                f"setup_cache(max_len={max_len}): this model has {limit} positions ([cls, class] "
                f"+ image_seq_len={self.cfg.image_seq_len} tokens)"
            )
        self.clear_cache()
        heads, param = self.cfg.num_attention_heads, self.lm_head.weight
        shape = (batch_size, max_len, heads, self.cfg.hidden_size // heads)
        where = dict(device=device or param.device, dtype=dtype or param.dtype)
        for block in self.blocks:
            block.attn.kv_cache = KVCache(*shape, **where)

    def clear_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None
        self._cache_filled, self._cache_labels = 0, None

    def decode(self, tokens: torch.Tensor | None, y: torch.Tensor | None, start: int):
        """Logits (B, V) of the next token after feeding positions start..start+t−1.

        start=0 feeds [cls, class] (y needed), followed by image tokens 0..t−1 if given;
        start ≥ 2 feeds image tokens start−2.. (y may be None: the prefix's labels are kept).
        """
        cache = self.blocks[0].attn.kv_cache
        if cache is None:
            raise GenzooError("RAR decode: no KV cache; call setup_cache(batch_size) first")
        batch, where = cache.batch_size, "RAR decode"
        if tokens is not None:
            self._check_ids(tokens, "tokens", self.cfg.codebook_size - 1, where, batch)
        t = 0 if tokens is None else tokens.shape[1]
        y = self._cache_labels if y is None and start > 0 else y  # None: the prefix's labels
        y = self._check_ids(y, "labels", self.null_label, where, batch)
        if start < 0 or start == 1 or (start > 0 and t == 0):
            raise GenzooError(
                f"{where}: start={start}; use start=0 for the [cls, class] prefix (tokens "
                "optional) or start ≥ 2 with tokens (image token i sits at position 2 + i)"
            )
        if start > self._cache_filled:
            raise GenzooError(
                f"{where}: start={start} skips positions; {self._cache_filled} are cached. "
                "Feed the prefix (start=0) and then the tokens in order"
            )
        first = max(start - self.prefix_len, 0)  # index of the first image token fed
        class_emb = self._class_embedding(y)
        parts = [self._prefix(class_emb, torch.zeros_like(y))] if start == 0 else []
        if t:
            rows = torch.arange(first, first + t, device=y.device).expand(batch, t)
            next_rows = torch.where(rows + 1 < self.cfg.image_seq_len, rows + 1, -1)
            parts.append(self._image_tokens(tokens, rows, next_rows))
        x = torch.cat(parts, dim=1)
        steps = torch.arange(start, start + x.shape[1], device=y.device)
        c = class_emb.unsqueeze(1) + self.timesteps_embeddings[0, steps]
        for block in self.blocks:
            x = block(x, c, start)
        self._cache_filled, self._cache_labels = start + x.shape[1], y
        return self._head(x[:, -1:], c[:, -1:])[:, 0]


def _describe(value) -> str:
    shape = f" tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
    return f"a {getattr(value, 'dtype', type(value).__name__)}{shape}"
