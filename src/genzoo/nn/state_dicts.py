"""Comparing a state dict with the one a module expects: one wording for every loader."""

from __future__ import annotations

from collections.abc import Mapping

import torch

Shapes = Mapping[str, tuple[int, ...]]


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def state_dict_problems(
    expected: Shapes, found: Shapes, *, optional: tuple[str, ...] = (), shown: int = 8
) -> list[str]:
    """Missing, unexpected and mis-shaped keys, one line each; empty when `found` fits.

    Keys of `expected` ending in one of `optional` may be absent (e.g. BatchNorm's
    num_batches_tracked, which older files lack).
    """

    def listed(keys: list[str]) -> str:
        more = f", … and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    missing = [k for k in expected if k not in found and not (optional and k.endswith(optional))]
    unexpected = [k for k in found if k not in expected]
    misshaped = [
        f"{k}: file {list(found[k])} vs model {list(expected[k])}"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {listed(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys ({len(misshaped)}): {listed(misshaped)}")
    return problems
