"""Atomic checkpoints: a directory per step, written under a temporary name and then renamed.

Layout of `RUN/checkpoints/step-0001000/`:
  model.safetensors   training weights
  ema.safetensors     EMA weights (what `genzoo.load` samples from)
  aux-NAME.safetensors  the family's own trainable modules (a discriminator), if any
  state.pt            optimizer states (one per name), step, data position
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


def _is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the module on CPU; a FSDP2-sharded module is gathered (all ranks call)."""
    if _is_sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        sd = get_model_state_dict(module, options=options)
    else:
        sd = module.state_dict()
    # safetensors refuses shared storage; weights here never alias, but make them contiguous.
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def optimizer_state(opt: torch.optim.Optimizer, module: nn.Module) -> dict:
    if _is_sharded(module):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(module, opt, options=options)
    return opt.state_dict()


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    ema: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer] | torch.optim.Optimizer,
    extra: dict,
    keep: int = 2,
    *,
    aux: dict[str, nn.Module] | None = None,
    is_main: bool = True,
) -> Path | None:
    """Write step `step` atomically. Every rank calls it (sharded weights are gathered); only
    `is_main` writes. Optimizer "model" is also stored under "optimizer" (genzoo 0.1 layout)."""
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = {"model": optimizers}
    aux = aux or {}
    owners = {"model": model, **aux}
    tensors = {"model": full_state_dict(model), "ema": full_state_dict(ema)}
    tensors.update({f"aux-{k}": full_state_dict(m) for k, m in aux.items()})
    opt_states = {k: optimizer_state(o, owners.get(k, model)) for k, o in optimizers.items()}
    if not is_main:
        return None
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, sd in tensors.items():
        save_file(sd, str(tmp / f"{name}.safetensors"))
    state = {"optimizers": opt_states, "step": step, **extra}
    if "model" in opt_states:
        state["optimizer"] = opt_states["model"]
    torch.save(state, tmp / "state.pt")
    for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def restore(
    ckpt: Checkpoint,
    model: nn.Module,
    ema: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    aux: dict[str, nn.Module] | None = None,
) -> int:
    """Load a checkpoint into the (unwrapped or FSDP-sharded) modules; returns its step."""
    aux = aux or {}
    load_weights(model, ckpt.path / "model.safetensors")
    load_weights(ema, ckpt.path / "ema.safetensors")
    for name, module in aux.items():
        load_weights(module, ckpt.path / f"aux-{name}.safetensors")
    state = load_state(ckpt)
    saved = state.get("optimizers") or {"model": state["optimizer"]}
    missing = sorted(set(optimizers) - set(saved))
    if missing:
        raise GenzooError(
            f"checkpoint {ckpt.path} has no state for optimizer(s) {', '.join(missing)}; it was "
            "written by another family — use a new --out directory"
        )
    owners = {"model": model, **aux}
    for name, opt in optimizers.items():
        module = owners.get(name, model)
        if _is_sharded(module):
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)
            set_optimizer_state_dict(module, opt, saved[name], options=options)
        else:
            opt.load_state_dict(saved[name])
    return ckpt.step


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
    if _is_sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, sd, options=StateDictOptions(full_state_dict=True))
        return
    problems = state_dict_problems(shapes_of(module.state_dict()), shapes_of(sd))
    if problems:
        raise GenzooError(
            f"weights {path} do not match the model built from the run config:\n  "
            + "\n  ".join(problems)
        )
    module.load_state_dict(sd)


def load_state(ckpt: Checkpoint) -> dict:
    return torch.load(ckpt.path / "state.pt", map_location="cpu", weights_only=False)
