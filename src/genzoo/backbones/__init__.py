"""Backbones: networks that map (x, t, y) to a prediction of the same spatial size."""

from __future__ import annotations

from torch import nn

from genzoo.backbones.dit import DiT, DiTConfig, check_dit_config
from genzoo.errors import GenzooError

__all__ = ["DiT", "DiTConfig", "build_backbone", "check_dit_config"]


def build_backbone(cfg: DiTConfig) -> nn.Module:
    """The network described by `cfg` (validated first; errors name the offending field)."""
    if not isinstance(cfg, DiTConfig):
        raise GenzooError(f"build_backbone expects a DiTConfig, got {type(cfg).__name__}")
    check_dit_config(cfg)
    return DiT(cfg)
