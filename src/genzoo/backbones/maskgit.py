"""MaskGIT-style bidirectional generators over token ids (Chang et al. 2022), as the
1d-tokenizer (TiTok) generators: `ImageBert` (model_type "ViT") and `UViTBert` ("UViT").

Both read the sequence [class id, L image ids] with full (non-causal) attention and predict
the L image tokens. One embedding table holds image tokens 0..V−1, the mask token V, class c
at V+1+c and the null class at V+1+K; the network takes raw labels y in [0, K], K = null.

* ImageBert is a BERT encoder in the HuggingFace layout (keys `model.embeddings.*`,
  `model.encoder.layer.i.*`, `model.lm_head`): word + position + token-type-0 embeddings and
  LayerNorm (eps 1e-12), post-norm layers with exact GELU, the head on positions 1..L.
* UViTBert is a U-ViT: embedding + learned positions, depth/2 pre-norm in-blocks (LayerNorm eps
  1e-5, bias-free qkv), a mid-block, depth/2 out-blocks that first mix [current, skip] with
  `skip_linear` (skips popped last-in first-out), a final LayerNorm and the head.
* `class_condition="adaln"` (a genzoo addition, UViT only) drops the class token: the class row
  of the same table drives adaLN-Zero modulation of every block and of the final norm.

Released weights load strictly (genzoo.zoo.maskgit); numerics follow the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.attention import Attention
from genzoo.nn.mlp import GeluMlp
from genzoo.nn.modulation import adaln_modulation, modulate

MODEL_TYPES = ("ViT", "UViT")
CLASS_CONDITIONS = ("token", "adaln")


def _alias(field: str) -> property:
    """A read/write second name for a config field."""
    return property(lambda cfg: getattr(cfg, field), lambda cfg, v: setattr(cfg, field, v))


@dataclass
class MaskGITConfig:
    """The official fields (`model.vq_model.codebook_size`, `model.generator.*`) plus genzoo's
    label dropout and class conditioning. Defaults: the TiTok-L-32 generator."""

    model_type: str = "ViT"  # "ViT" (ImageBert) | "UViT" (UViTBert)
    codebook_size: int = 4096  # V; id V is the mask token
    image_seq_len: int = 32  # L
    condition_num_classes: int = 1000  # K
    hidden_size: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1  # BERT hidden dropout (UViTBert has none, as the official blocks)
    attn_drop: float = 0.1  # BERT attention-probability dropout
    class_dropout_prob: float = 0.1  # label → null in training (the official cond_drop_prob)
    class_condition: str = "token"  # "token" (official) | "adaln" (UViT only)

    # the generic names a genzoo run fills from the tokenizer and the data
    vocab_size = _alias("codebook_size")
    block_size = _alias("image_seq_len")
    num_classes = _alias("condition_num_classes")


# The released 1d-tokenizer generators (README_TiTok.md), all on 4096-code TiTok tokenizers.
MASKGIT_GENERATORS: dict[str, dict] = {
    "titok-l32": dict(model_type="ViT", image_seq_len=32, hidden_size=768, num_hidden_layers=24,
                      num_attention_heads=16, intermediate_size=3072),
    "titok-b64": dict(model_type="ViT", image_seq_len=64, hidden_size=768, num_hidden_layers=24,
                      num_attention_heads=16, intermediate_size=3072),
    "titok-s128": dict(model_type="UViT", image_seq_len=128, hidden_size=1024,
                       num_hidden_layers=20, num_attention_heads=16, intermediate_size=4096),
}  # fmt: skip


def check_maskgit_config(cfg: MaskGITConfig) -> None:
    """Raise GenzooError naming the first field that cannot build the generator."""
    if cfg.model_type not in MODEL_TYPES:
        raise GenzooError(
            f"model.model_type={cfg.model_type!r}: choose one of {', '.join(MODEL_TYPES)}"
        )
    if cfg.class_condition not in CLASS_CONDITIONS:
        raise GenzooError(
            f"model.class_condition={cfg.class_condition!r}: choose one of "
            f"{', '.join(CLASS_CONDITIONS)}"
        )
    if cfg.class_condition == "adaln" and cfg.model_type != "UViT":
        raise GenzooError(
            "model.class_condition='adaln' needs model.model_type='UViT' (the post-norm BERT of "
            "'ViT' takes the class as a token)"
        )
    for name in ("codebook_size", "image_seq_len", "condition_num_classes", "hidden_size",
                 "num_hidden_layers", "num_attention_heads", "intermediate_size"):  # fmt: skip
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {value!r}")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise GenzooError(
            f"model.hidden_size={cfg.hidden_size} is not divisible by "
            f"num_attention_heads={cfg.num_attention_heads}"
        )
    if cfg.model_type == "UViT" and cfg.num_hidden_layers % 2:
        raise GenzooError(
            f"model.num_hidden_layers={cfg.num_hidden_layers}: UViT needs an even depth "
            "(depth/2 in-blocks and depth/2 out-blocks around the mid-block)"
        )
    for name in ("dropout", "attn_drop", "class_dropout_prob"):
        if not 0 <= getattr(cfg, name) < 1:
            raise GenzooError(f"model.{name} must lie in [0, 1), got {getattr(cfg, name)}")


class MaskGIT(nn.Module):
    """forward(tokens (B, L) long, y (B,) long, mask=None, cond_drop_prob=None) -> (B, L, V).

    tokens hold image ids, or V (the mask token) at masked positions; `mask` (B, L) bool, if
    given, masks those positions too. y == K is the null class. Labels are dropped to null with
    probability `cond_drop_prob` drawing B uniforms from the global RNG (the official forward);
    with None, only in training mode with `drop_labels_in_forward` (class_dropout_prob).
    `MaskGIT(cfg)` builds ImageBert or UViTBert from `cfg.model_type` (so one registered kind
    serves both); the subclasses implement `logits(tokens, class_ids)`.
    """

    Config = MaskGITConfig

    def __new__(cls, cfg: MaskGITConfig | None = None, *args, **kwargs):
        if cls is MaskGIT and cfg is not None:
            check_maskgit_config(cfg)
            cls = ImageBert if cfg.model_type == "ViT" else UViTBert
        return super().__new__(cls)

    @staticmethod
    def resolve(cfg: MaskGITConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Fill the codebook, sequence length and class count from the tokenizer and data."""
        if not getattr(tokenizer, "discrete", False) or not getattr(tokenizer, "vocab_size", 0):
            raise GenzooError(
                f"model.kind=maskgit generates token ids; tokenizer "
                f"{getattr(tokenizer, 'spec', '?')} has no codebook. Use a discrete tokenizer "
                "(vq:RUN, maskgit-vqgan:FILE)"
            )
        cfg.codebook_size, cfg.condition_num_classes = tokenizer.vocab_size, num_classes
        cfg.image_seq_len = math.prod(tokenizer.latent_shape(res))

    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        check_maskgit_config(cfg)
        self.cfg = cfg
        self.mask_token_id, self.null_label = cfg.codebook_size, cfg.condition_num_classes
        self.block_size = cfg.image_seq_len
        self.table_rows = cfg.codebook_size + cfg.condition_num_classes + 2
        self.drop_labels_in_forward = True  # genzoo's trainer drops labels itself: False

    def _check(self, x, what: str, high: int, shape: str, ndim: int) -> None:
        if not isinstance(x, Tensor) or x.dtype not in (torch.int64, torch.int32) or x.ndim != ndim:
            got = f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"
            raise GenzooError(f"MaskGIT forward: {what} must be a {shape} long tensor, got {got}")
        if x.numel() and (x.min() < 0 or x.max() > high):
            raise GenzooError(
                f"MaskGIT forward: {what} must lie in [0, {high}]; got values "
                f"{int(x.min())}..{int(x.max())}"
            )

    def forward(self, tokens: Tensor, y: Tensor, mask: Tensor | None = None,
                cond_drop_prob: float | None = None) -> Tensor:  # fmt: skip
        self._check(tokens, "tokens (image ids, V = mask)", self.mask_token_id, "(B, L)", 2)
        self._check(y, "labels (K = null)", self.null_label, "(B,)", 1)
        if tokens.shape != (y.shape[0], self.block_size):
            raise GenzooError(
                f"MaskGIT forward: tokens {tuple(tokens.shape)} for {y.shape[0]} labels; "
                f"expected ({y.shape[0]}, {self.block_size})"
            )
        if mask is not None:
            tokens = tokens.masked_fill(mask.to(tokens.device, torch.bool), self.mask_token_id)
        if cond_drop_prob is None and self.training and self.drop_labels_in_forward:
            cond_drop_prob = self.cfg.class_dropout_prob
        if cond_drop_prob is not None:
            drop = torch.rand_like(y, dtype=torch.float) < cond_drop_prob
            y = torch.where(drop, self.null_label, y)
        class_ids = y.long() + self.mask_token_id + 1
        return self.logits(tokens.long(), class_ids)

    def logits(self, tokens: Tensor, class_ids: Tensor) -> Tensor:
        raise NotImplementedError


# -- ImageBert: a BERT encoder in the HuggingFace layout ------------------------------------------


class DenseNorm(nn.Module):
    """BERT's output sub-layer: LayerNorm(dropout(dense(h)) + residual)."""

    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertSelfAttention(nn.Module):
    """query, key, value (with bias), softmax(q kᵀ / √d) v over all positions."""

    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        d = cfg.hidden_size
        self.heads, self.p = cfg.num_attention_heads, cfg.attn_drop
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (lin(x).view(b, t, self.heads, -1).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))  # fmt: skip
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, t, d)


class BertLayer(nn.Module):
    """Post-norm: a = LN(Attn(x) + x); out = LN(W2 GELU(W1 a) + a), exact GELU."""

    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        d, inner = cfg.hidden_size, cfg.intermediate_size
        self.attention = nn.Module()  # HuggingFace's key path attention.self / attention.output
        self.attention.self = BertSelfAttention(cfg)
        self.attention.output = DenseNorm(d, d, cfg.dropout)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, inner)
        self.output = DenseNorm(inner, d, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        a = self.attention.output(self.attention.self(x), x)
        return self.output(F.gelu(self.intermediate.dense(a)), a)


class ImageBert(MaskGIT):
    """model_type "ViT": HuggingFace BERT (`model.*` keys) plus `model.lm_head`."""

    def __init__(self, cfg: MaskGITConfig):
        super().__init__(cfg)
        d = cfg.hidden_size
        self.model = nn.Module()
        self.model.embeddings = nn.Module()
        emb = self.model.embeddings
        emb.word_embeddings = nn.Embedding(self.table_rows, d)
        emb.position_embeddings = nn.Embedding(cfg.image_seq_len + 1, d)
        emb.token_type_embeddings = nn.Embedding(2, d)
        emb.LayerNorm = nn.LayerNorm(d, eps=1e-12)
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.model.encoder = nn.Module()
        self.model.encoder.layer = nn.ModuleList(
            BertLayer(cfg) for _ in range(cfg.num_hidden_layers)
        )
        self.model.lm_head = nn.Linear(d, cfg.codebook_size)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """BERT's init: normal(0, 0.02) linears and embeddings, zero biases, unit LayerNorms."""
        if self.model.lm_head.weight.is_meta:  # shapes only (loading)
            return
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear | nn.LayerNorm) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)

    def logits(self, tokens: Tensor, class_ids: Tensor) -> Tensor:
        emb = self.model.embeddings
        ids = torch.cat([class_ids[:, None], tokens], dim=1)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = emb.word_embeddings(ids) + emb.token_type_embeddings.weight[0]
        x = self.embedding_dropout(emb.LayerNorm(x + emb.position_embeddings(positions)))
        for layer in self.model.encoder.layer:
            x = layer(x)
        return self.model.lm_head(x[:, 1:])  # drop the class position


# -- UViTBert --------------------------------------------------------------------------------------


class UViTBlock(nn.Module):
    """Pre-norm: x = x + Attn(LN1 x); x = x + MLP(LN2 x); out-blocks first apply skip_linear to
    [x, skip]. With adaLN, both branches are modulated and gated by the class (DiT)."""

    def __init__(self, cfg: MaskGITConfig, skip: bool):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, cfg.num_attention_heads)
        self.attn.qkv = nn.Linear(d, 3 * d, bias=False)  # the official qkv has no bias
        self.norm2 = nn.LayerNorm(d)
        self.mlp = GeluMlp(d, cfg.intermediate_size, approximate="none")
        self.skip_linear = nn.Linear(2 * d, d) if skip else None
        if cfg.class_condition == "adaln":
            self.adaLN_modulation = adaln_modulation(d, 6)

    def forward(self, x: Tensor, skip: Tensor | None = None, c: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        if c is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class UViTBert(MaskGIT):
    """model_type "UViT": `embeddings`, `pos_embed`, `in_blocks`, `mid_block`, `out_blocks`,
    `norm`, `lm_head` (+ adaLN modulations with class_condition="adaln")."""

    def __init__(self, cfg: MaskGITConfig):
        super().__init__(cfg)
        d, half = cfg.hidden_size, cfg.num_hidden_layers // 2
        self.adaln = cfg.class_condition == "adaln"
        positions = cfg.image_seq_len + (0 if self.adaln else 1)  # adaLN: no class position
        self.embeddings = nn.Embedding(self.table_rows, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, d))
        self.in_blocks = nn.ModuleList(UViTBlock(cfg, skip=False) for _ in range(half))
        self.mid_block = UViTBlock(cfg, skip=False)
        self.out_blocks = nn.ModuleList(UViTBlock(cfg, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(d)
        if self.adaln:
            self.final_adaLN_modulation = adaln_modulation(d, 2)
        self.lm_head = nn.Linear(d, cfg.codebook_size)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The official init: truncated normal(0.02) linears, embeddings and positions, zero
        biases, unit LayerNorms; adaLN modulations zero (every block starts as the identity)."""
        if self.lm_head.weight.is_meta:  # shapes only (loading)
            return
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear | nn.LayerNorm) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for name, m in self.named_modules():
            if name.endswith("adaLN_modulation"):
                nn.init.zeros_(m[-1].weight)
                nn.init.zeros_(m[-1].bias)

    def logits(self, tokens: Tensor, class_ids: Tensor) -> Tensor:
        c = self.embeddings(class_ids) if self.adaln else None
        ids = tokens if self.adaln else torch.cat([class_ids[:, None], tokens], dim=1)
        x = self.embeddings(ids) + self.pos_embed[:, : ids.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x, c=c)
            skips.append(x)
        x = self.mid_block(x, c=c)
        for block in self.out_blocks:
            x = block(x, skips.pop(), c=c)
        x = self.norm(x)
        if self.adaln:
            shift, scale = self.final_adaLN_modulation(c).chunk(2, dim=-1)
            return self.lm_head(modulate(x, shift, scale))
        return self.lm_head(x[:, 1:])  # drop the class position
