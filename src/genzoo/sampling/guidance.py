"""Classifier-free guidance (Ho & Salimans 2022) as a predictor transform.

A predictor is any callable f(x, t, y) -> prediction. Guidance wraps one predictor into another,
so every solver gets guidance for free and none of them knows it is there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genzoo.errors import GenzooError

Predictor = Callable[[Tensor, Tensor, Tensor], Tensor]
NoiseLevel = Callable[[Tensor], Tensor]


class ClassifierFreeGuidance:
    """uncond + scale · (cond − uncond), from one forward pass on the doubled batch.

    scale: 1 means no guidance (and no doubled forward at all).
    interval: (lo, hi) on the noise level (1 = pure noise, 0 = data); outside it only the
        conditional prediction is used and the unconditional forward is skipped (Kynkäänniemi
        et al. 2024, "Applying guidance in a limited interval").
    channels: guide only the first `channels` channels of the prediction. The official DiT and SiT
        samplers guide 3 of the 4 latent channels (channels=3 reproduces them). None guides all the
        prediction's data channels, i.e. as many as x has: with a learned-variance output of 2C
        channels the C variance channels are not guided.
    Unguided channels come from the conditional half, as in the official `forward_with_cfg`.
    """

    def __init__(
        self,
        scale: float,
        interval: tuple[float, float] | None = None,
        channels: int | None = None,
    ) -> None:
        if interval is not None:
            lo, hi = (float(v) for v in interval)
            if not 0.0 <= lo <= hi <= 1.0:
                raise GenzooError(
                    f"cfg_interval={interval!r}: expected (lo, hi) with 0 <= lo <= hi <= 1 "
                    "on the noise level (1 = pure noise, 0 = data)"
                )
            interval = (lo, hi)
        if channels is not None and channels < 1:
            raise GenzooError(f"cfg_channels={channels}: expected a positive channel count or None")
        self.scale = float(scale)
        self.interval = interval
        self.channels = channels

    @property
    def doubles_batch(self) -> bool:
        """Whether the wrapped predictor runs the doubled [cond; uncond] batch (at least once)."""
        return self.scale != 1.0

    def wrap(
        self,
        predictor: Predictor,
        null_label: int | None,
        noise_level: NoiseLevel | None = None,
    ) -> Predictor:
        """The guided predictor. `noise_level(t)` maps the solver's t to [0, 1] (1 = noise)."""
        if not self.doubles_batch:
            return predictor
        if null_label is None:
            raise GenzooError(
                f"cfg={self.scale} needs the null (unconditional) label of the network; "
                "pass null_label (the number of classes for DiT-style networks), or use cfg=1"
            )
        if self.interval is not None and noise_level is None:
            raise GenzooError("cfg_interval needs the family's noise_level function")

        scale, interval, channels = self.scale, self.interval, self.channels

        def guided(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
            inside = None
            if interval is not None:
                level = noise_level(t)
                inside = (level >= interval[0]) & (level <= interval[1])
                if not bool(inside.any()):
                    return predictor(x, t, y)  # no guidance here: skip the unconditional pass
            n = x.shape[0]
            null = torch.full_like(y, null_label)
            out = predictor(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
            cond, uncond = out[:n], out[n:]
            k = x.shape[1] if channels is None else channels
            mixed = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
            result = torch.cat([mixed, cond[:, k:]], dim=1)
            if inside is not None and not bool(inside.all()):
                keep = inside.view(-1, *([1] * (result.ndim - 1)))
                result = torch.where(keep, result, cond)
            return result

        return guided
