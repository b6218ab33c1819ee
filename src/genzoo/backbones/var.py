"""VAR (Tian et al. 2024, arXiv 2404.02905): visual autoregressive modelling, next-scale prediction.

An image is a pyramid of K token maps r_0 … r_{K−1} (side p_k, from the `msvq` tokenizer). A
GPT-style transformer predicts all p_k² tokens of scale k at once, given the class and every
coarser scale: p(r_0 … r_{K−1}) = Π_k p(r_k | r_<k, class). The input tokens of scale k are the
tokenizer's running reconstruction f̂ after scales < k, area-averaged to p_k × p_k (the
teacher-forcing input); scale 0 is a start token made from the class embedding.

* Block-causal attention: a token of scale s sees every token of scales ≤ s (its own scale
  included); with a KV cache, sampling feeds one whole scale per step.
* Every block is conditioned on the class by adaLN (chunks γ1, γ2, scale1, scale2, shift1,
  shift2 — not DiT's order); with `shared_aln` one Linear is shared and each block adds its own
  learned offsets `ada_gss`.
* Learned absolute positions for all L = Σ p_k² tokens plus a level (scale) embedding.
* `attn_l2_norm`: q and k are L2-normalised per head and q is scaled by a learned per-head
  temperature exp(min(s_h, ln 100)); the softmax scale is then 1.

The state dict is the official `VAR`'s (keys, order, shapes, buffers included), so the released
`var_d*.pth` files load strictly. One deliberate difference: the official forward drops labels
to the null class even in eval mode; here it happens only in training mode (and only while
`drop_labels_in_forward` is set), so evaluation is deterministic.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import GenzooError
from genzoo.nn.kv_cache import KVCache
from genzoo.nn.mlp import GeluMlp
from genzoo.nn.modulation import adaln_modulation
from genzoo.tokenizers.msvq import PATCH_NUMS_256, PATCH_NUMS_512

# Published depths; the rest follows the depth rule (width 64·depth, heads = depth).
VAR_SIZES = {"d16": 16, "d20": 20, "d24": 24, "d30": 30, "d36": 36}
MAX_SCALE_MUL = torch.log(torch.tensor(100)).item()  # ln 100 as the official float32 value


@dataclass
class VARConfig:
    """The official `VAR` constructor arguments; embed_dim, num_heads and drop_path_rate follow
    the official builder's depth rule when None (64·depth, depth, 0.1·depth/24)."""

    kind: ClassVar[str] = "var"

    depth: int = 16
    embed_dim: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    drop_path_rate: float | None = None
    norm_eps: float = 1e-6
    shared_aln: bool = False
    cond_drop_rate: float = 0.1
    attn_l2_norm: bool = True  # the builder's default and every released model's
    num_classes: int = 1000
    vocab_size: int = 4096  # V, the tokenizer's codebook size
    z_channels: int = 32  # Cvae, the tokenizer's latent channels
    patch_nums: tuple[int, ...] = PATCH_NUMS_256

    @property
    def width(self) -> int:
        return 64 * self.depth if self.embed_dim is None else self.embed_dim

    @property
    def heads(self) -> int:
        return self.depth if self.num_heads is None else self.num_heads

    @property
    def drop_path(self) -> float:
        return 0.1 * self.depth / 24 if self.drop_path_rate is None else self.drop_path_rate

    @property
    def class_dropout_prob(self) -> float:
        """The label-dropout probability under the name genzoo's trainer reads."""
        return self.cond_drop_rate


def var_preset(name: str) -> VARConfig:
    """The published VAR-d16 … d30 (256 px) and VAR-d36-s (512 px, shared adaLN) configs."""
    key = name.lower().removeprefix("var-").removeprefix("var").removesuffix("-s")
    if key not in VAR_SIZES:
        raise GenzooError(f"unknown VAR preset {name!r}; choose one of {', '.join(VAR_SIZES)}")
    if key == "d36":
        return VARConfig(depth=36, shared_aln=True, patch_nums=PATCH_NUMS_512)
    return VARConfig(depth=VAR_SIZES[key])


def check_var_config(cfg: VARConfig) -> None:
    """GenzooError naming the first field that cannot build a VAR transformer."""
    for name in ("depth", "width", "heads", "num_classes", "vocab_size", "z_channels"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {value!r}")
    if cfg.width % cfg.heads:
        raise GenzooError(
            f"model.embed_dim={cfg.width} is not divisible by model.num_heads={cfg.heads}; "
            "pick a head count that divides the width"
        )
    nums = tuple(cfg.patch_nums)
    if len(nums) < 2 or min(nums) < 1 or list(nums) != sorted(set(nums)):
        raise GenzooError(
            f"model.patch_nums={nums}: expected at least two increasing scale sides, "
            f"e.g. {PATCH_NUMS_256}"
        )
    if not 0 <= cfg.cond_drop_rate < 1 or not 0 <= cfg.drop_path < 1 or cfg.mlp_ratio <= 0:
        raise GenzooError(
            f"model.cond_drop_rate={cfg.cond_drop_rate} and drop_path_rate={cfg.drop_path} must "
            f"lie in [0, 1), mlp_ratio={cfg.mlp_ratio} must be positive"
        )


def drop_path(x: torch.Tensor, p: float, training: bool, generator=None) -> torch.Tensor:
    """Stochastic depth: drop a sample's whole residual branch with probability p, drawn from
    `generator` (the trainer's per-micro-batch one: exact resume) or the global RNG."""
    if p == 0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p, generator=generator)
    return x * keep.div_(1 - p)


class SelfAttention(nn.Module):
    """Multi-head attention with VAR's layout: one bias-free [q; k; v] matrix plus separate q
    and v biases (k has none: `zero_k_bias`), optional L2-normalised q·k, an optional KV cache."""

    def __init__(self, dim: int, num_heads: int, attn_l2_norm: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        """x (B, T, C); `mask` (0 / −inf) for teacher forcing; with a cache, x holds positions
        start … start+T−1 and attends to every cached position before them and to itself."""
        b, t, c = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, head_dim)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul)
            k = F.normalize(k, dim=-1)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(start, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class AdaLNSelfAttn(nn.Module):
    """x += γ1·Attn(LN(x)(1 + scale1) + shift1); x += γ2·FFN(LN(x)(1 + scale2) + shift2)."""

    def __init__(self, cfg: VARConfig, drop_path_p: float):
        super().__init__()
        c = cfg.width
        self.shared_aln = cfg.shared_aln
        if cfg.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, c) / c**0.5)
        self.attn = SelfAttention(c, cfg.heads, cfg.attn_l2_norm)
        self.ffn = GeluMlp(c, round(c * cfg.mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(c, eps=cfg.norm_eps, elementwise_affine=False)
        if not cfg.shared_aln:
            self.ada_lin = adaln_modulation(c, 6)
        self.drop_path_p = drop_path_p

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None, start: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """cond: the class vector (B, C), or with shared adaLN the shared (B, 1, 6, C)."""
        if self.shared_aln:
            mod = self.ada_gss + cond
        else:
            mod = self.ada_lin(cond).view(-1, 1, 6, x.shape[-1])
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod.unbind(2)  # each (B, 1, C)
        h = self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1), mask, start)
        x = x + drop_path(h.mul_(gamma1), self.drop_path_p, self.training, generator)
        h = self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2))
        return x + drop_path(h.mul(gamma2), self.drop_path_p, self.training, generator)


class AdaLNBeforeHead(nn.Module):
    """LN(x)·(1 + scale) + shift, (scale, shift) = Linear(SiLU(c)) in that order."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ada_lin = adaln_modulation(dim, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(c).view(-1, 1, 2, x.shape[-1]).unbind(2)
        return self.ln_wo_grad(x).mul(scale.add(1)).add_(shift)


class SharedAdaLin(nn.Linear):
    """Linear(C, 6C) whose output is viewed as (B, 1, 6, C), shared by all blocks."""

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return super().forward(c).view(-1, 1, 6, self.weight.shape[0] // 6)


class VAR(nn.Module):
    """forward(label (B,), x_input (B, L − p_0², Cv)) -> teacher-forced logits (B, L, V)."""

    Config = VARConfig

    @staticmethod
    def resolve(cfg: VARConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Take V, Cv and the scales from the multi-scale tokenizer; check the resolution."""
        nums = getattr(tokenizer, "patch_nums", None)
        if not getattr(tokenizer, "discrete", False) or nums is None:
            raise GenzooError(
                f"model 'var' needs the multi-scale VQ tokenizer (msvq), not {tokenizer.spec!r}"
            )
        if res != tokenizer.stride * nums[-1]:
            raise GenzooError(
                f"resolution {res} does not match the tokenizer's scales {tuple(nums)}: they "
                f"code {tokenizer.stride * nums[-1]}-pixel images; use that --res"
            )
        cfg.patch_nums, cfg.num_classes = tuple(nums), num_classes
        cfg.vocab_size, cfg.z_channels = tokenizer.vocab_size, tokenizer.channels

    def __init__(self, cfg: VARConfig):
        super().__init__()
        check_var_config(cfg)
        self.cfg = cfg
        c, self.patch_nums = cfg.width, tuple(cfg.patch_nums)
        sizes = [p * p for p in self.patch_nums]
        self.num_tokens, self.first_l = sum(sizes), sizes[0]
        ends = list(itertools.accumulate(sizes))
        self.begin_ends = [(e - s, e) for s, e in zip(sizes, ends)]
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, c))
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.num_tokens, c))
        level = torch.cat([torch.full((s,), k) for k, s in enumerate(sizes)]).view(1, -1)
        self.register_buffer("lvl_1L", level)
        # block-causal: query of scale s sees keys of scales <= s
        visible = level.view(-1, 1) >= level.view(1, -1)
        mask = torch.where(visible, 0.0, -torch.inf).view(1, 1, self.num_tokens, self.num_tokens)
        self.register_buffer("attn_bias_for_masking", mask)
        self.word_embed = nn.Linear(cfg.z_channels, c)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, c)  # row num_classes: the null class
        self.lvl_embed = nn.Embedding(len(sizes), c)
        if cfg.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(c, 6 * c))
        else:
            self.shared_ada_lin = nn.Identity()
        # stochastic depth rising linearly over the blocks (python floats: meta-device safe)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([AdaLNSelfAttn(cfg, rates[i]) for i in range(cfg.depth)])
        self.head_nm = AdaLNBeforeHead(c, cfg.norm_eps)
        self.head = nn.Linear(c, cfg.vocab_size)
        self.drop_labels_in_forward = True
        self.init_weights()

    @property
    def null_label(self) -> int:
        return self.cfg.num_classes

    @torch.no_grad()
    def init_weights(
        self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02
    ) -> None:
        """The official training initialisation (the builder's defaults): truncated normal with
        std (1/(3C))^½ for linears, embeddings and positions; scaled-down residual outputs;
        the adaLN gates γ start near zero, so every block starts close to the identity."""
        std, depth = (1 / self.cfg.width / 3) ** 0.5, self.cfg.depth
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        c = self.cfg.width
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            if hasattr(block, "ada_lin"):
                block.ada_lin[-1].weight[2 * c :].mul_(init_adaln)
                block.ada_lin[-1].weight[: 2 * c].mul_(init_adaln_gamma)
            else:
                block.ada_gss[:, :, 2:].mul_(init_adaln)
                block.ada_gss[:, :, :2].mul_(init_adaln_gamma)

    def _check_labels(self, label: torch.Tensor) -> None:
        n = self.cfg.num_classes
        if label.ndim != 1 or label.is_floating_point():
            raise GenzooError(f"labels must be integers of shape (B,), got {tuple(label.shape)}")
        if label.numel() and (int(label.min()) < 0 or int(label.max()) > n):
            raise GenzooError(
                f"labels must lie in [0, {n}] ({n} is the null class); got "
                f"[{int(label.min())}, {int(label.max())}]"
            )

    def level_position(self, begin: int, end: int) -> torch.Tensor:
        """Level plus absolute position embedding of tokens begin … end−1, (1, end−begin, C)."""
        return (self.lvl_embed(self.lvl_1L) + self.pos_1LC)[:, begin:end]

    def start_tokens(self, c: torch.Tensor) -> torch.Tensor:
        """The p_0² first tokens: class vector + pos_start, (B, p_0², C)."""
        b = c.shape[0]
        return c.unsqueeze(1).expand(b, self.first_l, -1) + self.pos_start.expand(b, -1, -1)

    def logits(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(x.float(), c).float()).float()

    def forward(
        self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor, generator=None
    ) -> torch.Tensor:
        """Teacher forcing: logit row j predicts token j of the concatenated K id maps.
        `generator`: the source of the drop-path draws in training (default: the global RNG)."""
        label, x_in = label_B, x_BLCv_wo_first_l
        self._check_labels(label)
        want = (label.shape[0], self.num_tokens - self.first_l, self.cfg.z_channels)
        if tuple(x_in.shape) != want:
            raise GenzooError(
                f"teacher-forcing input of shape {tuple(x_in.shape)}: expected {want} (B, L − "
                "p_0², Cv), as the tokenizer's var_input(ids) makes it"
            )
        if self.training and self.drop_labels_in_forward and self.cfg.cond_drop_rate > 0:
            drop = torch.rand(label.shape[0], device=label.device) < self.cfg.cond_drop_rate
            label = torch.where(drop, self.cfg.num_classes, label)
        c = self.class_emb(label)
        x = torch.cat((self.start_tokens(c), self.word_embed(x_in.float())), dim=1)
        x = x + (self.lvl_embed(self.lvl_1L.expand(label.shape[0], -1)) + self.pos_1LC)
        cond = self.shared_ada_lin(c)
        for block in self.blocks:
            x = block(x, cond, self.attn_bias_for_masking, generator=generator)
        return self.logits(x, c)

    # -- scale-by-scale decoding with a KV cache ----------------------------------------------
    def setup_cache(
        self, batch_size: int, max_len: int | None = None, device=None, dtype=None
    ) -> None:
        """A KV cache of `max_len` (default L) positions in every attention layer."""
        device = device or self.pos_1LC.device
        dtype = dtype or self.pos_1LC.dtype
        for block in self.blocks:
            attn = block.attn
            attn.kv_cache = KVCache(
                batch_size, max_len or self.num_tokens, attn.num_heads, attn.head_dim,
                device=device, dtype=dtype,
            )  # fmt: skip

    def clear_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None

    def decode(self, x_scale: torch.Tensor | None, y: torch.Tensor, scale: int) -> torch.Tensor:
        """Logits (B, p_k², V) of scale k, after scales < k were decoded into the cache.

        x_scale: scale k's input (b, p_k², Cv), the area-averaged f̂ (None at scale 0, whose
        tokens come from the class). With b < B = len(y) rows (the guided batch [cond; uncond])
        the b rows are embedded once and repeated, as the official sampler does.
        """
        if self.blocks[0].attn.kv_cache is None:
            raise GenzooError("decode() needs a KV cache: call setup_cache(batch_size) first")
        self._check_labels(y)
        if not 0 <= scale < len(self.patch_nums) or (scale > 0) == (x_scale is None):
            raise GenzooError(
                f"decode(scale={scale}): scales are 0 … {len(self.patch_nums) - 1}; scale 0 takes "
                "x_scale=None, later scales the area-averaged f̂ of the previous ones"
            )
        begin, end = self.begin_ends[scale]
        c = self.class_emb(y)
        if scale == 0:
            x = self.start_tokens(c) + self.level_position(begin, end)
        else:
            x = self.word_embed(x_scale.float()) + self.level_position(begin, end)
            x = x.repeat(y.shape[0] // x.shape[0], 1, 1)
        cond = self.shared_ada_lin(c)
        for block in self.blocks:
            x = block(x, cond, None, begin)
        return self.logits(x, c)
