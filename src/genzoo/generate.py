"""Sample many images into one ADM npz, on one process or sharded over `torchrun` ranks.

Each rank renders a contiguous slice of the sample indices into its own memory-mapped part
file (hidden name beside the output); rank 0 then streams the parts, in index order, into the
final npz, written under a temporary name and renamed. An interrupted job therefore never leaves
a truncated file under the final name. Sample i depends on (seed, i) only.

Resuming: beside each part, a small progress file records how many samples of the slice are
done and a fingerprint of everything they depend on (weights, labels, seed, sampler settings,
slice). Re-running the same command after a crash or kill continues each slice where it
stopped; if anything differs, the slice starts afresh.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genzoo.errors import GenzooError
from genzoo.files import atomic_write
from genzoo.pipeline import Pipeline, write_grid
from genzoo.train.distributed import Dist, barrier
from genzoo.train.loader import seed_for


def make_labels(num: int | None, num_classes: int, per_class: int | None, seed: int) -> np.ndarray:
    """Class labels of the samples, in file order.

    With `per_class`, exactly that many of every class, in a seeded shuffled order (a
    class-sorted file lowers the Inception Score under contiguous IS splits); otherwise `num`
    labels drawn uniformly at random, as the DiT/SiT FID scripts do.
    """
    rng = np.random.default_rng(seed_for(seed, 0x1AB))
    if per_class:
        total = per_class * num_classes
        if num is not None and num != total:
            raise GenzooError(
                f"--num {num} disagrees with --per-class {per_class} × {num_classes} classes "
                f"= {total}; drop --num or make them agree"
            )
        return rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)
    if not num or num <= 0:
        raise GenzooError("give --num N (> 0) or --per-class K")
    return rng.integers(0, num_classes, size=num).astype(np.int64)


def _part_path(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f".{out.name}.part{rank}-of-{world}.npy")


def _progress_path(part: Path) -> Path:
    return part.with_suffix(".json")


def _weights_fingerprint(*modules: torch.nn.Module | None) -> str:
    """A fingerprint of the weights: every tensor's float64 sum and absolute sum."""
    sums = []
    with torch.no_grad():
        for module in modules:
            if module is None:
                continue
            for name, t in module.state_dict().items():
                if t.is_floating_point():
                    t = t.double()
                    sums.append(f"{name}:{t.sum().item():.17g}:{t.abs().sum().item():.17g}")
    return hashlib.sha256("\n".join(sums).encode()).hexdigest()


def _slice_identity(pipe: Pipeline, labels, seed, lo, hi, world, res, sample_kwargs) -> str:
    described = {
        "weights": _weights_fingerprint(pipe.model, pipe.tokenizer),
        "labels": hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64)).hexdigest(),
        "seed": seed,
        "slice": [lo, hi, world],
        "res": res,
        "sampling": {k: repr(v) for k, v in sorted(sample_kwargs.items())},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _resume_point(part: Path, identity: str, shape: tuple[int, ...]) -> int:
    """Samples of this slice already in `part` (0 when absent or made by another job)."""
    try:
        progress = json.loads(_progress_path(part).read_text())
        if progress["identity"] != identity:
            return 0
        if np.load(part, mmap_mode="r").shape != shape:
            return 0
        return int(progress["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _record_progress(part: Path, identity: str, done: int) -> None:
    text = json.dumps({"identity": identity, "done": done})
    atomic_write(_progress_path(part), lambda tmp: Path(tmp).write_text(text))


def sample_to_npz(
    pipe: Pipeline,
    out: str | Path,
    labels: np.ndarray,
    *,
    d: Dist,
    seed: int = 0,
    batch_size: int = 32,
    grid: str | Path | None = None,
    quiet: bool = False,
    **sample_kwargs,
) -> Path | None:
    out = Path(out)
    if out.suffix != ".npz":
        raise GenzooError(f"--out {out}: expected a .npz file name")
    if d.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
    barrier(d)
    n = len(labels)
    lo, hi = n * d.rank // d.world, n * (d.rank + 1) // d.world
    res = pipe.image_size
    part = _part_path(out, d.rank, d.world)
    shape = (hi - lo, res, res, 3)
    identity = _slice_identity(pipe, labels, seed, lo, hi, d.world, res, sample_kwargs)
    done = _resume_point(part, identity, shape)
    if done:
        arr = np.load(part, mmap_mode="r+")
        if not quiet:
            print(f"rank {d.rank}: resuming at sample {lo + done} ({done} of {hi - lo} done)")
    else:
        arr = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=shape)
    bar = tqdm(total=n, initial=done * d.world, desc="sample", unit="img",
               disable=quiet or not d.is_main)  # fmt: skip
    try:
        for s in range(lo + done, hi, batch_size):
            e = min(s + batch_size, hi)
            arr[s - lo : e - lo] = pipe.sample(
                labels[s:e], seed=seed, indices=range(s, e), batch_size=batch_size, **sample_kwargs
            )
            arr.flush()  # the samples are on disk before the progress file counts them
            _record_progress(part, identity, e - lo)
            done = e - lo  # counted on disk: a re-run starts here
            bar.update((e - s) * d.world)
    except BaseException:
        if done:
            if not quiet:
                print(f"rank {d.rank}: interrupted; run the same command again to continue")
        else:  # nothing finished: leave nothing behind
            del arr
            part.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    del arr
    barrier(d)
    if not d.is_main:
        return None
    from genzoo.data.npz import write_npz

    parts = [_part_path(out, r, d.world) for r in range(d.world)]

    def batches():
        for p in parts:
            a = np.load(p, mmap_mode="r")
            for s in range(0, len(a), 256):
                yield np.ascontiguousarray(a[s : s + 256])

    write_npz(out, batches(), labels=labels, num=n)
    if grid is not None:
        _grid_from_parts(parts, labels, grid)
    # this job's parts, and any left by an interrupted job with another number of processes
    for p in out.parent.glob(f".{glob.escape(out.name)}.part*-of-*.*"):
        p.unlink(missing_ok=True)
    return out


def _grid_from_parts(parts: list[Path], labels: np.ndarray, grid: str | Path) -> None:
    """One row per class (up to 10 classes, 8 samples each) from the samples just written."""
    arrays = [np.load(p, mmap_mode="r") for p in parts]
    offsets = np.cumsum([0] + [len(a) for a in arrays])

    def image(i: int) -> np.ndarray:
        k = int(np.searchsorted(offsets, i, side="right") - 1)
        return np.asarray(arrays[k][i - offsets[k]])

    rows = []
    for c in sorted(set(labels.tolist()))[:10]:
        idx = np.flatnonzero(labels == c)[:8]
        rows.append([image(int(i)) for i in idx])
    cols = max(len(r) for r in rows)
    blank = np.full_like(rows[0][0], 255)
    tiles = [r[k] if k < len(r) else blank for r in rows for k in range(cols)]
    write_grid(grid, np.stack(tiles), rows=len(rows))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
