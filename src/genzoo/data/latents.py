"""Latent cache: encode a dataset once with a tokenizer, then train from the stored latents.

The same folder format holds token ids of a discrete tokenizer (a VQ): `tokens:DIR` reads it,
with int32 ids of shape [N, 2, h, w] in place of the latents.

A cache is a folder holding three files:

* `latents.npy`: [N, 2, C, h, w], float32 by default (float16 on request, half the disk).
  `[i, 0]` is the latent of image i and `[i, 1]` the latent of its horizontal mirror image, so
  flip augmentation needs no re-encoding. Read with a memory map.
* `labels.npy`: int64 [N].
* `meta.json`: tokenizer spec and scale, resolution, source data spec, count, seed, dtype, classes.

Each latent is one posterior sample drawn from its own CPU generator seeded with
`posterior_seed(seed, i, flip)`, so a cache depends on the seed only, not on the batch size,
the device or the order of work. The folder is written under a temporary name and renamed into
place when complete; `meta.json` is written last, so a folder with it is a finished cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from genzoo.data.base import ImageDataset
from genzoo.data.transforms import to_float
from genzoo.errors import GenzooError

FORMAT = "genzoo-latent-cache"
VERSION = 1
LATENTS_FILE, LABELS_FILE, META_FILE = "latents.npy", "labels.npy", "meta.json"
DTYPES = ("float32", "float16", "int32")  # int32: token ids of a discrete tokenizer


def posterior_seed(seed: int, index: int, flip: bool) -> int:
    """Seed of the generator that draws the posterior noise of item `index` (mirrored if flip)."""
    state = np.random.SeedSequence([seed, index, int(flip)]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def _generators(seed: int, indices: range, flip: bool) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(posterior_seed(seed, i, flip)) for i in indices]


# -- reading -----------------------------------------------------------------------------------


def read_meta(path: Path) -> dict[str, Any] | None:
    """The meta.json of a finished cache at `path`, or None when there is none."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


class LatentDataset(ImageDataset):
    """`latents:DIR`: items (float32 latent [C, h, w], label) from a cache written by
    `encode_dataset`; `get(i, flip=True)` returns the cached latent of the mirrored image."""

    is_latent = True

    def __init__(self, path: str | Path, res: int | None = None) -> None:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise GenzooError(
                f"latents:{path}: no such directory; create a cache with "
                f"`genzoo encode --data D --tokenizer T --res R --out {path}`"
            )
        meta = read_meta(root)
        if meta is None:
            raise GenzooError(
                f"latents:{path}: not a finished latent cache (no valid {META_FILE}); "
                "re-create it with `genzoo encode`"
            )
        if res is not None and res != meta["res"]:
            raise GenzooError(
                f"latents:{path}: the cache was encoded at resolution {meta['res']}, but "
                f"resolution {res} was asked for; set data.res={meta['res']} (or --res)"
            )
        self.spec = f"latents:{path}"
        self.root = root
        self.meta = meta
        self.res = int(meta["res"])
        self.num_classes = int(meta["num_classes"])
        self.class_names = list(meta["class_names"])
        self.labels = np.load(root / LABELS_FILE).astype(np.int64)
        self.latent_shape = tuple(meta["latent_shape"])
        if len(self.labels) != meta["count"]:
            raise GenzooError(
                f"latents:{path}: {LABELS_FILE} holds {len(self.labels)} labels but "
                f"{META_FILE} says {meta['count']}; the cache is damaged, re-create it"
            )
        self._latents: np.ndarray | None = None  # opened lazily, once per process
        self.item_dtype = np.int64 if meta.get("dtype") == "int32" else np.float32

    @property
    def latents(self) -> np.ndarray:
        """The memory-mapped [N, 2, C, h, w] array."""
        if self._latents is None:
            latents = np.load(self.root / LATENTS_FILE, mmap_mode="r")
            expected = (len(self.labels), 2, *self.latent_shape)
            if latents.shape != expected:
                raise GenzooError(
                    f"latents:{self.root}: {LATENTS_FILE} has shape {latents.shape}, expected "
                    f"{expected}; the cache is damaged, re-create it"
                )
            self._latents = latents
        return self._latents

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the memory map instead of receiving a copy of the data.
        return {**self.__dict__, "_latents": None}

    def _item(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        latent = np.array(self.latents[index, int(flip)], dtype=self.item_dtype)
        return torch.from_numpy(latent), int(self.labels[index])

    def get_batch(
        self, indices: np.ndarray, flips: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Many items at once (one gather from the memory map): latents [B, C, h, w], labels [B]."""
        indices = np.asarray(indices, dtype=np.int64)
        flips = np.asarray(flips, dtype=np.int64)
        order = np.argsort(indices, kind="stable")  # sequential reads from the map
        picked = np.empty((len(indices), *self.latent_shape), dtype=self.item_dtype)
        picked[order] = self.latents[indices[order], flips[order]]
        return torch.from_numpy(picked), torch.from_numpy(self.labels[indices])


# -- writing -----------------------------------------------------------------------------------


def _reuse_or_refuse(out: Path, wanted: dict[str, Any]) -> bool:
    """True when `out` holds the cache asked for; GenzooError when it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise GenzooError(f"latent cache output {out} is a file; choose another --out")
    meta = read_meta(out)
    if meta is not None:
        if all(meta.get(key) == value for key, value in wanted.items()):
            return True
        differing = [key for key, value in wanted.items() if meta.get(key) != value]
        raise GenzooError(
            f"{out} already holds a latent cache with different {', '.join(differing)}; "
            "choose another --out or delete it"
        )
    if any(out.iterdir()):
        raise GenzooError(
            f"{out} exists and is not empty, but is not a finished latent cache (no {META_FILE}); "
            "choose another --out, or delete the folder if it is a leftover"
        )
    return False


def encode_dataset(
    dataset: ImageDataset,
    tokenizer,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    workers: int = 0,
    dtype: str | None = None,
) -> Path:
    """Encode every image of `dataset` and its mirror image with `tokenizer` into `out_dir`.

    `dtype`: float32 / float16 latents, or int32 ids; None picks int32 for a discrete
    tokenizer and float32 otherwise.

    Moves the tokenizer to `device`. Returns the cache folder. An existing finished cache made
    from the same data, tokenizer, seed and dtype is reused as is.
    """
    if getattr(dataset, "is_latent", False):
        raise GenzooError(f"{dataset.spec} already holds latents; encode an image dataset")
    discrete = getattr(tokenizer, "discrete", False)
    dtype = dtype or ("int32" if discrete else "float32")
    if discrete != (dtype == "int32"):
        raise GenzooError(
            f"cache dtype {dtype!r} does not suit tokenizer {tokenizer.spec!r}: use int32 for the "
            "ids of a discrete tokenizer and float32 / float16 for latents"
        )
    if dtype not in DTYPES:
        raise GenzooError(f"latent cache dtype {dtype!r} is not supported; use one of {DTYPES}")
    out = Path(out_dir).expanduser()
    latent_shape = tokenizer.latent_shape(dataset.res)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": tokenizer.spec,
        "scale": float(tokenizer.scale),
        "res": int(dataset.res),
        "data": getattr(dataset, "spec", ""),
        "data_train": bool(getattr(dataset, "train", True)),
        "data_seed": int(getattr(dataset, "seed", 0)),
        "count": len(dataset),
        "seed": int(seed),
        "dtype": dtype,
        "latent_shape": list(latent_shape),
        "num_classes": int(dataset.num_classes),
        "class_names": list(dataset.class_names),
    }
    identity = {k: v for k, v in meta.items() if k not in ("latent_shape", "version")}
    if _reuse_or_refuse(out, identity):
        if progress:
            print(f"{out} already holds this latent cache; reusing it")
        return out

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        _write_latents(
            dataset,
            tokenizer,
            staging,
            latent_shape,
            batch_size,
            device,
            seed,
            progress,
            workers,
            dtype,
        )
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write_latents(
    dataset: ImageDataset,
    tokenizer,
    staging: Path,
    latent_shape: tuple[int, ...],
    batch_size: int,
    device: str | torch.device,
    seed: int,
    progress: bool,
    workers: int,
    dtype: str,
) -> None:
    count = len(dataset)
    latents = np.lib.format.open_memmap(
        staging / LATENTS_FILE, mode="w+", dtype=np.dtype(dtype), shape=(count, 2, *latent_shape)
    )
    labels = np.empty(count, dtype=np.int64)
    tokenizer.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    start = 0
    with tqdm(total=count, desc="encoding", unit="img", disable=not progress) as bar:
        for images, batch_labels in loader:
            stop = start + len(images)
            x = to_float(images).to(device)
            # Both views in one call; each item's noise comes from its own generator.
            generators = _generators(seed, range(start, stop), False)
            generators += _generators(seed, range(start, stop), True)
            z = tokenizer.encode(torch.cat([x, x.flip(-1)]), generator=generators)
            z = (z.float() if z.is_floating_point() else z).cpu().numpy()
            latents[start:stop] = np.moveaxis(z.reshape(2, stop - start, *latent_shape), 0, 1)
            labels[start:stop] = batch_labels.numpy()
            bar.update(stop - start)
            start = stop
    latents.flush()
    del latents
    np.save(staging / LABELS_FILE, labels)


def encode_command(
    data_spec: str,
    tokenizer_spec: str,
    res: int,
    out: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
    scale: float = 0.18215,
    quiet: bool = False,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    workers: int = 0,
    dtype: str | None = None,
) -> Path:
    """`genzoo encode`: build the dataset and tokenizer from their specs and write the cache.

    `seed` seeds both the procedural data (shapes) and the posterior noise.
    """
    from genzoo.data import build_dataset
    from genzoo.tokenizers import build_tokenizer

    if data_spec.startswith("latents:"):
        raise GenzooError(f"--data {data_spec} is already a latent cache; pass an image dataset")
    dataset = build_dataset(data_spec, res, train=True, seed=seed, skip_bad=skip_bad)
    tokenizer = build_tokenizer(tokenizer_spec, scale)
    discrete = getattr(tokenizer, "discrete", False)
    began = time.perf_counter()
    path = encode_dataset(
        dataset,
        tokenizer,
        out,
        batch_size=batch_size,
        device=device,
        seed=seed,
        progress=not quiet,
        workers=workers,
        dtype=dtype,
    )
    if not quiet:
        size = (path / LATENTS_FILE).stat().st_size / 2**20
        shape = "x".join(str(s) for s in tokenizer.latent_shape(res))
        print(
            f"{'token' if discrete else 'latent'} cache: {len(dataset)} images (+ mirrored) as "
            f"{shape} {'ids' if discrete else 'latents'}, {size:.1f} MiB in {path} "
            f"({time.perf_counter() - began:.1f} s); train with "
            f"--data {'tokens' if discrete else 'latents'}:{path}"
        )
    return path
