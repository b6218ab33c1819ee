"""Typed run configuration: one dataclass tree, named presets, and `--set key=value` overrides.

`RunConfig` holds `data` and `train`, and three *tagged* sections — `tokenizer`, `model` and
`family` — each the typed dataclass of one registered kind (see `genzoo.registry`). Saved as JSON
a tagged section carries its kind: `{"family": {"kind": "ar", "order": "raster", ...}}`.
`--set family.kind=ar` switches the kind (with that kind's defaults); `--set family.order=random`
sets a field of the selected kind.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genzoo.errors import GenzooError
from genzoo.registry import TAGGED_SECTIONS, registry


@dataclass
class DataConfig:
    spec: str = "shapes"  # "shapes" | "digits" | "folder:PATH" | "latents:DIR" | "tokens:DIR"
    res: int = 32  # image resolution (pixels)
    hflip: bool = True  # random horizontal flip while training
    skip_bad: bool = False  # skip unreadable images instead of stopping
    workers: int = 0  # DataLoader worker processes
    seed: int = 0  # procedural datasets are generated from this seed


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
    fsdp: bool = False  # shard parameters with FSDP2 (fully_shard) instead of DDP


def _default(part: str, kind: str):
    return field(default_factory=lambda: registry(part).default_config(kind))


@dataclass
class RunConfig:
    preset: str = "dit-s2"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: Any = _default("tokenizer", "pixels")
    model: Any = _default("model", "dit")
    family: Any = _default("family", "diffusion")
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for part in TAGGED_SECTIONS:  # every section knows its kind (`cfg.model.kind`)
            registry(part).kind_of(getattr(self, part))

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in TAGGED_SECTIONS:
                out[f.name] = {"kind": registry(f.name).kind_of(v), **dataclasses.asdict(v)}
            elif dataclasses.is_dataclass(v):
                out[f.name] = dataclasses.asdict(v)
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = upgrade_config_dict(dict(d))
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            if k in TAGGED_SECTIONS:
                if not isinstance(v, dict) or "kind" not in v:
                    raise GenzooError(f"config section {k!r} needs a 'kind' entry; got {v!r}")
                v = dict(v)
                kind = v.pop("kind")
                kwargs[k] = _from_dict(registry(k).config_class(kind), v, f"{k}.")
            elif k in ("data", "train"):
                kwargs[k] = _from_dict(DataConfig if k == "data" else TrainConfig, v, f"{k}.")
            elif k == "preset":
                kwargs[k] = v
            else:
                known = ", ".join(f.name for f in dataclasses.fields(cls))
                raise GenzooError(f"unknown config key {k!r}; known keys here: {known}")
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as e:
            raise GenzooError(f"{path} is not valid JSON ({e})") from None
        return cls.from_dict(data)


def upgrade_config_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A config written by genzoo 0.1 (family a string, `diffusion`/`flow` sections, a DiT
    `model` without kind, tokenizer as a spec string) in today's tagged form."""
    if not isinstance(d.get("family"), str):
        return d
    family = d.pop("family")
    sections = {name: d.pop(name, {}) for name in ("diffusion", "flow")}
    if family not in sections:
        raise GenzooError(
            f"this config was written by an older genzoo with family {family!r}, which cannot be "
            "converted; start a new run"
        )
    d["family"] = {"kind": family, **sections[family]}
    d["model"] = {"kind": "dit", **d.get("model", {})}
    old_tok = d.get("tokenizer", {})
    d["tokenizer"] = tokenizer_section(old_tok.get("spec", "pixels"), old_tok.get("scale"))
    return d


def tokenizer_section(spec: str, scale: float | None = None) -> dict[str, Any]:
    """ "pixels" / "kl-vae:SOURCE" / "vq:RUN_OR_FILE" → a tagged tokenizer section."""
    kind, _, source = spec.partition(":")
    out: dict[str, Any] = {"kind": kind}
    if source:
        out["source"] = source
    if scale is not None and kind == "kl-vae":
        out["scale"] = scale
    return out


def _from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(d, dict):
        raise GenzooError(f"config section {where.rstrip('.')!r} must be a mapping; got {d!r}")
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
        if isinstance(cfg, RunConfig) and f.name in TAGGED_SECTIONS:
            out += [f"{f.name}.kind"] + field_paths(v, f"{f.name}.")
        elif dataclasses.is_dataclass(v):
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


def parse_typed(text: str, t: Any, key: str) -> Any:
    """`text` as a value of type `t` (as `--set` reads it); errors name `key`."""
    return _parse_value(text, t, key)


def set_kind(cfg: RunConfig, part: str, kind: str) -> None:
    """Select `kind` for tagged section `part`: its defaults, unless it is already selected."""
    reg = registry(part)
    if reg.kind_of(getattr(cfg, part)) != kind:
        setattr(cfg, part, reg.default_config(kind))


def apply_override(cfg: Any, assignment: str) -> None:
    """Apply one `key=value` (dotted key, e.g. `model.depth=4` or `train.lr=3e-4`) in place.

    On a RunConfig, `family.kind=ar` (or `family=ar`) switches a tagged section's kind, and
    `tokenizer=kl-vae:PATH` selects a tokenizer with its source.
    """
    if "=" not in assignment:
        raise GenzooError(f"--set {assignment!r}: expected key=value, e.g. --set train.lr=3e-4")
    key, text = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if isinstance(cfg, SampleConfig) and len(parts) == 1 and not hasattr(cfg, key):
        cfg.options[key.replace("-", "_")] = text
        return
    if isinstance(cfg, RunConfig) and parts[0] in TAGGED_SECTIONS:
        if len(parts) == 1 or parts[1:] == ["kind"]:
            kind, _, source = text.partition(":") if parts[0] == "tokenizer" else (text, "", "")
            set_kind(cfg, parts[0], kind.strip())
            if source:
                apply_override(cfg, f"tokenizer.source={source}")
            return
        section = getattr(cfg, parts[0])
        if len(parts) != 2 or not hasattr(section, parts[1]) or parts[1].startswith("_"):
            kind = registry(parts[0]).kind_of(section)
            known = ", ".join([f"{parts[0]}.kind"] + field_paths(section, f"{parts[0]}."))
            raise GenzooError(
                f"--set {key}: unknown config key {key!r} for {parts[0]} kind {kind!r}. "
                f"Its keys: {known}"
            )
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
    """Settings of `genzoo sample` (each flag is a field; `--set` reaches them too).

    Sampling options of the family (`--cfg`, `--sampler`, `--temperature`, …) are kept apart
    in `options` as given, and read with the types the family declares; a key that is not a
    field here is taken as such an option (`--set top_k=5`)."""

    run: str = ""  # a genzoo run directory …
    official: str = ""  # … or an official checkpoint kind: "dit" | "sit" | "llamagen" | "rar" …
    weights: str = ""  # official weights file (.pt / .safetensors)
    vae: str = "stabilityai/sd-vae-ft-mse"  # decoder for official latent models (folder or hub id)
    vq: str = ""  # official VQ tokenizer weights that decode an official token model's ids
    official_preset: str = ""  # e.g. "DiT-XL/2"; empty: inferred from the weights
    image_size: int = 256
    num: int = 0
    per_class: int = 0
    seed: int = 0
    batch_size: int = 32
    out: str = "samples.npz"
    grid: str = ""
    device: str = ""
    tf32: bool = False  # the official DiT/SiT scripts enable TF32 on GPU
    quiet: bool = False
    options: dict[str, str] = field(default_factory=dict)
