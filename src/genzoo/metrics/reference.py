"""Reference batches: identifying them, and building new ones (`genzoo ref`).

A reference npz has the keys of ADM's `VIRTUAL_imagenet256_labeled.npz`: `arr_0`, up to 10,000
uint8 images used by precision/recall and KID, and `mu`, `sigma`, `mu_s`, `sigma_s`, the
Inception statistics over *all* images of the dataset (ADM uses the whole training set). genzoo
adds `arr_1` (labels of arr_0), optional DINOv2 statistics `mu_dinov2`/`sigma_dinov2`, and
`genzoo_meta`, a JSON string recording how the file was made. ADM's published file is read as is.

Images come from `genzoo.data.build_dataset`, so an ImageNet-layout folder gets ADM's
`center_crop_arr` preprocessing. One streamed pass computes the statistics and writes the kept
images; memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import genzoo
from genzoo.data.npz import IMAGES_KEY, LABELS_KEY, NpzWriter
from genzoo.errors import GenzooError
from genzoo.metrics.features import exact_float32
from genzoo.metrics.inputs import META_KEY, STATS_KEYS, ImageSource
from genzoo.metrics.statistics import StreamingStats
from genzoo.metrics.weights import file_sha256

ADM_REFERENCE_IMAGES = 10_000


def reference_id(source: ImageSource) -> str:
    """File name plus sha256 prefix (files), or a description of where the images came from."""
    if source.path is not None and source.path.is_file():
        return f"{source.path.name} sha256:{file_sha256(source.path)[:16]}"
    if source.path is not None:
        return f"folder {source.path} ({source.num} images)"
    return source.name


def build_reference(
    data: str,
    res: int,
    out: str | Path,
    *,
    num_images: int = ADM_REFERENCE_IMAGES,
    seed: int = 0,
    data_seed: int = 0,
    batch_size: int = 50,
    device: str = "cpu",
    workers: int = 0,
    skip_bad: bool = False,
    inception_weights: str | None = None,
    dinov2_weights: str | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> dict:
    """Statistics over every image of `data` at `res`, plus `num_images` random images.

    `seed` draws the kept images; `data_seed` picks the stream of procedural datasets.
    """
    from genzoo.data import build_dataset
    from genzoo.metrics.inception import InceptionFeatures

    out = Path(out)
    if out.suffix != ".npz":
        raise GenzooError(f"--out {out}: a reference is written as an .npz file")
    if num_images < 0:
        raise GenzooError(f"--num-images must be >= 0, got {num_images}")
    ds = build_dataset(data, res, train=True, seed=data_seed, skip_bad=skip_bad)
    if getattr(ds, "is_latent", False):
        raise GenzooError(f"data {data!r} is a latent cache; a reference needs images")
    n = len(ds)
    if n < 2:
        raise GenzooError(f"data {data!r} has {n} image(s); statistics need at least 2")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(n, size=min(num_images, n), replace=False))
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[keep] = True

    inception = InceptionFeatures(inception_weights, allow_download=allow_download).to(device)
    dinov2 = None
    if dinov2_weights is not None:
        from genzoo.metrics.dinov2 import DinoFeatures

        dinov2 = DinoFeatures(dinov2_weights, allow_download=allow_download).to(device)
    acc = {kind: StreamingStats(f"{data} {kind} features") for kind in ("pool3", "spatial")}
    if dinov2 is not None:
        acc["dinov2"] = StreamingStats(f"{data} dinov2 features")
    kept_labels = np.empty(len(keep), dtype=np.int64)  # one block: see features.RowBuffer
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers)

    def kept_batches() -> Iterator[np.ndarray]:
        start = kept = 0
        bar = tqdm(total=n, desc="reference", unit="img", disable=not progress, file=sys.stderr)
        with exact_float32():
            for images, labels in loader:
                feats = inception(images)
                acc["pool3"].update(feats["pool3"])
                acc["spatial"].update(feats["spatial"])
                nhwc = images.permute(0, 2, 3, 1).numpy()
                if dinov2 is not None:
                    acc["dinov2"].update(dinov2(nhwc))
                mask = keep_mask[start : start + len(images)]
                kept_labels[kept : kept + mask.sum()] = np.asarray(labels)[mask]
                kept += int(mask.sum())
                start += len(images)
                bar.update(len(images))
                yield np.ascontiguousarray(nhwc[mask])
        bar.close()

    with NpzWriter(out) as writer:
        writer.write_stream(IMAGES_KEY, (len(keep), res, res, 3), np.uint8, kept_batches())
        writer.write_array(LABELS_KEY, kept_labels)
        for kind, stats in ((k, a.result()) for k, a in acc.items()):
            mu_key, sigma_key, _ = STATS_KEYS[kind]
            writer.write_array(mu_key, stats.mu)
            writer.write_array(sigma_key, stats.sigma)
        meta = {
            "format": "genzoo reference v1",
            "data": data,
            "data_seed": data_seed,
            "res": [res, res],
            "preprocessing": "genzoo.data.build_dataset (folders: ADM center_crop_arr)",
            "num_images": {kind: a.num for kind, a in acc.items()},
            "arr_0": f"{len(keep)} images drawn without replacement, seed {seed}, dataset order",
            "inception_weights_sha256": inception.weights_sha256,
            "dinov2_weights_sha256": dinov2.weights_sha256 if dinov2 is not None else None,
            "genzoo_version": genzoo.__version__,
        }
        writer.write_array(META_KEY, np.array(json.dumps(meta)))
    return {"path": str(out), **meta}
