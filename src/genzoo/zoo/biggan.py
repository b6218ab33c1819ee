"""Official BigGAN checkpoints: ajbrock/BigGAN-PyTorch G and D, and the HF BigGAN-deep port.

* `load_biggan(weights, **generator_kwargs)`: a `G_ema.pth` / `G.pth` of BigGAN-PyTorch, or a
  TF-hub conversion of its `TFHub/converter.py` (those lack the `sv0` log buffers, which the
  official loader tolerates, and were made with BN_eps = SN_eps = 1e-4: pass them).
* `load_biggan_discriminator(weights, **D_kwargs)`: its `D.pth`.
* `load_biggan_deep(weights, **config_fields)`: `pytorch_model.bin` of pytorch-pretrained-BigGAN
  (or a folder holding it with its `config.json`).

Constructor arguments not given are read from the tensor shapes where those tell (widths,
resolution, attention, classes, embedding and z sizes); eps values cannot be, and default to the
official code's.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genzoo.backbones.biggan import (
    D_WIDTHS,
    G_WIDTHS,
    BigGANConfig,
    BigGANDiscriminator,
    BigGANGenerator,
)
from genzoo.backbones.biggan_deep import RELEASED_LAYERS, BigGANDeep, BigGANDeepConfig
from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.zoo.biggan_pipeline import OfficialBigGAN
from genzoo.zoo.official import read_state_dict, where_of

# Official constructor arguments (name: default) and the BigGANConfig field each sets.
GENERATOR_ARGS = {
    "G_ch": (64, "g_ch"),
    "dim_z": (128, "dim_z"),
    "bottom_width": (4, "bottom_width"),
    "resolution": (128, "resolution"),
    "G_attn": ("64", "g_attn"),
    "n_classes": (1000, "num_classes"),
    "num_G_SVs": (1, "g_num_svs"),
    "num_G_SV_itrs": (1, "g_num_sv_itrs"),
    "G_shared": (True, "g_shared"),
    "shared_dim": (0, "shared_dim"),
    "hier": (False, "hier"),
    "BN_eps": (1e-5, "bn_eps"),
    "SN_eps": (1e-12, "sn_eps"),
    "G_param": ("SN", "g_spectral"),
    "norm_style": ("bn", "norm_style"),
}
DISCRIMINATOR_ARGS = {
    "D_ch": (64, "d_ch"),
    "D_wide": (True, "d_wide"),
    "resolution": (128, "resolution"),
    "D_attn": ("64", "d_attn"),
    "n_classes": (1000, "num_classes"),
    "num_D_SVs": (1, "d_num_svs"),
    "num_D_SV_itrs": (1, "d_num_sv_itrs"),
    "SN_eps": (1e-12, "sn_eps"),
    "output_dim": (1, None),
}
# Accepted for compatibility with the official constructors: training setup only, or checked
# to have the one value this layout supports (below).
IGNORED_ARGS = {
    "G_kernel_size", "D_kernel_size", "G_lr", "D_lr", "G_B1", "G_B2", "D_B1", "D_B2",
    "adam_eps", "G_mixed_precision", "D_mixed_precision", "G_fp16", "D_fp16", "G_init",
    "D_init", "skip_init", "no_optim", "D_param", "cross_replica", "mybn", "G_activation",
    "D_activation",
}  # fmt: skip
DEEP_FIELDS = tuple(f.name for f in fields(BigGANDeepConfig))


def _check_names(given: Mapping[str, Any], accepted: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(given) - set(accepted) - IGNORED_ARGS)
    if unknown:
        raise GenzooError(
            f"unknown official {what} argument(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(accepted)}"
        )
    for flag in ("cross_replica", "mybn"):
        if given.get(flag):
            raise GenzooError(f"{flag}=True changes the BatchNorm layout; it is not supported")
    for name in ("G_activation", "D_activation"):
        if name in given and not isinstance(given[name], nn.ReLU):
            raise GenzooError(f"{name}={given[name]!r}: only ReLU (the official default) is built")
    if given.get("D_param", "SN") != "SN":
        raise GenzooError(f"D_param={given['D_param']!r}: the official D is always 'SN'")


def _blocks(shape: Mapping[str, tuple], prefix: str = "blocks.") -> list[int]:
    found = {int(m.group(1)) for k in shape if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return sorted(found)


def _attention_list(labels: list[int]) -> str:
    return "_".join(str(r) for r in sorted(set(labels))) or "0"


def infer_generator_args(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The official Generator arguments these tensor shapes imply (as far as they tell)."""
    shape = shapes_of(state)
    blocks = _blocks(shape)
    found: dict[str, Any] = {}
    resolution = {len(v[0]): r for r, v in G_WIDTHS.items()}.get(len(blocks))
    head = shape.get("output_layer.0.gain")
    if resolution is None or head is None:
        return found
    ch = head[0] // G_WIDTHS[resolution][1][-1]
    found.update(resolution=resolution, G_ch=ch)
    found["G_attn"] = _attention_list([8 * 2**i for i in blocks if f"blocks.{i}.1.gamma" in shape])
    found["num_G_SVs"] = max(1, sum(f"linear.u{i}" in shape for i in range(8)))
    found["G_param"] = "SN" if "linear.u0" in shape else "none"
    linear, gain = shape.get("linear.weight"), shape.get("blocks.0.0.bn1.gain.weight")
    if linear is not None and len(linear) == 2:
        rows = linear[0] / (ch * G_WIDTHS[resolution][0][0])
        if rows > 0 and math.isqrt(int(rows)) ** 2 == rows:
            found["bottom_width"] = math.isqrt(int(rows))
    shared = shape.get("shared.weight")
    found["G_shared"] = shared is not None
    if shared is not None and gain is not None and linear is not None:
        found.update(n_classes=shared[0], shared_dim=shared[1])
        found["hier"] = gain[1] > shared[1]
        slots = len(blocks) + 1 if found["hier"] else 1
        found["dim_z"] = linear[1] * slots
    elif gain is not None and linear is not None:
        found.update(n_classes=gain[0], dim_z=linear[1], hier=False)
    return found


def infer_discriminator_args(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The official Discriminator arguments these tensor shapes imply (as far as they tell)."""
    shape = shapes_of(state)
    blocks = _blocks(shape)
    found: dict[str, Any] = {}
    resolution = {len(v[0]): r for r, v in D_WIDTHS.items()}.get(len(blocks))
    first = shape.get("blocks.0.0.conv2.weight")
    if resolution is None or first is None:
        return found
    widths, _, labels = D_WIDTHS[resolution]
    found.update(resolution=resolution, D_ch=first[0] // widths[0])
    found["D_attn"] = _attention_list([labels[i] for i in blocks if f"blocks.{i}.1.gamma" in shape])
    found["num_D_SVs"] = max(1, sum(f"linear.u{i}" in shape for i in range(8)))
    second = shape.get("blocks.1.0.conv1.weight")
    if second is not None:
        found["D_wide"] = second[0] == found["D_ch"] * widths[1]  # hidden = out when wide
    if "embed.weight" in shape:
        found["n_classes"] = shape["embed.weight"][0]
    if "linear.weight" in shape:
        found["output_dim"] = shape["linear.weight"][0]
    return found


def _config(
    args: Mapping[str, Any], table: Mapping[str, tuple], base: BigGANConfig
) -> BigGANConfig:
    values = {}
    for name, (default, field_name) in table.items():
        if field_name is None:
            continue
        value = args.get(name, default)
        values[field_name] = value == "SN" if name == "G_param" else value
    return BigGANConfig(**{**base.__dict__, **values, "init": "none"})


def _fit(module_cls, cfg, state, weights, kwargs, inferred, what, optional=(), **module_kwargs):
    """Build `module_cls(cfg)` on the meta device and load `state` strictly into it."""
    with torch.device("meta"):
        model = module_cls(cfg, skip_init=True, **module_kwargs)
    expected = shapes_of(model.state_dict())
    problems = state_dict_problems(expected, shapes_of(state), optional=optional)
    if problems:
        hint = ", ".join(f"{k}={v!r}" for k, v in inferred.items())
        raise GenzooError(
            f"the weights in {where_of(weights)} do not fit the official {what} built from "
            f"{kwargs or 'the default arguments'}:\n  "
            + "\n  ".join(problems)
            + (
                f"\nThe weights look like {hint}; pass these, or nothing to infer them."
                if hint
                else ""
            )
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    state = {k: v.to(torch.float32, copy=copy) for k, v in state.items()}
    for key in expected.keys() - state.keys():  # the sv log buffers of TF-hub conversions
        state[key] = torch.ones(expected[key])
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_biggan(
    weights: str | Path | Mapping[str, Any], device: str | torch.device | None = None, **kwargs: Any
) -> OfficialBigGAN:
    """An official BigGAN generator (ajbrock layout) in eval mode, strictly loaded.

    `kwargs`: the official `Generator` arguments (G_ch, dim_z, bottom_width, resolution, G_attn,
    n_classes, G_shared, shared_dim, hier, BN_eps, SN_eps, num_G_SVs, num_G_SV_itrs, G_param,
    norm_style; training-only ones are accepted and ignored). `pipe.model(z, y)` takes int labels
    and does the shared-embedding lookup itself (the official forward takes the embedding).
    """
    _check_names(kwargs, GENERATOR_ARGS, "BigGAN Generator")
    state = read_state_dict(weights)
    inferred = infer_generator_args(state)
    if not inferred:
        first = ", ".join(list(state)[:5]) or "none"
        raise GenzooError(
            f"{where_of(weights)} does not look like a BigGAN generator (ajbrock layout): no "
            f"'output_layer.0.gain' or no block count of a known resolution (first keys: {first})"
        )
    args = {**inferred, **kwargs}
    has_log = any(re.search(r"\.sv\d+$", k) for k in state)
    spectral = any(k.endswith(".u0") for k in state)
    if spectral and not has_log and not {"BN_eps", "SN_eps"} <= set(kwargs):
        warnings.warn(
            f"{where_of(weights)} has no sv0 buffers, as TF-hub conversions: those were made with "
            "BN_eps=1e-4 and SN_eps=1e-4; pass both, or the official defaults (1e-5, 1e-12) "
            "are used",
            stacklevel=2,
        )
    cfg = _config(args, GENERATOR_ARGS, BigGANConfig(d_attn="0"))
    optional = tuple(f".sv{i}" for i in range(cfg.g_num_svs))
    model = _fit(BigGANGenerator, cfg, state, weights, kwargs, inferred, "Generator", optional)
    dev = _device(device)
    return OfficialBigGAN(model.to(dev), cfg, dev, "biggan")


def load_biggan_discriminator(
    weights: str | Path | Mapping[str, Any], device: str | torch.device = "cpu", **kwargs: Any
) -> nn.Module:
    """An official BigGAN discriminator (ajbrock `D.pth`) in eval mode, on CPU unless `device`
    says otherwise (a bare module has no pipeline to tell its device): D(x, y) -> (N, 1).

    `kwargs`: the official `Discriminator` arguments (D_ch, D_wide, resolution, D_attn,
    n_classes, num_D_SVs, num_D_SV_itrs, SN_eps, output_dim)."""
    _check_names(kwargs, DISCRIMINATOR_ARGS, "BigGAN Discriminator")
    state = read_state_dict(weights)
    inferred = infer_discriminator_args(state)
    if not inferred:
        raise GenzooError(
            f"{where_of(weights)} does not look like a BigGAN discriminator (ajbrock layout): it "
            "needs 'blocks.0.0.conv2.weight' and a block count of a known resolution"
        )
    args = {**inferred, **kwargs}
    cfg = _config(args, DISCRIMINATOR_ARGS, BigGANConfig(g_attn="0"))
    optional = tuple(f".sv{i}" for i in range(cfg.d_num_svs))
    output_dim = int(args.get("output_dim", 1))
    model = _fit(
        BigGANDiscriminator, cfg, state, weights, kwargs, inferred, "Discriminator", optional,
        output_dim=output_dim,
    )  # fmt: skip
    return model.to(device)


# -- BigGAN-deep ------------------------------------------------------------------------------


def infer_deep_fields(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The HF BigGANConfig fields these tensor shapes imply. The upsampling flags are not in
    the shapes: they are the released lists' when the widths match one, else every second
    block upsamples, as in all released models."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}
    emb, bn = shape.get("embeddings.weight"), shape.get("generator.bn.running_means")
    if emb is None or bn is None:
        return found
    ch = bn[1]
    found.update(z_dim=emb[0], num_classes=emb[1], channel_width=ch, n_stats=bn[0])
    found["class_embed_dim"] = emb[0]
    widths, attention = [], None
    for j in _blocks(shape, "generator.layers."):
        p = f"generator.layers.{j}."
        if p + "gamma" in shape:
            attention = len(widths)
        elif p + "conv_0.weight_orig" in shape and p + "conv_3.weight_orig" in shape:
            widths.append(
                (shape[p + "conv_0.weight_orig"][1] // ch, shape[p + "conv_3.weight_orig"][0] // ch)
            )
    released = {tuple((a, b) for _, a, b in v): v for v in RELEASED_LAYERS.values()}
    layers = released.get(tuple(widths)) or [(i % 2 == 1, a, b) for i, (a, b) in enumerate(widths)]
    found["layers"] = [list(e) for e in layers]
    found["output_dim"] = 4 * 2 ** sum(bool(e[0]) for e in layers)
    found["attention_layer_position"] = -1 if attention is None else attention
    return found


def load_biggan_deep(
    weights: str | Path | Mapping[str, Any],
    device: str | torch.device | None = None,
    **fields_: Any,
) -> OfficialBigGAN:
    """The HF BigGAN-deep generator in eval mode, strictly loaded.

    `weights`: `pytorch_model.bin`, a `.safetensors`, a state dict, or a folder with
    `pytorch_model.bin` and `config.json`. `fields_`: HF BigGANConfig fields (output_dim, z_dim,
    class_embed_dim, channel_width, num_classes, layers, attention_layer_position, eps, n_stats),
    over those of config.json, over those read from the shapes. `pipe.model(z, y, truncation)`
    takes int labels or float class vectors (N, num_classes) and t in (0, 1].
    """
    unknown = sorted(set(fields_) - set(DEEP_FIELDS))
    if unknown:
        raise GenzooError(
            f"unknown BigGAN-deep config field(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(DEEP_FIELDS)}"
        )
    given = dict(fields_)
    if not isinstance(weights, Mapping) and Path(weights).is_dir():
        folder = Path(weights)
        if (folder / "config.json").is_file():
            stored = json.loads((folder / "config.json").read_text())
            given = {**{k: v for k, v in stored.items() if k in DEEP_FIELDS}, **given}
        weights = folder / "pytorch_model.bin"
    state = read_state_dict(weights)
    inferred = infer_deep_fields(state)
    if not inferred:
        raise GenzooError(
            f"{where_of(weights)} does not look like BigGAN-deep weights (HF layout): it needs "
            "'embeddings.weight' and 'generator.bn.running_means'"
        )
    args = {**inferred, **given}
    args["layers"] = [(bool(u), int(a), int(b)) for u, a, b in args["layers"]]
    cfg = BigGANDeepConfig(**args)
    with torch.device("meta"):
        model = BigGANDeep(cfg)
    problems = state_dict_problems(shapes_of(model.state_dict()), shapes_of(state))
    if problems:
        hint = ", ".join(f"{k}={v!r}" for k, v in inferred.items())
        raise GenzooError(
            f"the weights in {where_of(weights)} do not fit BigGAN-deep({given or 'defaults'}):\n  "
            + "\n  ".join(problems)
            + f"\nThe weights look like {hint}; pass these, or nothing to infer them."
        )
    copy = isinstance(weights, Mapping)
    state = {k: v.to(torch.float32, copy=copy) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    dev = _device(device)
    return OfficialBigGAN(model.eval().to(dev), cfg, dev, "biggan-deep")
