"""Typed run configuration: one dataclass tree, named presets, and `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genzoo.backbones.dit import DiTConfig
from genzoo.errors import GenzooError
from genzoo.families.diffusion import DiffusionConfig
from genzoo.families.flow import FlowConfig


@dataclass
class DataConfig:
    spec: str = "shapes"  # "shapes" | "digits" | "folder:PATH" | "latents:DIR"
    res: int = 32  # image resolution (pixels)
    hflip: bool = True  # random horizontal flip while training
    skip_bad: bool = False  # skip unreadable images instead of stopping
    workers: int = 0  # DataLoader worker processes
    seed: int = 0  # procedural datasets are generated from this seed


@dataclass
class TokenizerConfig:
    spec: str = "pixels"  # "pixels" | "kl-vae:PATH_OR_HUB_ID"
    scale: float = 0.18215  # latent scale factor (kl-vae only)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64  # global batch (split over ranks and accumulation steps)
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0  # linear LR warm-up steps
    lr_schedule: str = "constant"  # after warm-up: "constant" | "cosine" | "linear" (to 0)
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # decay min(ema_decay, (1+step)/(10+step)) early on
    precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16"
    compile: bool = False
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    keep_ckpts: int = 2
    grid_every: int = 0  # 0: only at the end
    grid_cfg: float = 1.0
    grid_steps: int = 50
    eval_every: int = 0
    eval_num: int = 1000
    eval_ref: str = ""
    eval_metrics: str = "fid"
    quiet: bool = False


@dataclass
class RunConfig:
    preset: str = "dit-s2"
    family: str = "diffusion"  # "diffusion" | "flow"
    model: DiTConfig = field(default_factory=DiTConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, d, "")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        known = ", ".join(sorted(names))
        raise GenzooError(f"unknown config key {where + unknown[0]!r}; known keys here: {known}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _from_dict(t, v, f"{where}{k}.")
        elif _origin(t) is tuple:
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def _origin(t: Any) -> Any:
    return typing.get_origin(t)


# -- `--set key=value` ------------------------------------------------------------------------


def field_paths(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config tree (for error messages and CLI help)."""
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += field_paths(v, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _parse_value(text: str, t: Any, key: str) -> Any:
    if t is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise GenzooError(f"--set {key}={text}: expected true/false")
    if _origin(t) is tuple:
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        args = typing.get_args(t)
        return tuple(_parse_value(p.strip(), args[0], key) for p in parts)
    if isinstance(t, types.UnionType) or _origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    try:
        return t(text)
    except (TypeError, ValueError):
        raise GenzooError(f"--set {key}={text}: expected a value of type {t.__name__}") from None


def apply_override(cfg: Any, assignment: str) -> None:
    """Apply one `key=value` (dotted key, e.g. `model.depth=4` or `train.lr=3e-4`) in place."""
    if "=" not in assignment:
        raise GenzooError(f"--set {assignment!r}: expected key=value, e.g. --set train.lr=3e-4")
    key, text = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    node = cfg
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(node) or not hasattr(node, p):
            raise GenzooError(
                f"--set {key}: unknown config key {'.'.join(parts[: i + 1])!r}. "
                f"Known keys: {', '.join(field_paths(cfg))}"
            )
        if i < len(parts) - 1:
            node = getattr(node, p)
    leaf = parts[-1]
    if dataclasses.is_dataclass(getattr(node, leaf)):
        raise GenzooError(f"--set {key}: {key!r} is a group; set one of its fields instead")
    t = typing.get_type_hints(type(node))[leaf]
    setattr(node, leaf, _parse_value(text, t, key))


def apply_overrides(cfg: Any, assignments: list[str] | None) -> Any:
    for a in assignments or []:
        apply_override(cfg, a)
    return cfg


@dataclass
class SampleConfig:
    """Settings of `genzoo sample` (each flag is a field; `--set` reaches them too)."""

    run: str = ""  # a genzoo run directory …
    official: str = ""  # … or an official checkpoint kind: "dit" | "sit"
    weights: str = ""  # official weights file (.pt / .safetensors)
    vae: str = "stabilityai/sd-vae-ft-mse"  # decoder for official latent models (folder or hub id)
    official_preset: str = ""  # e.g. "DiT-XL/2"; empty: inferred from the weights
    image_size: int = 256
    num: int = 0
    per_class: int = 0
    cfg: float = 1.0
    cfg_interval: tuple[float, ...] = ()  # (lo, hi) noise-level interval; empty: everywhere
    cfg_channels: int = -1  # -1: family default (3 for official checkpoints)
    sampler: str = ""
    steps: int = 0
    eta: float = 0.0  # ddim
    seed: int = 0
    batch_size: int = 32
    out: str = "samples.npz"
    grid: str = ""
    device: str = ""
    tf32: bool = False  # the official DiT/SiT scripts enable TF32 on GPU
    quiet: bool = False
