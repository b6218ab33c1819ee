"""MAR (Li et al. 2024): an MAE-style encoder–decoder over continuous tokens plus a per-token head.

The latent (B, c, H, W) is cut into p×p patches, L = (H/p)·(W/p) tokens of Ct = c·p² features
(token n = row·G + col, feature channel·p² + a·p + b). A masked sample is conditioned as:

    encoder:  z_proj(tokens), Bf buffer rows in front all set to the class embedding (or the
              null `fake_latent`), + learned positions, LayerNorm; the masked rows are *dropped*
              (every row of a batch must mask the same number), ViT blocks, LayerNorm
    decoder:  decoder_embed, scattered back into a grid of `mask_token`s, + learned positions,
              ViT blocks, LayerNorm; the buffer rows are dropped and diffusion positions added

giving one condition z (B, L, D) per token, from which the per-token head (diffloss.net, see
genzoo.nn.token_head) models the token. The state dict has the official keys, order and shapes,
so released checkpoints load strictly (genzoo.zoo.mar); every LayerNorm has eps 1e-6 (the
published factories), the MLP uses the exact GELU, and attention is plain SDPA.

`forward(tokens, mask, y, head_x=None, head_t=None)` is what training runs: z alone, or with
head inputs (rows of x_t and t, the token rows repeated `diffusion_batch_mul` times as MAR's
loss repeats them) the head's output for them. The head objective (`objective`, a
genzoo.families.token_diffusion objective) belongs to the model, as MAR's DiffLoss does.

`mask_token_is_null=True` (eMIGM) has no separate mask token: the decoder fills masked slots
with the null-class embedding `fake_latent` itself (one parameter for both uses), which needs
equal encoder and decoder widths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from genzoo.errors import GenzooError
from genzoo.families.token_diffusion import HEAD_OBJECTIVES, head_objective
from genzoo.nn.attention import Attention
from genzoo.nn.mlp import GeluMlp
from genzoo.nn.token_head import TokenHead


@dataclass
class MARConfig:
    """MAR's constructor arguments (official names and defaults), plus genzoo switches."""

    kind: ClassVar[str] = "mar"
    img_size: int = 256
    vae_stride: int = 16
    patch_size: int = 1
    encoder_embed_dim: int = 1024
    encoder_depth: int = 16
    encoder_num_heads: int = 16
    decoder_embed_dim: int = 1024
    decoder_depth: int = 16
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    vae_embed_dim: int = 16
    mask_ratio_min: float = 0.7  # training: masked fraction ~ truncated normal on [min, 1]
    label_drop_prob: float = 0.1
    class_num: int = 1000
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    buffer_size: int = 64
    diffloss_d: int = 3  # head depth
    diffloss_w: int = 1024  # head width
    num_sampling_steps: str = "100"  # the head's default respacing
    diffusion_batch_mul: int = 4  # training: each token's head loss drawn this many times
    grad_checkpointing: bool = False
    # genzoo switches (off: official MAR)
    head: str = "diffusion"  # "diffusion" (MAR's DDPM head) | "flow"
    mask_token_is_null: bool = False  # eMIGM: the mask token is the null-class embedding

    # the names genzoo's trainer and Pipeline read
    @property
    def num_classes(self) -> int:
        return self.class_num

    @property
    def class_dropout_prob(self) -> float:
        return self.label_drop_prob

    @property
    def grid_size(self) -> int:
        return self.img_size // self.vae_stride // self.patch_size

    @property
    def token_dim(self) -> int:
        return self.vae_embed_dim * self.patch_size**2


POSITIVE = ("img_size", "vae_stride", "patch_size", "encoder_embed_dim", "encoder_depth",
            "encoder_num_heads", "decoder_embed_dim", "decoder_depth", "decoder_num_heads",
            "vae_embed_dim", "class_num", "buffer_size", "diffloss_d", "diffloss_w",
            "diffusion_batch_mul")  # fmt: skip
RATES = ("label_drop_prob", "attn_dropout", "proj_dropout", "mask_ratio_min")


def check_mar_config(cfg: MARConfig) -> None:
    """GenzooError naming the first field that cannot build a MAR."""
    for name in POSITIVE:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {value!r}")
    for name in RATES:
        if not 0 <= getattr(cfg, name) < 1:
            raise GenzooError(f"model.{name} must lie in [0, 1), got {getattr(cfg, name)}")
    side = cfg.vae_stride * cfg.patch_size
    if cfg.img_size % side:
        raise GenzooError(
            f"model.img_size={cfg.img_size} is not a multiple of vae_stride×patch_size={side}"
        )
    for part in ("encoder", "decoder"):
        dim, heads = getattr(cfg, f"{part}_embed_dim"), getattr(cfg, f"{part}_num_heads")
        if dim % heads:
            raise GenzooError(f"model.{part}_embed_dim={dim} is not divisible by {heads} heads")
    if cfg.head not in HEAD_OBJECTIVES:
        raise GenzooError(f"model.head={cfg.head!r}: choose one of {', '.join(HEAD_OBJECTIVES)}")
    if cfg.mask_token_is_null and cfg.encoder_embed_dim != cfg.decoder_embed_dim:
        raise GenzooError(
            "model.mask_token_is_null needs encoder_embed_dim == decoder_embed_dim (one vector "
            f"serves as null class and mask token); got {cfg.encoder_embed_dim} and "
            f"{cfg.decoder_embed_dim}"
        )


class MAEBlock(nn.Module):
    """timm's pre-LN ViT block: x + Attn(LN(x)), then x + MLP(LN(x)) with the exact GELU;
    attention dropout on the attention weights, projection dropout after proj, fc1 and fc2."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GeluMlp(dim, int(dim * mlp_ratio), approximate="none")
        self.attn_drop, self.proj_drop = attn_drop, proj_drop

    def _attend(self, x: Tensor) -> Tensor:
        p = self.attn_drop if self.training else 0.0
        if p == 0:
            return self.attn(x)
        a = self.attn  # the same computation as Attention.forward, with dropout on the weights
        n, tokens, dim = x.shape
        q, k, v = a.qkv(x).reshape(n, tokens, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return a.proj(out.transpose(1, 2).reshape(n, tokens, dim))

    def forward(self, x: Tensor) -> Tensor:
        p = self.proj_drop if self.training else 0.0
        x = x + F.dropout(self._attend(self.norm1(x)), p)
        h = F.dropout(F.gelu(self.mlp.fc1(self.norm2(x))), p)
        return x + F.dropout(self.mlp.fc2(h), p)


class MAR(nn.Module):
    """The MAR network; see the module docstring. `condition(tokens, mask, y)` -> z (B, L, D)."""

    Config = MARConfig

    @staticmethod
    def resolve(cfg: MARConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Fill img_size, vae_stride, vae_embed_dim and class_num from the run."""
        if getattr(tokenizer, "vocab_size", None) is not None:
            raise GenzooError(
                f"model.kind=mar generates continuous tokens; tokenizer "
                f"{getattr(tokenizer, 'spec', '?')} gives token ids. Use a continuous tokenizer "
                "(pixels, kl-vae, mar-kl16)"
            )
        cfg.img_size, cfg.vae_stride = res, tokenizer.stride
        cfg.vae_embed_dim, cfg.class_num = tokenizer.channels, num_classes

    def __init__(self, cfg: MARConfig):
        super().__init__()
        check_mar_config(cfg)
        self.cfg = cfg
        self.grid_size, self.patch_size = cfg.grid_size, cfg.patch_size
        self.channels, self.token_dim = cfg.vae_embed_dim, cfg.token_dim
        self.seq_len = cfg.grid_size**2
        self.num_classes, self.buffer_size = cfg.class_num, cfg.buffer_size
        self.mask_ratio_min, self.diffusion_batch_mul = cfg.mask_ratio_min, cfg.diffusion_batch_mul
        self.objective = head_objective(cfg.head, cfg.num_sampling_steps)
        d_enc, d_dec = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        positions = self.seq_len + cfg.buffer_size  # buffers, then the tokens

        def blocks(dim: int, depth: int, heads: int) -> nn.ModuleList:
            return nn.ModuleList(
                MAEBlock(dim, heads, cfg.mlp_ratio, cfg.attn_dropout, cfg.proj_dropout)
                for _ in range(depth)
            )

        # registration order = the official state-dict order
        self.class_emb = nn.Embedding(cfg.class_num, d_enc)
        self.fake_latent = nn.Parameter(torch.zeros(1, d_enc))
        self.z_proj = nn.Linear(self.token_dim, d_enc)
        self.z_proj_ln = nn.LayerNorm(d_enc, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, positions, d_enc))
        self.encoder_blocks = blocks(d_enc, cfg.encoder_depth, cfg.encoder_num_heads)
        self.encoder_norm = nn.LayerNorm(d_enc, eps=1e-6)
        self.decoder_embed = nn.Linear(d_enc, d_dec)
        if not cfg.mask_token_is_null:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d_dec))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, positions, d_dec))
        self.decoder_blocks = blocks(d_dec, cfg.decoder_depth, cfg.decoder_num_heads)
        self.decoder_norm = nn.LayerNorm(d_dec, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, d_dec))
        self.initialize_weights()
        out = self.objective.output_channels(self.token_dim)
        head = TokenHead(self.token_dim, cfg.diffloss_w, out, d_dec, cfg.diffloss_d,
                         cfg.grad_checkpointing)  # fmt: skip
        self.diffloss = nn.ModuleDict({"net": head})
        self.drop_labels_in_forward = True  # genzoo's trainer drops labels itself and unsets it

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The official init: N(0, 0.02) for the embeddings and free vectors, Xavier-uniform
        linears with zero bias, unit LayerNorms (the head initialises itself)."""
        if self.fake_latent.is_meta:
            return
        for p in (self.class_emb.weight, self.fake_latent, self.encoder_pos_embed_learned,
                  self.decoder_pos_embed_learned, self.diffusion_pos_embed_learned):  # fmt: skip
            nn.init.normal_(p, std=0.02)
        if not self.cfg.mask_token_is_null:
            nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def head_net(self) -> TokenHead:
        return self.diffloss["net"]

    def mask_vector(self) -> Tensor:
        """The decoder's mask token (1, 1, D): its own parameter, or the null embedding."""
        if self.cfg.mask_token_is_null:
            return self.fake_latent[:, None]
        return self.mask_token

    # -- tokens ---------------------------------------------------------------------------------
    def patchify(self, latents: Tensor) -> Tensor:
        """(B, c, H, W) -> (B, L, c·p²)."""
        b, c, h, w = latents.shape
        p, g = self.patch_size, self.grid_size
        if (c, h, w) != (self.channels, g * p, g * p):
            raise GenzooError(
                f"latents of shape {tuple(latents.shape)}; this MAR takes (B, {self.channels}, "
                f"{g * p}, {g * p})"
            )
        x = latents.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """(B, L, c·p²) -> (B, c, H, W), the exact inverse of patchify."""
        b = tokens.shape[0]
        p, g, c = self.patch_size, self.grid_size, self.channels
        x = tokens.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, g * p, g * p)

    # -- conditioning ---------------------------------------------------------------------------
    def class_embedding(self, y: Tensor) -> Tensor:
        """(B, D): class_emb[y], the null embedding where y == class_num; in training (with
        drop_labels_in_forward) each swapped for the null one with probability label_drop_prob,
        drawn from the global CPU RNG as the official code draws it."""
        b, k = y.shape[0], self.num_classes
        if y.ndim != 1 or y.dtype.is_floating_point or bool(((y < 0) | (y > k)).any()):
            raise GenzooError(
                f"labels y must be (B,) integers in [0, {k}] ({k} = the null class); got "
                f"{tuple(y.shape)} {y.dtype} {y.tolist()[:8]}"
            )
        emb = self.class_emb(y.clamp(max=k - 1))
        null = y == k
        if self.training and self.drop_labels_in_forward and self.cfg.label_drop_prob > 0:
            null = null | (torch.rand(b) < self.cfg.label_drop_prob).to(y.device)
        return torch.where(null[:, None], self.fake_latent.to(emb.dtype), emb)

    def _run(self, blocks: nn.ModuleList, x: Tensor) -> Tensor:
        for block in blocks:
            if self.cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def condition(self, tokens: Tensor, mask: Tensor, y: Tensor) -> Tensor:
        """Per-token conditions z (B, L, D_dec) from tokens (B, L, Ct), mask (B, L) (1 or True
        = masked, the same count in every row) and labels y (B,) (class_num = null)."""
        b, length, _ = tokens.shape
        if tokens.shape[1:] != (self.seq_len, self.token_dim) or mask.shape != (b, length):
            raise GenzooError(
                f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)}: expected (B, "
                f"{self.seq_len}, {self.token_dim}) and (B, {self.seq_len})"
            )
        masked = mask.bool()
        counts = masked.sum(dim=1)
        if b and bool((counts != counts[0]).any()):
            raise GenzooError(
                f"every row of the mask must mask the same number of tokens (the encoder drops "
                f"them); got counts {counts.tolist()[:8]}"
            )
        if b != y.shape[0]:
            raise GenzooError(f"{y.shape[0]} labels for {b} rows of tokens")
        x = self.z_proj(tokens)
        buffers = self.class_embedding(y).to(x.dtype)[:, None].expand(b, self.buffer_size, -1)
        x = self.z_proj_ln(torch.cat([buffers, x], dim=1) + self.encoder_pos_embed_learned)
        keep = torch.cat([masked.new_zeros(b, self.buffer_size), masked], dim=1).logical_not()
        x = x[keep].reshape(b, -1, x.shape[-1])  # masked rows dropped, kept ones in order
        x = self.encoder_norm(self._run(self.encoder_blocks, x))

        x = self.decoder_embed(x)
        grid = self.mask_vector().to(x.dtype).expand(b, keep.shape[1], -1).clone()
        grid[keep] = x.reshape(-1, x.shape[-1])
        x = grid + self.decoder_pos_embed_learned
        x = self.decoder_norm(self._run(self.decoder_blocks, x))
        return x[:, self.buffer_size :] + self.diffusion_pos_embed_learned

    # -- head -----------------------------------------------------------------------------------
    def head(self, x: Tensor, t: Tensor, z: Tensor, cfg: float | None = None) -> Tensor:
        """The head's output (N, out) for rows x (N, Ct) at original indices t (N,) under
        conditions z (N, D); with `cfg` the guided form on a [cond; null] batch."""
        if cfg is None:
            return self.head_net(x, t, z)
        return self.head_net.forward_with_cfg(x, t, z, cfg)

    def head_loss(self, target: Tensor, z: Tensor, mask: Tensor | None = None,
                  t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:  # fmt: skip
        """MAR's DiffLoss: the per-token head loss of targets (N, Ct) under z (N, D), averaged
        with `mask` (N,) as weights; t and noise drawn from torch's global RNG when None."""
        loss, _ = self.objective.loss(
            lambda x_t, tt: self.head_net(x_t, tt, z), target, mask, t=t, noise=noise
        )
        return loss

    def forward(self, tokens: Tensor, mask: Tensor, y: Tensor, head_x: Tensor | None = None,
                head_t: Tensor | None = None) -> Tensor:  # fmt: skip
        """z (B, L, D); with head inputs (k·B·L rows), the head's output on them, z repeated
        k times in MAR's order (all B·L token rows, then again)."""
        z = self.condition(tokens, mask, y)
        if head_x is None:
            return z
        rows = z.reshape(-1, z.shape[-1])
        repeats, extra = divmod(head_x.shape[0], rows.shape[0])
        if extra or repeats < 1:
            raise GenzooError(
                f"head inputs have {head_x.shape[0]} rows, not a multiple of the {rows.shape[0]} "
                "token rows"
            )
        return self.head_net(head_x, head_t, rows.repeat(repeats, 1))
