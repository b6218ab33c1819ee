"""Deterministic, resumable data order for the training loop.

The global stream of samples is a pure function of (seed, position): each epoch is a seeded
permutation of the dataset with a seeded horizontal-flip coin per sample. Step s consumes the
positions [s·B, (s+1)·B) of that stream, cut into `world × accum` micro-batches; micro-batch
j = a·world + rank goes to `rank` at accumulation step `a`. So a run resumes exactly from its
step alone, and the update does not depend on how the global batch is spread over processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def seed_for(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (stable across processes and platforms)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2)[0])


class SampleOrder:
    def __init__(self, n: int, seed: int, hflip: bool):
        self.n, self.seed, self.hflip = n, seed, hflip

    @lru_cache(maxsize=2)  # noqa: B019 - two epochs live at once at an epoch boundary
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        g = torch.Generator().manual_seed(seed_for(self.seed, 0xDA7A, epoch))
        perm = torch.randperm(self.n, generator=g).numpy()
        flips = (torch.rand(self.n, generator=g) < 0.5).numpy() & self.hflip
        return perm, flips

    def at(self, position: int) -> tuple[int, bool]:
        epoch, k = divmod(position, self.n)
        perm, flips = self._epoch(epoch)
        return int(perm[k]), bool(flips[k])


class _Indexed(Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, bool]):
        i, flip = item
        x, y = self.dataset.get(i, flip)
        return x, y


class _MicroBatches:
    """Batch sampler over (index, flip) pairs for one rank, from a start step onwards."""

    def __init__(self, order, start_step, batch, micro, rank, world, accum):
        self.order, self.start = order, start_step
        self.batch, self.micro, self.rank, self.world, self.accum = batch, micro, rank, world, accum

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        step = self.start
        while True:
            for a in range(self.accum):
                j = a * self.world + self.rank
                base = step * self.batch + j * self.micro
                yield [self.order.at(base + k) for k in range(self.micro)]
            step += 1


def micro_batches(
    dataset,
    *,
    batch_size: int,
    world: int,
    rank: int,
    accum: int,
    seed: int,
    hflip: bool,
    start_step: int,
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless iterator of this rank's micro-batches, `accum` per optimizer step."""
    micro = batch_size // (world * accum)
    order = SampleOrder(len(dataset), seed, hflip)
    sampler = _MicroBatches(order, start_step, batch_size, micro, rank, world, accum)
    loader = DataLoader(
        _Indexed(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return iter(loader)
