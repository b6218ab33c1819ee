"""DINOv2 ViT-L/14 features for FD-DINOv2 (Stein et al. 2023; EDM2), without torch.hub.

torch.hub fetches the dinov2 repository itself at run time, which offline machines cannot do,
so the network is defined here with the official state-dict names (patch_embed.proj, cls_token,
pos_embed, mask_token, blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}, norm) and loads `dinov2_vitl14_pretrain.pth` as is.

The feature is the final-LayerNorm CLS token (1024-d). Preprocessing follows dgm-eval and EDM2's
"pil" mode: PIL bicubic resize of the uint8 image to 224x224, /255, ImageNet mean/std. ("torch"
is EDM2's default: antialiased bicubic F.interpolate on float, nearly the same.)

At 224 the patch grid is 16x16 while the checkpoint's position embeddings are 37x37 (518 px).
DINOv2 resizes them bicubically (no antialias) with scale factor (16 + 0.1) / 37 per axis; the
0.1 offset is a historical guard against rounding that changes the sampling positions slightly,
so it is reproduced here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import GenzooError
from genzoo.metrics.resize import resize_pil_bicubic
from genzoo.metrics.weights import check_state_dict, file_sha256, load_state_dict, resolve_weights
from genzoo.nn.mlp import GeluMlp

DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
DINOV2_ENV = "GENZOO_DINOV2_WEIGHTS"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("pil", "torch")


@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 518  # training resolution: sets the stored position grid (37 x 37)
    patch_size: int = 14
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    layerscale_init: float = 1.0
    interpolate_offset: float = 0.1

    @property
    def name(self) -> str:
        known = {(384, 12): "ViT-S", (768, 12): "ViT-B", (1024, 24): "ViT-L", (1536, 40): "ViT-g"}
        arch = known.get((self.dim, self.depth), f"ViT(dim {self.dim}, depth {self.depth})")
        return f"{arch}/{self.patch_size}"


VIT_L14 = ViTConfig()
HEAD_DIM = 64  # every DINOv2 model uses 64-d attention heads


def infer_config(state: dict[str, torch.Tensor], path: Path) -> ViTConfig:
    """The ViT configuration a DINOv2-layout state dict was saved from."""
    try:
        dim = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        grid = math.isqrt(state["pos_embed"].shape[1] - 1)
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise GenzooError(
            f"{path}: not DINOv2 ViT weights (missing {e}); expected the layout of "
            f"{DINOV2_URL.rsplit('/', 1)[-1]}"
        ) from e
    return ViTConfig(
        img_size=grid * patch,
        patch_size=patch,
        dim=dim,
        depth=depth,
        heads=max(1, dim // HEAD_DIM),
        mlp_ratio=hidden / dim,
    )


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg.dim, cfg.heads)
        self.ls1 = LayerScale(cfg.dim, cfg.layerscale_init)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = GeluMlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio), approximate="none")
        self.ls2 = LayerScale(cfg.dim, cfg.layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone; forward(normalised float NCHW) -> final-norm CLS token [N, dim]."""

    def __init__(self, cfg: ViTConfig = VIT_L14):
        super().__init__()
        self.cfg = cfg
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.dim))  # unused; kept for strict loading
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a height x width patch grid (DINOv2's interpolation rule)."""
        stored = self.pos_embed.shape[1] - 1
        side = int(math.sqrt(stored))
        if height * width == stored and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        offset = self.cfg.interpolate_offset
        if offset:
            scale = ((height + offset) / side, (width + offset) / side)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        else:
            grid = F.interpolate(grid, size=(height, width), mode="bicubic", antialias=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, height * width, -1)
        return torch.cat([pos[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(x.shape[2] // p, x.shape[3] // p)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def preprocess(images: np.ndarray, resize: str = "pil") -> torch.Tensor:
    """uint8 NHWC -> float NCHW at 224x224, ImageNet-normalised."""
    if resize == "pil":
        x = torch.from_numpy(resize_pil_bicubic(images, (INPUT_SIZE, INPUT_SIZE)))
        x = x.permute(0, 3, 1, 2).to(torch.float32)
    elif resize == "torch":
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True)
    else:
        raise GenzooError(
            f"unknown DINOv2 resize {resize!r}; choose one of {', '.join(RESIZE_MODES)}"
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


class DinoFeatures(nn.Module):
    """uint8 NHWC images -> DINOv2 CLS features [N, dim] (float32).

    The architecture is read from the weights (FD-DINOv2 uses ViT-L/14, recorded in `describe`).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        config: ViTConfig | None = None,
        resize: str = "pil",
        allow_download: bool = True,
    ):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise GenzooError(f"unknown DINOv2 resize {resize!r}; choose one of {RESIZE_MODES}")
        path = resolve_weights(
            weights,
            env_var=DINOV2_ENV,
            url=DINOV2_URL,
            what="DINOv2 ViT-L/14",
            option="--dinov2-weights",
            allow_download=allow_download,
        )
        state = load_state_dict(path, "DINOv2")
        config = config or infer_config(state, path)
        self.net = DinoVisionTransformer(config)
        check_state_dict(state, self.net.state_dict(), path, f"DINOv2 {config.name}", optional=())
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False)
        self.weights_path = path
        self.weights_sha256 = file_sha256(path)
        self.resize = resize

    @property
    def dim(self) -> int:
        return self.net.cfg.dim

    def describe(self) -> dict:
        return {
            "name": f"dinov2 {self.net.cfg.name} (CLS token after the final norm)",
            "weights": str(self.weights_path),
            "weights_sha256": self.weights_sha256,
            "input_resize": f"{self.resize} bicubic to {INPUT_SIZE}x{INPUT_SIZE}",
            "normalisation": "ImageNet mean/std",
        }

    @torch.inference_mode()
    def forward(self, images: np.ndarray) -> torch.Tensor:
        device = self.net.cls_token.device
        x = preprocess(images, self.resize).to(device)
        return self.net(x).float()
