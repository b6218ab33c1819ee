"""Backbones: the networks a family trains. `BACKBONES` maps each `model.kind` to its class.

Each class has `Config` (its typed settings), is built as `Class(cfg)`, and has
`resolve(cfg, *, res, tokenizer, num_classes, family)`, which fills the sizes that follow from
the data, the tokenizer and the family before the network is built.
"""

from __future__ import annotations

from torch import nn

from genzoo.backbones.dit import DiT, DiTConfig, check_dit_config
from genzoo.registry import Registry

BACKBONES = Registry(
    "model",
    {
        "dit": "genzoo.backbones.dit:DiT",
        "gpt": "genzoo.backbones.gpt:GPT",
        "rar": "genzoo.backbones.rar:RAR",
        "biggan": "genzoo.backbones.biggan:BigGAN",
        "biggan-deep": "genzoo.backbones.biggan_deep:BigGANDeep",
        "vq": "genzoo.tokenizers.vq_model:VQModel",
        "var": "genzoo.backbones.var:VAR",
        "msvq": "genzoo.tokenizers.msvq_model:MSVQModel",
        "maskgit": "genzoo.backbones.maskgit:MaskGIT",
        "mar": "genzoo.backbones.mar:MAR",
    },
)

__all__ = ["BACKBONES", "DiT", "DiTConfig", "build_backbone", "check_dit_config"]


def build_backbone(cfg) -> nn.Module:
    """The network described by model section `cfg` (validated first; errors name the field)."""
    return BACKBONES.build(cfg)
