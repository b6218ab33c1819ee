"""One pass over a set of images computing every feature the requested metrics need.

Images are read in batches; per batch the Inception network (and DINOv2 when asked) runs once,
statistics are accumulated in float64, and only what must be kept whole is kept: pool_3 features
for P/R and KID, logits for IS. Memory therefore grows with the features, not with the images.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from genzoo.metrics.inputs import ImageSource
from genzoo.metrics.statistics import FeatureStats, StreamingStats, check_finite


@dataclass
class Needs:
    """What to compute from one set's images."""

    stats: set[str] = field(default_factory=set)  # "pool3", "spatial", "dinov2"
    pool3: bool = False  # keep every pool_3 vector (P/R, KID)
    logits: bool = False  # keep every unbiased logit vector (IS)
    images: bool = False  # keep the images themselves (classifier metrics; small domains)

    @property
    def inception(self) -> bool:
        return self.pool3 or self.logits or bool(self.stats & {"pool3", "spatial"})

    @property
    def dinov2(self) -> bool:
        return "dinov2" in self.stats

    @property
    def any(self) -> bool:
        return self.inception or self.dinov2 or self.images


@dataclass
class Extracted:
    num: int = 0
    stats: dict[str, FeatureStats] = field(default_factory=dict)
    pool3: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    images: np.ndarray | None = None


class RowBuffer:
    """Rows appended batch by batch into one preallocated block (grown by doubling).

    Keeping many small per-batch arrays alive between the large temporary allocations of a
    forward pass fragments the C heap: process memory then grows by the size of those
    temporaries per batch, far beyond the features kept (about 200 KB per 128 px image was
    measured). One block per kept quantity avoids it.
    """

    def __init__(self, capacity: int | None):
        self.capacity = max(1, capacity or 1024)
        self.data: torch.Tensor | None = None
        self.num = 0

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().cpu()
        if self.data is None:
            self.data = torch.empty((self.capacity, *rows.shape[1:]), dtype=rows.dtype)
        if self.num + len(rows) > len(self.data):
            grown = torch.empty((2 * (self.num + len(rows)), *rows.shape[1:]), dtype=rows.dtype)
            grown[: self.num] = self.data[: self.num]
            self.data = grown
        self.data[self.num : self.num + len(rows)] = rows
        self.num += len(rows)

    def result(self) -> torch.Tensor | None:
        return None if self.data is None else self.data[: self.num]


@contextlib.contextmanager
def exact_float32():
    """Disable TF32 on CUDA so that GPU features match CPU ones to ~1e-5 (restored after)."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def extract(
    source: ImageSource,
    needs: Needs,
    *,
    inception: torch.nn.Module | None,
    dinov2: torch.nn.Module | None,
    batch_size: int,
    prepare: Callable[[np.ndarray], np.ndarray] = lambda b: b,
    progress: bool = False,
    desc: str = "features",
) -> Extracted:
    out = Extracted()
    if not needs.any:
        return out
    accumulators = {kind: StreamingStats(f"{source.name} {kind} features") for kind in needs.stats}
    pool3, logits, images = RowBuffer(source.num), RowBuffer(source.num), RowBuffer(source.num)
    bar = tqdm(total=source.num, desc=desc, unit="img", disable=not progress, file=sys.stderr)
    with exact_float32():
        for batch in _batches(source, batch_size):
            batch = prepare(batch)
            if not batch.flags.writeable:  # torch.from_numpy wants writable memory
                batch = batch.copy()
            if needs.inception:
                nchw = torch.from_numpy(batch).permute(0, 3, 1, 2)
                feats = inception(nchw)
                for kind in ("pool3", "spatial"):
                    if kind in accumulators:
                        accumulators[kind].update(feats[kind])
                if needs.pool3:
                    check_finite(feats["pool3"], f"{source.name} pool_3 features")
                    pool3.append(feats["pool3"].float())
                if needs.logits:
                    check_finite(feats["logits"], f"{source.name} Inception logits")
                    logits.append(feats["logits"].float())
            if needs.dinov2:
                accumulators["dinov2"].update(dinov2(batch))
            if needs.images:
                images.append(torch.from_numpy(batch))
            out.num += len(batch)
            bar.update(len(batch))
    bar.close()
    out.stats = {kind: acc.result() for kind, acc in accumulators.items()}
    out.pool3, out.logits = pool3.result(), logits.result()
    kept_images = images.result()
    out.images = kept_images.numpy() if kept_images is not None else None
    return out


def _batches(source: ImageSource, batch_size: int) -> Iterator[np.ndarray]:
    for batch in source.batches(batch_size):
        # Iterables may yield batches of any size; re-chunk large ones to bound memory.
        for start in range(0, len(batch), batch_size):
            yield batch[start : start + batch_size]
