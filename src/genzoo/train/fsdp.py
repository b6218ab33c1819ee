"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for models that do not fit one GPU (`train.fsdp`).

Each transformer block (every member of a top-level `nn.ModuleList`) becomes its own shard
unit, then the root takes what is left (embeddings, heads), so a rank holds 1/world of the
weights, gradients and optimizer state, and gathers one block at a time. Gradients are reduced
across ranks as DDP would average them, so a step equals the DDP step on the same global batch.
The EMA copy is sharded the same way, so its update stays local to each rank's shards.
"""

from __future__ import annotations

from torch import nn

from genzoo.errors import GenzooError


def shard_model(model: nn.Module, d) -> nn.Module:
    """Shard `model` in place over the default process group; returns it."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError as e:  # pragma: no cover - torch always has it at the pinned version
        raise GenzooError(f"train.fsdp needs torch.distributed.fsdp.fully_shard ({e})") from None
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(d.device.type, (d.world,))
    for child in model.children():
        if isinstance(child, nn.ModuleList):
            for block in child:
                fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
