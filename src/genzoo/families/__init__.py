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
    },
)


def build_family(run_cfg: Any):
    """The family of `run_cfg` (a RunConfig, or a family config section)."""
    section = getattr(run_cfg, "family", run_cfg)
    return FAMILIES.build(section)


__all__ = ["FAMILIES", "build_family"]
