"""`genzoo export`: a run's weights in an official layout (a plain state dict, strict-loadable)."""

from __future__ import annotations

from pathlib import Path

import torch

from genzoo.errors import GenzooError
from genzoo.files import atomic_write

FORMATS = ("official-dit",)


def export_run(run_dir: str | Path, fmt: str, out: str | Path, *, weights: str = "ema") -> Path:
    from genzoo.pipeline import load
    from genzoo.zoo.official import export_official

    if fmt not in FORMATS:
        raise GenzooError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    pipe = load(run_dir, device="cpu", weights=weights)
    state = export_official(pipe.model, pipe.cfg.model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda tmp: torch.save(state, tmp))
