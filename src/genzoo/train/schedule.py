"""Learning-rate schedule: linear warm-up, then constant (DiT, SiT) or a decay to zero."""

from __future__ import annotations

import math

from genzoo.errors import GenzooError

LR_SCHEDULES = ("constant", "cosine", "linear")


def check_lr_schedule(name: str) -> None:
    if name not in LR_SCHEDULES:
        raise GenzooError(
            f"train.lr_schedule={name!r} is not a schedule; choose one of {', '.join(LR_SCHEDULES)}"
        )


def lr_at(step: int, lr: float, warmup: int, total: int, schedule: str) -> float:
    """Learning rate of update `step` (0-based) in a run of `total` updates.

    The decays reach zero at `total`; continuing a finished run with a larger train.steps
    stretches them over the new total, so use "constant" for runs meant to be extended.
    """
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return lr
    done = min(1.0, (step - warmup) / (total - warmup))
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * done))
    return lr * (1.0 - done)
