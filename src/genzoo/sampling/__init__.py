"""Solvers and guidance, independent of any backbone: solvers call a predictor f(x, t, y)."""

from __future__ import annotations

from genzoo.errors import GenzooError
from genzoo.sampling.guidance import ClassifierFreeGuidance, Predictor

# The samplers each family can run, by name.
SAMPLERS: dict[str, tuple[str, ...]] = {
    "diffusion": ("ddpm", "ddim"),
    "flow": ("euler", "heun", "euler-maruyama"),
}


def check_sampler(family: str, sampler: str) -> str:
    """`sampler` if the family can run it, else a GenzooError listing the valid ones."""
    valid = SAMPLERS.get(family)
    if valid is None:
        raise GenzooError(f"unknown family {family!r}; known families: {', '.join(SAMPLERS)}")
    if sampler not in valid:
        raise GenzooError(
            f"sampler {sampler!r} is not available for the {family} family; "
            f"choose one of: {', '.join(valid)}"
        )
    return sampler


def check_options(sampler: str, options: dict[str, object], allowed: tuple[str, ...]) -> None:
    """Reject sampler options the sampler does not know (a typo would otherwise be ignored)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise GenzooError(
            f"unknown option {unknown[0]!r} for sampler {sampler!r}; its options are: {known}"
        )


__all__ = ["SAMPLERS", "ClassifierFreeGuidance", "Predictor", "check_options", "check_sampler"]
