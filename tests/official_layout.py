"""Test helper: the official DiT/SiT state-dict layout, written from the specification's key table.

Independent of genzoo's modules: keys and shapes come from the table (checkpoint-layouts.md §1),
the position table from its formula (§4). Used to build random "official" checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch

OFFICIAL_DEFAULTS = dict(
    input_size=32,
    patch_size=2,
    in_channels=4,
    hidden_size=1152,
    depth=28,
    num_heads=16,
    mlp_ratio=4.0,
    class_dropout_prob=0.1,
    num_classes=1000,
    learn_sigma=True,
)
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def official_args(name: str | None = None, **overrides) -> dict:
    """Constructor arguments: the defaults, a published name like "XL/2", then overrides."""
    args = dict(OFFICIAL_DEFAULTS)
    if name is not None:
        size, patch = name.split("/")
        depth, hidden, heads = SIZES[size]
        args.update(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch))
    args.update(overrides)
    return args


def official_shapes(**args) -> list[tuple[str, tuple[int, ...]]]:
    """[(key, shape)] in state_dict() order for the given constructor arguments."""
    a = {**OFFICIAL_DEFAULTS, **args}
    D, L, p, C = a["hidden_size"], a["depth"], a["patch_size"], a["in_channels"]
    C_out = 2 * C if a["learn_sigma"] else C
    T = (a["input_size"] // p) ** 2
    K_rows = a["num_classes"] + (1 if a["class_dropout_prob"] > 0 else 0)
    M = int(D * a["mlp_ratio"])
    table = [
        ("pos_embed", (1, T, D)),
        ("x_embedder.proj.weight", (D, C, p, p)),
        ("x_embedder.proj.bias", (D,)),
        ("t_embedder.mlp.0.weight", (D, 256)),
        ("t_embedder.mlp.0.bias", (D,)),
        ("t_embedder.mlp.2.weight", (D, D)),
        ("t_embedder.mlp.2.bias", (D,)),
        ("y_embedder.embedding_table.weight", (K_rows, D)),
    ]
    per_block = [
        ("attn.qkv.weight", (3 * D, D)),
        ("attn.qkv.bias", (3 * D,)),
        ("attn.proj.weight", (D, D)),
        ("attn.proj.bias", (D,)),
        ("mlp.fc1.weight", (M, D)),
        ("mlp.fc1.bias", (M,)),
        ("mlp.fc2.weight", (D, M)),
        ("mlp.fc2.bias", (D,)),
        ("adaLN_modulation.1.weight", (6 * D, D)),
        ("adaLN_modulation.1.bias", (6 * D,)),
    ]
    for i in range(L):
        table += [(f"blocks.{i}.{name}", shape) for name, shape in per_block]
    table += [
        ("final_layer.linear.weight", (p * p * C_out, D)),
        ("final_layer.linear.bias", (p * p * C_out,)),
        ("final_layer.adaLN_modulation.1.weight", (2 * D, D)),
        ("final_layer.adaLN_modulation.1.bias", (2 * D,)),
    ]
    return table


def element_count(**args) -> int:
    return sum(math.prod(shape) for _, shape in official_shapes(**args))


def sincos_table(dim: int, grid: int) -> np.ndarray:
    """§4 formula, float64: token n = row·G + col; first dim/2 channels from the column index,
    each half = dim/4 sines then dim/4 cosines, ω_k = 10000^(−k/(dim/4))."""
    quarter = dim // 4
    omega = np.array([10000.0 ** (-k / quarter) for k in range(quarter)])
    out = np.zeros((grid * grid, dim))
    for row in range(grid):
        for col in range(grid):
            n = row * grid + col
            for half, pos in enumerate((col, row)):
                base = half * (dim // 2)
                out[n, base : base + quarter] = np.sin(pos * omega)
                out[n, base + quarter : base + 2 * quarter] = np.cos(pos * omega)
    return out


def random_official_state_dict(seed: int = 0, **args) -> dict[str, torch.Tensor]:
    """Random float32 weights with the official keys/shapes (every tensor non-zero, matrices
    scaled by 1/sqrt(fan-in) so activations stay O(1)); pos_embed holds the true table."""
    a = {**OFFICIAL_DEFAULTS, **args}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(**a):
        if key == "pos_embed":
            grid = a["input_size"] // a["patch_size"]
            table = sincos_table(a["hidden_size"], grid)
            state[key] = torch.from_numpy(table).float().unsqueeze(0)
            continue
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        scale = 1 / math.sqrt(fan_in) if len(shape) > 1 else 0.1
        state[key] = torch.randn(shape, generator=g) * scale
    return state
