"""Atomic checkpoints: a directory per step, written under a temporary name and then renamed.

Layout of `RUN/checkpoints/step-0001000/`:
  model.safetensors   training weights
  ema.safetensors     EMA weights (what `genzoo.load` samples from)
  state.pt            optimizer state, step, data position
A crash mid-write leaves only a `.tmp-*` directory, which is ignored and cleaned up on resume.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems

CKPT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    step: int


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "state.pt").is_file():
            out.append(Checkpoint(p, int(m.group(1))))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; weights here never alias, but make them contiguous.
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict,
    keep: int = 2,
) -> Path:
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(model), str(tmp / "model.safetensors"))
    save_file(_tensors(ema), str(tmp / "ema.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "step": step, **extra}, tmp / "state.pt")
    for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def clean_partial(run_dir: str | Path) -> None:
    root = Path(run_dir) / CKPT_DIR
    if root.is_dir():
        for p in root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def load_weights(module: nn.Module, path: str | Path) -> None:
    path = Path(path)
    try:
        sd = load_file(str(path))
    except Exception as e:  # corrupt or truncated file
        raise GenzooError(f"cannot read weights {path}: {e}") from None
    problems = state_dict_problems(shapes_of(module.state_dict()), shapes_of(sd))
    if problems:
        raise GenzooError(
            f"weights {path} do not match the model built from the run config:\n  "
            + "\n  ".join(problems)
        )
    module.load_state_dict(sd)


def load_state(ckpt: Checkpoint) -> dict:
    return torch.load(ckpt.path / "state.pt", map_location="cpu", weights_only=False)
