"""Official DiT / SiT checkpoints: read, infer their constructor arguments, load, export.

The official DiT (facebookresearch/DiT) and SiT (willisma/SiT) networks share one state-dict
layout, which genzoo's DiT reproduces with its default switches, so official weights load with
strict loading and no renaming. One functional difference: with learn_sigma the official SiT
returns only the first C output channels; genzoo's DiT returns all 2C and the flow family keeps
the first C.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genzoo.backbones.dit import DiT, DiTConfig
from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems

OFFICIAL_KINDS = ("dit", "sit")
# The official `DiT(...)` constructor arguments, in signature order.
OFFICIAL_ARGS = (
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
    "learn_sigma",
)
# Published sizes (depth, hidden, heads); DiT and SiT use the same names and numbers.
PUBLISHED_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
OFFICIAL_SWITCHES = {
    "time_cond": "adaln",
    "norm": "layernorm",
    "mlp": "gelu",
    "pos": "sincos",
    "qk_norm": False,
}
DISPLAY_NAMES = {"dit": "DiT", "sit": "SiT"}
_PRESET = re.compile(r"^(?:(dit|sit)[-_ ]?)?(s|b|l|xl)[-/_ ]?(2|4|8)$", re.IGNORECASE)


def _check_kind(kind: str) -> str:
    if kind.lower() not in OFFICIAL_KINDS:
        raise GenzooError(f"unknown official model kind {kind!r}; choose one of {OFFICIAL_KINDS}")
    return kind.lower()


# -- reading ----------------------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    # Official training checkpoints also store their argparse options under "args"; allowing
    # that one plain-data class keeps `weights_only=True` (no arbitrary code on load).
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
        unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsupported:
            reason = f"it holds an object of class {unsupported.group(1)}, which is not plain data"
        elif detail := re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S):
            reason = f"the pickle could not be read ({detail.group(1).strip()})"
        else:
            reason = text.splitlines()[0] if text else type(e).__name__
        raise GenzooError(
            f"could not read {path} as a PyTorch checkpoint with torch.load(weights_only=True): "
            f"{reason}. If the file holds objects other than tensors and you trust it, load it "
            "yourself with torch.load(path, weights_only=False) and pass the state dict "
            "(or its 'ema' entry) instead of the path."
        ) from None


def where_of(weights: Any) -> str:
    """How error messages name weights: the file path, or "the given state dict"."""
    return "the given state dict" if isinstance(weights, Mapping) else str(weights)


def read_state_dict(
    weights: str | Path | Mapping[str, Any], entries: tuple[str, ...] = ("ema", "model")
) -> dict[str, torch.Tensor]:
    """The network weights in `weights`: an official `.pt` (a plain state dict, or a training
    checkpoint holding it under one of `entries`, the first present wins: "ema" before "model"
    as the official DiT loader prefers), a `.safetensors` file, or a state dict in memory."""
    if isinstance(weights, Mapping):
        where, obj = "the given state dict", weights
    else:
        path = Path(weights)
        where = str(path)
        if not path.is_file():
            raise GenzooError(f"no weights file at {path}; check the path")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                obj = load_file(str(path), device="cpu")
            except Exception as e:
                raise GenzooError(f"could not read {path} as safetensors: {e}") from None
        else:
            obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise GenzooError(
            f"{where} holds a {type(obj).__name__}, not a state dict; expected a mapping from "
            "parameter names to tensors (or a checkpoint dict with "
            + " or ".join(map(repr, entries))
            + ")"
        )
    for entry in entries:
        if isinstance(obj.get(entry), Mapping):
            obj, where = obj[entry], f"{where}[{entry!r}]"
            break
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise GenzooError(
            f"{where} is not a state dict: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, "
            "not a tensor"
        )
    return dict(obj)


# -- layout and configs -----------------------------------------------------------------------


def official_layout(cfg: DiTConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor of the official DiT/SiT state dict, in official order."""
    d, p, c = cfg.hidden_size, cfg.patch_size, cfg.in_channels
    c_out = 2 * c if cfg.learn_sigma else c
    tokens = (cfg.input_size // p) ** 2
    rows = cfg.num_classes + (1 if cfg.class_dropout_prob > 0 else 0)
    mlp_hidden = int(d * cfg.mlp_ratio)
    layout = [
        ("pos_embed", (1, tokens, d)),
        ("x_embedder.proj.weight", (d, c, p, p)),
        ("x_embedder.proj.bias", (d,)),
        ("t_embedder.mlp.0.weight", (d, 256)),
        ("t_embedder.mlp.0.bias", (d,)),
        ("t_embedder.mlp.2.weight", (d, d)),
        ("t_embedder.mlp.2.bias", (d,)),
        ("y_embedder.embedding_table.weight", (rows, d)),
    ]
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        layout += [
            (b + "attn.qkv.weight", (3 * d, d)),
            (b + "attn.qkv.bias", (3 * d,)),
            (b + "attn.proj.weight", (d, d)),
            (b + "attn.proj.bias", (d,)),
            (b + "mlp.fc1.weight", (mlp_hidden, d)),
            (b + "mlp.fc1.bias", (mlp_hidden,)),
            (b + "mlp.fc2.weight", (d, mlp_hidden)),
            (b + "mlp.fc2.bias", (d,)),
            (b + "adaLN_modulation.1.weight", (6 * d, d)),
            (b + "adaLN_modulation.1.bias", (6 * d,)),
        ]
    layout += [
        ("final_layer.linear.weight", (p * p * c_out, d)),
        ("final_layer.linear.bias", (p * p * c_out,)),
        ("final_layer.adaLN_modulation.1.weight", (2 * d, d)),
        ("final_layer.adaLN_modulation.1.bias", (2 * d,)),
    ]
    return layout


def _preset_args(kind: str, preset: str) -> dict[str, int]:
    match = _PRESET.match(preset.strip())
    if not match:
        names = ", ".join(
            f"{DISPLAY_NAMES[kind]}-{s}/{p}" for s in PUBLISHED_SIZES for p in (2, 4, 8)
        )
        raise GenzooError(f"unknown official preset {preset!r}; choose one of: {names}")
    family, size, patch = match.groups()
    if family and family.lower() != kind:
        raise GenzooError(
            f"preset {preset!r} names a {DISPLAY_NAMES[family.lower()]} model but kind is "
            f"{kind!r}; use kind={family.lower()!r} or a {DISPLAY_NAMES[kind]} preset"
        )
    depth, hidden, heads = PUBLISHED_SIZES[size.upper()]
    return {"patch_size": int(patch), "hidden_size": hidden, "depth": depth, "num_heads": heads}


def official_config(kind: str, *, preset: str | None = None, **kwargs: Any) -> DiTConfig:
    """A DiTConfig from the official constructor arguments (defaults as the official code:
    input_size 32, patch 2, 4 channels, XL sizes, mlp_ratio 4, class dropout 0.1, 1000 classes,
    learn_sigma) or from a published name such as preset="DiT-XL/2" plus e.g. input_size."""
    kind = _check_kind(kind)
    unknown = sorted(set(kwargs) - set(OFFICIAL_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown official {DISPLAY_NAMES[kind]} argument(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(OFFICIAL_ARGS)} (or preset='{DISPLAY_NAMES[kind]}-XL/2')"
        )
    args: dict[str, Any] = {}
    if preset is not None:
        args = _preset_args(kind, preset)
        clashes = [
            f"{k}={kwargs[k]} (preset has {v})"
            for k, v in args.items()
            if k in kwargs and kwargs[k] != v
        ]
        if clashes:
            raise GenzooError(f"preset {preset!r} conflicts with {', '.join(clashes)}")
    args.update(kwargs)
    return DiTConfig(**args)


def infer_official_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The official constructor arguments that produce these tensor shapes, as far as the
    shapes tell. num_heads is not visible in shapes: it comes from the published sizes when
    the hidden size is one of them. The label table is read as K classes plus the null row
    (class_dropout_prob > 0, the official default)."""
    shape = {k: tuple(v.shape) for k, v in state_dict.items()}
    found: dict[str, Any] = {}
    conv = shape.get("x_embedder.proj.weight")
    if conv is not None and len(conv) == 4:
        found.update(hidden_size=conv[0], in_channels=conv[1], patch_size=conv[2])
    pos = shape.get("pos_embed")
    if pos is not None and len(pos) == 3:
        found["hidden_size"] = pos[2]
        side = math.isqrt(pos[1])
        if side * side == pos[1] and "patch_size" in found:
            found["input_size"] = side * found["patch_size"]
    blocks = {int(m.group(1)) for k in shape if (m := re.match(r"blocks\.(\d+)\.", k))}
    if blocks:
        found["depth"] = max(blocks) + 1
    heads = {hidden: h for _, hidden, h in PUBLISHED_SIZES.values()}
    if found.get("hidden_size") in heads:
        found["num_heads"] = heads[found["hidden_size"]]
    fc1 = shape.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and found.get("hidden_size"):
        found["mlp_ratio"] = fc1[0] / found["hidden_size"]
    table = shape.get("y_embedder.embedding_table.weight")
    if table is not None and table[0] >= 2:
        found.update(class_dropout_prob=0.1, num_classes=table[0] - 1)
    final = shape.get("final_layer.linear.weight")
    if final is not None and "patch_size" in found and "in_channels" in found:
        c_out = final[0] / found["patch_size"] ** 2
        if c_out in (found["in_channels"], 2 * found["in_channels"]):
            found["learn_sigma"] = c_out == 2 * found["in_channels"]
    return {k: found[k] for k in OFFICIAL_ARGS if k in found}


def _suggestion(kind: str, inferred: Mapping[str, Any], label_table_differs: bool) -> str:
    name = DISPLAY_NAMES[kind]
    args = ", ".join(f"{k}={v!r}" for k, v in inferred.items())
    sizes = (inferred.get("depth"), inferred.get("hidden_size"), inferred.get("num_heads"))
    size = next((s for s, v in PUBLISHED_SIZES.items() if v == sizes), None)
    hint = (
        f" (published size {name}-{size}/{inferred['patch_size']})"
        if size and "patch_size" in inferred
        else ""
    )
    text = (
        f"The weights look like {args}{hint}; pass these arguments, or none at all to infer "
        "them from the file."
    )
    if label_table_differs:
        text += (
            " A label table without the null-class row needs class_dropout_prob=0 and "
            "num_classes equal to its row count."
        )
    return text


# -- loading and export -----------------------------------------------------------------------


def build_official(
    kind: str, weights: str | Path | Mapping[str, Any], *, preset: str | None = None, **kwargs: Any
) -> tuple[DiT, DiTConfig]:
    """An official DiT/SiT network with its weights (strict loading), in eval mode, on CPU.

    Constructor arguments given (kwargs or `preset`) are checked against the file; those not
    given are inferred from the tensor shapes (see infer_official_config).
    """
    kind = _check_kind(kind)
    official_config(kind, preset=preset, **kwargs)  # argument names and preset, before reading
    state = read_state_dict(weights)
    inferred = infer_official_config(state)
    if "hidden_size" not in inferred:
        where = where_of(weights)
        first = ", ".join(list(state)[:5]) or "none"
        raise GenzooError(
            f"{where} does not look like DiT/SiT weights: it has neither 'pos_embed' nor "
            f"'x_embedder.proj.weight' (its first keys: {first})"
        )
    given = {**(_preset_args(kind, preset) if preset else {}), **kwargs}
    args = {k: v for k, v in inferred.items() if k not in given}
    if "class_dropout_prob" in given and "num_classes" in args:
        rows = args["num_classes"] + 1  # the label table's row count
        args["num_classes"] = rows - (1 if given["class_dropout_prob"] > 0 else 0)
    if "num_heads" not in given and "num_heads" not in args:
        raise GenzooError(
            f"num_heads cannot be read from tensor shapes and hidden size "
            f"{inferred['hidden_size']} is not a published size; pass num_heads=..."
        )
    cfg = official_config(kind, preset=preset, **kwargs, **args)
    with torch.device("meta"):  # shapes only: the file's tensors become the parameters
        model = DiT(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = state_dict_problems(expected, shapes_of(state))
    if problems:
        where = where_of(weights)
        built = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in OFFICIAL_ARGS)
        raise GenzooError(
            f"the weights in {where} do not fit the official {DISPLAY_NAMES[kind]}({built}):\n  "
            + "\n  ".join(problems)
            + "\n"
            + _suggestion(kind, inferred, any("y_embedder" in p for p in problems))
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    state = {k: v.to(torch.float32, copy=copy) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), cfg


def export_official(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], cfg: DiTConfig
) -> dict[str, torch.Tensor]:
    """A plain float32 state dict, in official key order, that the official DiT (or SiT) code
    loads with strict loading. Refuses configs whose switches the official code lacks."""
    for switch, official in OFFICIAL_SWITCHES.items():
        value = getattr(cfg, switch)
        if value != official:
            raise GenzooError(
                f"cannot export to the official DiT layout: model.{switch}={value!r} has no "
                f"counterpart in the official code, which needs {switch}={official!r}"
            )
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
    else:
        state = dict(model_or_state_dict)
    layout = official_layout(cfg)
    problems = state_dict_problems(dict(layout), shapes_of(state))
    if problems:
        raise GenzooError(
            "these weights do not match the official layout of their config:\n  "
            + "\n  ".join(problems)
        )
    return {k: state[k].detach().to("cpu", torch.float32).clone() for k, _ in layout}
