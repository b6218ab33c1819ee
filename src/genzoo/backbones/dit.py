"""DiT (Peebles & Xie 2023) with optional LightningDiT / DiMR switches.

With the default switches the module is the official DiT: its state dict has the official key
names, order and shapes, so released checkpoints load strictly without renaming, and its
numerics follow the official code (see genzoo.nn.embeddings). The switches replace one part
each:

    time_cond="tdln"  DiMR's time-dependent LayerNorm instead of adaLN-Zero (genzoo.nn.tdln):
                      no timestep MLP and no modulation MLPs; the class embedding enters as an
                      extra in-context token in front of the patch tokens, as in DiMR
    norm="rmsnorm"    RMSNorm (learned weight, LightningDiT) instead of LayerNorm without affine
    mlp="swiglu"      SwiGLU with hidden int(2/3·int(D·mlp_ratio)) instead of the tanh-GELU MLP
    pos="rope"        2-D axial RoPE on q and k instead of the absolute sin-cos table
    qk_norm=True      per-head RMSNorm on q and k
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from genzoo.errors import GenzooError
from genzoo.nn.attention import Attention
from genzoo.nn.embeddings import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_pos_embed_2d
from genzoo.nn.mlp import MLPS, make_mlp
from genzoo.nn.modulation import adaln_modulation, modulate
from genzoo.nn.norms import NORMS, make_norm
from genzoo.nn.rope import AxialRoPE
from genzoo.nn.tdln import TimeDependentNorm

TIME_CONDS = ("adaln", "tdln")
POSITIONS = ("sincos", "rope")


@dataclass
class DiTConfig:
    """Official DiT constructor arguments, plus switches that default to the official layout."""

    kind: ClassVar[str] = "dit"

    input_size: int = 32  # latent (or pixel) side
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    # switches (official DiT: adaln / layernorm / gelu / sincos / no qk-norm)
    time_cond: str = "adaln"  # "adaln" | "tdln" (DiMR time-dependent LayerNorm)
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" (tanh approx.) | "swiglu"
    pos: str = "sincos"  # "sincos" (absolute table) | "rope" (2-D rotary)
    qk_norm: bool = False
    # TD-LN reads the time as s = t·tdln_time_scale: use 1/1000 when t is a diffusion index in
    # [0, 1000) (DiT) and 1 when t lies in [0, 1] (SiT), so that sigmoid(w·s + b) does not saturate.
    tdln_time_scale: float = 1.0


def check_dit_config(cfg: DiTConfig) -> None:
    """Raise GenzooError naming the first field that cannot build a DiT."""
    choices = {"time_cond": TIME_CONDS, "norm": NORMS, "mlp": MLPS, "pos": POSITIONS}
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise GenzooError(
                f"model.{name}={value!r} is not a known choice; use one of {', '.join(allowed)}"
            )
    for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads"):
        if int(getattr(cfg, name)) < 1:
            raise GenzooError(f"model.{name} must be a positive integer, got {getattr(cfg, name)}")
    if cfg.num_classes < 1:
        raise GenzooError(f"model.num_classes must be at least 1, got {cfg.num_classes}")
    if cfg.input_size % cfg.patch_size:
        raise GenzooError(
            f"model.input_size={cfg.input_size} is not divisible by model.patch_size="
            f"{cfg.patch_size}: the patches must tile the input; pick an input size that is a "
            f"multiple of {cfg.patch_size} or another patch size"
        )
    if cfg.hidden_size % cfg.num_heads:
        raise GenzooError(
            f"model.hidden_size={cfg.hidden_size} is not divisible by model.num_heads="
            f"{cfg.num_heads}; pick a head count that divides the hidden size"
        )
    if cfg.pos == "sincos" and cfg.hidden_size % 4:
        raise GenzooError(
            f"model.hidden_size={cfg.hidden_size} must be a multiple of 4 for the 2-D sin-cos "
            "position table"
        )
    head_dim = cfg.hidden_size // cfg.num_heads
    if cfg.pos == "rope" and head_dim % 4:
        raise GenzooError(
            f"model.pos='rope' needs a head dimension divisible by 4; hidden_size/num_heads = "
            f"{cfg.hidden_size}/{cfg.num_heads} = {head_dim}"
        )
    if not 0 <= cfg.class_dropout_prob < 1:
        raise GenzooError(
            f"model.class_dropout_prob must lie in [0, 1), got {cfg.class_dropout_prob}"
        )
    if cfg.mlp_ratio <= 0:
        raise GenzooError(f"model.mlp_ratio must be positive, got {cfg.mlp_ratio}")


def adaln_norm(cfg: DiTConfig) -> nn.Module:
    """The norm before an adaLN modulation: DiT's LayerNorm has no affine parameters;
    LightningDiT's RMSNorm keeps its learned weight."""
    return make_norm(cfg.norm, cfg.hidden_size, affine=cfg.norm == "rmsnorm")


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gate·Attn(mod(norm(x))); x += gate·MLP(mod(norm(x)))."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = adaln_norm(cfg)
        self.attn = Attention(d, cfg.num_heads, qk_norm=cfg.qk_norm)
        self.norm2 = adaln_norm(cfg)
        self.mlp = make_mlp(cfg.mlp, d, cfg.mlp_ratio)
        self.adaLN_modulation = adaln_modulation(d, 6)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: nn.Module | None) -> torch.Tensor:
        modulation = self.adaLN_modulation(c).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        x = x + gate_msa.unsqueeze(1) * self.attn(h, rope)
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(h)
        return x


class TDLNBlock(nn.Module):
    """DiMR-style block: x += Attn(TD-LN(x, s)); x += MLP(TD-LN(x, s)); no gates."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = TimeDependentNorm(d, cfg.norm)
        self.attn = Attention(d, cfg.num_heads, qk_norm=cfg.qk_norm)
        self.norm2 = TimeDependentNorm(d, cfg.norm)
        self.mlp = make_mlp(cfg.mlp, d, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor, s: torch.Tensor, rope: nn.Module | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x, s), rope)
        x = x + self.mlp(self.norm2(x, s))
        return x


class FinalLayer(nn.Module):
    """norm -> modulate(shift, scale) from c -> Linear(D, p·p·C_out)."""

    def __init__(self, cfg: DiTConfig, out_features: int):
        super().__init__()
        d = cfg.hidden_size
        self.norm_final = adaln_norm(cfg)
        self.linear = nn.Linear(d, out_features)
        self.adaLN_modulation = adaln_modulation(d, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class TDLNFinalLayer(nn.Module):
    """TD-LN -> Linear(D, p·p·C_out)."""

    def __init__(self, cfg: DiTConfig, out_features: int):
        super().__init__()
        self.norm_final = TimeDependentNorm(cfg.hidden_size, cfg.norm)
        self.linear = nn.Linear(cfg.hidden_size, out_features)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x, s))


CondTransform = Callable[[torch.Tensor], torch.Tensor]


class DiT(nn.Module):
    """Diffusion transformer on p×p patches of a C×S×S input, conditioned on time and class.

    forward(x (N, C, S, S), t (N,), y (N,) long) -> (N, C_out, S, S), C_out = 2C with learned
    sigma ([eps or velocity, variance parameter]), else C. In training mode labels are dropped
    to the null class `num_classes` with probability `class_dropout_prob`; call `eval()` for
    deterministic outputs.
    """

    Config = DiTConfig

    @staticmethod
    def resolve(cfg: DiTConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """Fill the sizes that follow from the data, tokenizer and family; check they fit."""
        stride = tokenizer.stride
        if res % (cfg.patch_size * stride):
            raise GenzooError(
                f"resolution {res} is not divisible by patch size {cfg.patch_size} × tokenizer "
                f"stride {stride} = {cfg.patch_size * stride}; pick --res as a multiple of "
                f"{cfg.patch_size * stride} or another preset/patch size"
            )
        cfg.input_size = res // stride
        cfg.in_channels = tokenizer.channels
        cfg.num_classes = num_classes
        cfg.learn_sigma = bool(getattr(family, "learns_sigma", False))
        if cfg.time_cond == "tdln":  # TD-LN reads time in [0, 1]; diffusion feeds indices
            cfg.tdln_time_scale = float(getattr(family, "time_scale", 1.0))

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        check_dit_config(cfg)
        self.cfg = cfg
        self.in_channels = cfg.in_channels
        self.out_channels = 2 * cfg.in_channels if cfg.learn_sigma else cfg.in_channels
        # The official SiT forward returns only the first C of its 2C channels.
        self.returned_channels: int | None = None
        self.patch_size = cfg.patch_size
        self.grid_size = cfg.input_size // cfg.patch_size
        d, tokens = cfg.hidden_size, self.grid_size**2
        adaln = cfg.time_cond == "adaln"

        # A parameter (not a buffer) that never trains: this is how the official state dict
        # carries the fixed table, and why the released checkpoints contain it.
        if cfg.pos == "sincos":
            self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d), requires_grad=False)
        else:
            self.register_parameter("pos_embed", None)
        self.x_embedder = PatchEmbed(cfg.in_channels, d, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(d) if adaln else None
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob)
        block = DiTBlock if adaln else TDLNBlock
        self.blocks = nn.ModuleList([block(cfg) for _ in range(cfg.depth)])
        final = FinalLayer if adaln else TDLNFinalLayer
        self.final_layer = final(cfg, cfg.patch_size**2 * self.out_channels)
        self.rope = AxialRoPE(d // cfg.num_heads, self.grid_size) if cfg.pos == "rope" else None
        # The training loop draws label dropout from its own seeded generators (exact resume,
        # same update on any number of processes) and turns the global-RNG draw here off.
        self.drop_labels_in_forward = True
        self.initialize_weights()

    @property
    def null_label(self) -> int | None:
        """The label of the unconditional (null) class, or None if the table has no null row."""
        return self.cfg.num_classes if self.cfg.class_dropout_prob > 0 else None

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The official initialisation: xavier-uniform linears with zero bias, the patch conv
        initialised like a linear, normal(0.02) label table and timestep MLP, and zeros for
        every adaLN modulation and the final linear, so the network starts as the identity
        on each residual path and outputs zeros."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.pos_embed is not None:
            table = sincos_pos_embed_2d(self.cfg.hidden_size, self.grid_size)
            self.pos_embed.copy_(torch.from_numpy(table).float().unsqueeze(0))
        conv = self.x_embedder.proj
        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.zeros_(conv.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        if self.t_embedder is not None:
            nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for module in [*self.blocks, self.final_layer]:
            if hasattr(module, "adaLN_modulation"):
                nn.init.zeros_(module.adaLN_modulation[-1].weight)
                nn.init.zeros_(module.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, G·G, p·p·C) -> (N, C, G·p, G·p); each token's features are ordered
        (row in patch, column in patch, channel), channel fastest."""
        n, g, p, c = x.shape[0], self.grid_size, self.patch_size, self.out_channels
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cond_transform: CondTransform | None = None,
    ) -> torch.Tensor:
        """`cond_transform(c)` may replace the condition embedding c (N, D) before the blocks
        (condition-embedding guidance such as CADS). c = t_embedder(t) + y_embedder(y) under
        adaLN; under TD-LN, c = y_embedder(y), the in-context class token."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        tokens = self.x_embedder(x)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        c = self.y_embedder(y, self.training and self.drop_labels_in_forward)
        if self.t_embedder is not None:
            c = self.t_embedder(t) + c
        if cond_transform is not None:
            c = cond_transform(c)

        if self.t_embedder is not None:  # adaLN-Zero
            for block in self.blocks:
                tokens = block(tokens, c, self.rope)
            tokens = self.final_layer(tokens, c)
        else:  # TD-LN: time through every norm, class as a leading token
            s = t.float() * self.cfg.tdln_time_scale
            tokens = torch.cat([c.unsqueeze(1).to(tokens.dtype), tokens], dim=1)
            for block in self.blocks:
                tokens = block(tokens, s, self.rope)
            tokens = self.final_layer(tokens[:, 1:], s)
        out = self.unpatchify(tokens)
        return out if self.returned_channels is None else out[:, : self.returned_channels]
