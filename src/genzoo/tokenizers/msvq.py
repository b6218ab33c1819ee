"""`msvq`: VAR's multi-scale residual VQ-VAE (Tian et al. 2024, arXiv 2404.02905).

An image becomes K token maps of growing side p_0 < … < p_{K−1} over one shared codebook. The
encoder's latent f is explained coarse to fine: at scale k the residual r is area-averaged to
p_k × p_k, each cell takes its nearest codebook row, and the rows, bicubic-upsampled to the
latent size and refined by a convolution φ_k, are added to f̂ and taken off r. Decoding sums
the same contributions from the ids and decodes f̂. The state dict is the official `VQVAE`'s
(keys, order, shapes), and the numerics follow the official code operation by operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import GenzooError
from genzoo.tokenizers.base import Generators, Tokenizer
from genzoo.tokenizers.msvq_trunk import CH_MULT, Decoder, Encoder

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
PATCH_NUMS_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
ScaleIds = Sequence[torch.Tensor] | torch.Tensor


class Phi(nn.Conv2d):
    """φ(h) = (1 − ratio)·h + ratio·conv3×3(h): the refinement of an upsampled code map."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


def phi_ticks(n: int) -> np.ndarray:
    """Where φ convolution i sits on [0, 1], in float64 as the official code computes it (the
    rounding decides the ties): 4 of them at 1/12 … 11/12, n others at 1/(2n) … 1 − 1/(2n)."""
    if n == 4:
        return np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n)
    return np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)


class PhiBank(nn.Module):
    """The φ convolutions and which one serves each scale (official `share_quant_resi`):
    1: one φ for all scales (`qresi`); n ≥ 2: n φ's (`qresi_ls.{i}`); 0: one per scale
    (`{k}`, `count` of them). Scale k of K uses the φ whose tick is nearest to k/(K−1)."""

    def __init__(self, channels: int, ratio: float, share: int, count: int):
        super().__init__()
        n = 1 if share == 1 else share or count
        self.phis = [Phi(channels, ratio) if abs(ratio) > 1e-6 else nn.Identity() for _ in range(n)]
        if share == 1:
            self.qresi = self.phis[0]
        elif share >= 2:
            self.qresi_ls = nn.ModuleList(self.phis)
        else:
            for i, phi in enumerate(self.phis):
                self.add_module(str(i), phi)
        self.ticks = phi_ticks(n)

    def index(self, scale: int, num_scales: int) -> int:
        if len(self.phis) == 1:
            return 0
        return int(np.argmin(np.abs(self.ticks - scale / (num_scales - 1))))  # first min wins

    def forward(self, h: torch.Tensor, scale: int, num_scales: int) -> torch.Tensor:
        return self.phis[self.index(scale, num_scales)](h)


@dataclass
class MSVQConfig:
    """The official `VQVAE` constructor arguments (defaults: the released
    `vae_ch160v4096z32.pth`), plus `source`, a weights file to load."""

    kind: ClassVar[str] = "msvq"

    source: str = ""
    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    beta: float = 0.25  # commitment weight, used only when training a VQ-VAE
    using_znorm: bool = False
    quant_conv_ks: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    default_qresi_counts: int = 0
    v_patch_nums: tuple[int, ...] = PATCH_NUMS_256


def check_msvq_config(cfg: MSVQConfig) -> None:
    """GenzooError naming the first field that cannot build the multi-scale VQ-VAE."""
    for name in ("vocab_size", "z_channels", "ch", "quant_conv_ks"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenzooError(f"tokenizer.{name} must be a positive integer, got {value!r}")
    nums = tuple(cfg.v_patch_nums)
    increasing = len(nums) >= 2 and min(nums) >= 1 and list(nums) == sorted(set(nums))
    rules = [
        (cfg.ch % 32 == 0, f"ch={cfg.ch} must be a multiple of 32 (GroupNorm with 32 groups)"),
        (cfg.quant_conv_ks % 2 == 1, f"quant_conv_ks={cfg.quant_conv_ks} must be odd"),
        (cfg.share_quant_resi >= 0, f"share_quant_resi={cfg.share_quant_resi} must be >= 0"),
        (cfg.default_qresi_counts >= 0, "default_qresi_counts must be >= 0"),
        (increasing, f"v_patch_nums={nums} must be >= 2 increasing sides, e.g. {PATCH_NUMS_256}"),
    ]
    for ok, message in rules:
        if not ok:
            raise GenzooError(f"tokenizer.{message}")


class MultiScaleVQTokenizer(Tokenizer):
    """Images in [−1, 1] <-> K per-scale id maps (B, p_k²), flattened row-major, coarse first."""

    Config = MSVQConfig
    discrete = True

    @classmethod
    def from_config(cls, cfg: MSVQConfig) -> MultiScaleVQTokenizer:
        """From `source`: a VQ-VAE weights file (built with the section's constructor fields)
        or a genzoo run directory that trained one (its EMA weights)."""
        if not cfg.source:
            raise GenzooError(
                "tokenizer 'msvq' needs a source: msvq:FILE (VQ-VAE weights, e.g. "
                "vae_ch160v4096z32.pth) or msvq:RUN_DIR (a run that trained one)"
            )
        from pathlib import Path

        if Path(cfg.source).expanduser().is_dir():
            from genzoo.tokenizers.msvq_model import tokenizer_from_run

            return tokenizer_from_run(cfg)
        from genzoo.zoo.var import load_var_vqvae

        args = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "source"}
        return load_var_vqvae(cfg.source, device="cpu", **args)

    def __init__(self, cfg: MSVQConfig | None = None):
        super().__init__()
        cfg = cfg or MSVQConfig()
        check_msvq_config(cfg)
        self.cfg = cfg
        self.spec = f"msvq:{cfg.source}" if cfg.source else "msvq"
        self.stride = 2 ** (len(CH_MULT) - 1)
        self.channels = cfg.z_channels
        self.scale = 1.0
        self.vocab_size = cfg.vocab_size
        self.patch_nums = tuple(int(p) for p in cfg.v_patch_nums)
        self.num_scales = len(self.patch_nums)  # K
        self.num_tokens = sum(p * p for p in self.patch_nums)  # L
        k, cv, ks = len(self.patch_nums), cfg.z_channels, cfg.quant_conv_ks
        # registration order = the official state-dict order
        self.encoder = Encoder(cfg.ch, cv)
        self.decoder = Decoder(cfg.ch, cv)
        # the shared codebook, the φ bank and a per-scale usage statistic (training only)
        self.quantize = nn.Module()
        self.quantize.register_buffer("ema_vocab_hit_SV", torch.zeros(k, cfg.vocab_size))
        count = cfg.default_qresi_counts or k
        self.quantize.quant_resi = PhiBank(cv, cfg.quant_resi, cfg.share_quant_resi, count)
        self.quantize.embedding = nn.Embedding(cfg.vocab_size, cv)
        self.quant_conv = nn.Conv2d(cv, cv, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(cv, cv, ks, padding=ks // 2)
        self.freeze()

    def split_scales(self, ids: ScaleIds) -> list[torch.Tensor]:
        """Per-scale ids as a list of (B, p_k²) long tensors, from that list, from maps
        (B, p_k, p_k), or from their concatenation (B, L); checked against the codebook."""
        sizes = [p * p for p in self.patch_nums]
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 2 or ids.shape[1] != self.num_tokens:
                raise GenzooError(
                    f"token ids of shape {tuple(ids.shape)}: expected (B, {self.num_tokens}) "
                    f"(the scales {self.patch_nums} concatenated) or a list of (B, p_k²) maps"
                )
            ids = ids.split(sizes, dim=1)
        ids = [torch.as_tensor(t) for t in ids]
        if len(ids) != self.num_scales or len({t.shape[0] if t.ndim else -1 for t in ids}) != 1:
            raise GenzooError(
                f"got {len(ids)} token maps of shapes {[tuple(t.shape) for t in ids]}; expected "
                f"{self.num_scales} maps (B, p_k²) of one batch size, scales {self.patch_nums}"
            )
        for k, (t, size) in enumerate(zip(ids, sizes)):
            bad_shape = t.is_floating_point() or t.ndim not in (2, 3) or t[0].numel() != size
            if bad_shape or (t.numel() and not 0 <= int(t.min()) <= int(t.max()) < self.vocab_size):
                raise GenzooError(
                    f"token map of scale {k} (shape {tuple(t.shape)}, {t.dtype}): expected "
                    f"integer ids (B, {size}) in [0, {self.vocab_size}), the codebook's rows"
                )
        device = self.quantize.embedding.weight.device
        return [t.reshape(t.shape[0], size).long().to(device) for t, size in zip(ids, sizes)]

    def code_map(self, ids: torch.Tensor, scale: int) -> torch.Tensor:
        """Codebook rows of scale k's ids (B, p_k²) as a (B, Cv, p_k, p_k) map."""
        p = self.patch_nums[scale]
        return self.quantize.embedding(ids).transpose(1, 2).reshape(ids.shape[0], -1, p, p)

    def scale_contribution(
        self, h: torch.Tensor, scale: int, contiguous: bool = False
    ) -> torch.Tensor:
        """φ_k(bicubic upsampling of code map h to the latent size); no resize at the last scale.
        (`contiguous`: the encoder's memory layout before φ, as the official code has it.)"""
        if scale != self.num_scales - 1:
            side = self.patch_nums[-1]
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        return self.quantize.quant_resi(h.contiguous() if contiguous else h, scale, self.num_scales)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: Generators = None) -> list[torch.Tensor]:
        """Images (B, 3, H, W) in [−1, 1] -> [ids of scale k (B, p_k²) for k < K]."""
        side = self.stride * self.patch_nums[-1]
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (side, side):
            raise GenzooError(
                f"images of shape {tuple(x.shape)}: this tokenizer (scales {self.patch_nums}) "
                f"codes (B, 3, {side}, {side}) images in [-1, 1]"
            )
        rest, ids = self.quant_conv(self.encoder(x.to(self.quant_conv.weight))), []
        for k in range(self.num_scales):
            idx = self.nearest_codes(rest, k)
            rest.sub_(self.scale_contribution(self.code_map(idx, k), k, contiguous=True))
            ids.append(idx)
        return ids

    @torch.no_grad()
    def nearest_codes(self, rest: torch.Tensor, scale: int) -> torch.Tensor:
        """Ids (B, p_k²) of the codebook rows nearest to the rest area-averaged to scale k."""
        p, codebook = self.patch_nums[scale], self.quantize.embedding.weight
        last = scale == self.num_scales - 1
        z = rest if last else F.interpolate(rest, size=(p, p), mode="area")
        z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if self.cfg.using_znorm:  # cosine similarity
            idx = torch.argmax(F.normalize(z, dim=-1) @ F.normalize(codebook.T, dim=0), dim=1)
        else:  # squared distance |z|² + |e|² − 2 z·e, in the official operation order
            dist = z.square().sum(1, keepdim=True) + codebook.square().sum(1)
            idx = torch.argmin(dist.addmm_(z, codebook.T, alpha=-2, beta=1), dim=1)
        return idx.reshape(rest.shape[0], p * p)

    def ids_to_fhat(self, ids: ScaleIds) -> torch.Tensor:
        """f̂ = Σ_k φ_k(upsampled code map of scale k), (B, Cv, p_K, p_K)."""
        ids = self.split_scales(ids)
        f_hat = self.empty_fhat(ids[0].shape[0])
        for k, idx in enumerate(ids):
            f_hat.add_(self.scale_contribution(self.code_map(idx, k), k))
        return f_hat

    def empty_fhat(self, batch: int) -> torch.Tensor:
        side, device = self.patch_nums[-1], self.quant_conv.weight.device
        return torch.zeros(batch, self.channels, side, side, device=device)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    @torch.no_grad()
    def decode(self, ids: ScaleIds) -> torch.Tensor:
        """Per-scale ids (list, or (B, L) concatenated) -> images (B, 3, H, W) in [−1, 1]."""
        return self.fhat_to_img(self.ids_to_fhat(ids))

    @torch.no_grad()
    def var_input(self, ids: ScaleIds) -> torch.Tensor:
        """Teacher-forcing input of the VAR transformer (B, L − p_0², Cv), float32: after adding
        scale k's contribution to f̂, f̂ area-averaged to p_{k+1} × p_{k+1}, for k < K − 1.
        The last scale's ids are never used (they are only targets)."""
        ids = self.split_scales(ids)
        f_hat, pieces = self.empty_fhat(ids[0].shape[0]), []
        for k in range(self.num_scales - 1):
            nxt = self.next_input(k, f_hat, self.code_map(ids[k], k))
            pieces.append(nxt.flatten(2).transpose(1, 2))
        return torch.cat(pieces, dim=1).float()

    def next_input(self, scale: int, f_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Add code map h (B, Cv, p_k, p_k) of scale k to f̂ in place; return the next scale's
        input map, f̂ area-averaged to p_{k+1} × p_{k+1} (f̂ itself after the last scale)."""
        f_hat.add_(self.scale_contribution(h, scale))
        if scale == self.num_scales - 1:
            return f_hat
        p = self.patch_nums[scale + 1]
        return F.interpolate(f_hat, size=(p, p), mode="area")
