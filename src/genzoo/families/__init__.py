"""Generative families: how to train (`loss`) and how to generate (`sample`).

`FAMILIES` maps each `family.kind` to its class (the contract: `genzoo.families.base`).
"""

from __future__ import annotations

from typing import Any

from genzoo.registry import Registry

FAMILIES = Registry(
    "family",
    {
        "diffusion": "genzoo.families.diffusion:GaussianDiffusion",
        "flow": "genzoo.families.flow:Flow",
        "ar": "genzoo.families.autoregressive:Autoregressive",
        "gan": "genzoo.families.gan:GAN",
        "vqgan": "genzoo.families.vqgan:VQGANTraining",
        "next-scale": "genzoo.families.next_scale:NextScale",
        "masked": "genzoo.families.masked:Masked",
        "masked-continuous": "genzoo.families.masked_continuous:MaskedContinuous",
    },
)


def build_family(run_cfg: Any, tokenizer: Any = None):
    """The family of `run_cfg` (a RunConfig, or a family config section); a family that decodes
    while it samples (next-scale) receives the run's tokenizer."""
    section = getattr(run_cfg, "family", run_cfg)
    return FAMILIES.build(section, tokenizer=tokenizer)


__all__ = ["FAMILIES", "build_family"]
