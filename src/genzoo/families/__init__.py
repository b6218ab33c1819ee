"""Generative families: how to train (`loss`) and how to generate (`sample`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genzoo.errors import GenzooError

if TYPE_CHECKING:  # genzoo.config imports this package's config dataclasses
    from genzoo.config import RunConfig
    from genzoo.families.diffusion import GaussianDiffusion
    from genzoo.families.flow import Flow

FAMILIES = ("diffusion", "flow")


def build_family(run_cfg: RunConfig) -> GaussianDiffusion | Flow:
    """The family named by `run_cfg.family`, configured from its section of the run config."""
    if run_cfg.family == "diffusion":
        from genzoo.families.diffusion import GaussianDiffusion

        return GaussianDiffusion(run_cfg.diffusion)
    if run_cfg.family == "flow":
        from genzoo.families.flow import Flow

        return Flow(run_cfg.flow)
    raise GenzooError(
        f"unknown family {run_cfg.family!r}; choose one of: {', '.join(FAMILIES)} (set family=...)"
    )


__all__ = ["FAMILIES", "build_family"]
