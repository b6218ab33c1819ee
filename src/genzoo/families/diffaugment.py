"""DiffAugment (Zhao et al. 2020): differentiable augmentations of everything D sees.

A policy is a comma-separated list of groups, applied in the order written:

    color        brightness x + (u − ½); saturation (x − m_c)·2u + m_c with m_c the mean over
                 channels; contrast (x − m)·(u + ½) + m with m the mean over C, H, W
    translation  shift by integers in [−s, s] (s = int(⅛·size + ½)) per sample, zeros shifting in
    cutout       zero a square of side int(½·size + ½) at a random centre, in every channel

Each u is a fresh uniform draw per sample. The draws follow the official code's order and
shapes, so with `generator=None` (torch's global RNG, on the images' device) seeding right
before the call reproduces its result; with a generator, the draws come from it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError


def _rand(x: Tensor, generator: torch.Generator | None) -> Tensor:
    shape = (x.shape[0], 1, 1, 1)
    if generator is None:
        return torch.rand(shape, dtype=x.dtype, device=x.device)
    return torch.rand(shape, dtype=x.dtype, generator=generator, device=generator.device).to(
        x.device
    )


def _randint(low: int, high: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    shape = (x.shape[0], 1, 1)
    if generator is None:
        return torch.randint(low, high, shape, device=x.device)
    return torch.randint(low, high, shape, generator=generator, device=generator.device).to(
        x.device
    )


def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    return x + (_rand(x, generator) - 0.5)


def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, generator) * 2) + mean


def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, generator) + 0.5) + mean


def _grids(n: int, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return torch.meshgrid(
        torch.arange(n, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )


def translation(
    x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125
) -> Tensor:
    n, _, h, w = x.shape
    shift_x, shift_y = int(h * ratio + 0.5), int(w * ratio + 0.5)
    offset_x = _randint(-shift_x, shift_x + 1, x, generator)
    offset_y = _randint(-shift_y, shift_y + 1, x, generator)
    batch, rows, cols = _grids(n, h, w, x.device)
    # Gather from the image padded by one zero pixel: indices past the edge land on the pad.
    rows = torch.clamp(rows + offset_x + 1, 0, h + 1)
    cols = torch.clamp(cols + offset_y + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    n, _, h, w = x.shape
    size_x, size_y = int(h * ratio + 0.5), int(w * ratio + 0.5)
    offset_x = _randint(0, h + (1 - size_x % 2), x, generator)
    offset_y = _randint(0, w + (1 - size_y % 2), x, generator)
    batch, rows, cols = _grids(n, size_x, size_y, x.device)
    rows = torch.clamp(rows + offset_x - size_x // 2, min=0, max=h - 1)
    cols = torch.clamp(cols + offset_y - size_y // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


Augmentation = Callable[[Tensor, torch.Generator | None], Tensor]
POLICIES: dict[str, tuple[Augmentation, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> list[str]:
    """'color,translation' -> ['color', 'translation']; '' -> [] (no augmentation)."""
    groups = [p.strip() for p in str(policy).split(",") if p.strip()]
    unknown = [p for p in groups if p not in POLICIES]
    if unknown:
        raise GenzooError(
            f"unknown DiffAugment policy {unknown[0]!r} in {policy!r}; use a comma-separated "
            f"list of {', '.join(POLICIES)} (e.g. 'color,translation,cutout'), or '' for none"
        )
    return groups


def diff_augment(
    x: Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None
) -> Tensor:
    """Augment NCHW images x by `policy`; each sample draws its own parameters."""
    groups = parse_policy(policy)
    if not groups:
        return x
    if x.ndim != 4:
        raise GenzooError(f"DiffAugment expects NCHW images; got shape {tuple(x.shape)}")
    for group in groups:
        for augmentation in POLICIES[group]:
            x = augmentation(x, generator)
    return x.contiguous()
