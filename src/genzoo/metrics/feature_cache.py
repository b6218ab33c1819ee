"""A disk cache of reference-set features, so that a reference batch is read through the
networks once, not on every `genzoo eval` or every `--eval-every` of a training run.

P/R and KID need every pool_3 vector of the reference images and FD-DINOv2 needs their DINOv2
statistics; ADM's reference npz holds the Inception statistics only, so without a cache each
evaluation re-extracts its 10,000 images. An entry is keyed by the reference file's sha256, the
extractors' weights hashes and what was extracted; it is written to a temporary file and renamed,
so an interrupted write never leaves a truncated entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from genzoo.files import atomic_write
from genzoo.metrics.features import Extracted, Needs
from genzoo.metrics.inputs import ImageSource
from genzoo.metrics.statistics import FeatureStats
from genzoo.metrics.weights import file_sha256

CACHE_ENV = "GENZOO_CACHE"
FORMAT = 1


def default_cache_dir() -> Path:
    """$GENZOO_CACHE/reference-features, else ~/.cache/genzoo/reference-features."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "genzoo"
    return Path(root) / "reference-features"


def cache_key(source: ImageSource, needs: Needs, extractors: dict[str, dict]) -> str | None:
    """A name for the features `needs` of `source`; None when the source is not a fixed file."""
    if source.path is None or not source.path.is_file():
        return None  # folders and in-memory arrays can change without a trace
    identity = {
        "format": FORMAT,
        "reference_sha256": file_sha256(source.path),
        "stats": sorted(needs.stats),
        "pool3": needs.pool3,
        "logits": needs.logits,
        "extractors": {
            name: {k: v for k, v in info.items() if k != "weights"}  # the hash, not the path
            for name, info in sorted(extractors.items())
        },
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return f"{source.path.stem}-{digest}.npz"


def load_features(folder: Path, key: str) -> Extracted | None:
    path = folder / key
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            out = Extracted(num=int(f["num"]))
            for kind in json.loads(str(f["stats"])):
                out.stats[kind] = FeatureStats(f[f"mu_{kind}"], f[f"sigma_{kind}"], out.num)
            if "pool3" in f:
                out.pool3 = torch.from_numpy(f["pool3"])
            if "logits" in f:
                out.logits = torch.from_numpy(f["logits"])
    except Exception:  # unreadable entry (another version, a damaged disk): extract afresh
        return None
    return out


def save_features(folder: Path, key: str, features: Extracted) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "num": np.asarray(features.num),
        "stats": np.asarray(json.dumps(sorted(features.stats))),
    }
    for kind, stats in features.stats.items():
        arrays[f"mu_{kind}"], arrays[f"sigma_{kind}"] = stats.mu, stats.sigma
    if features.pool3 is not None:
        arrays["pool3"] = features.pool3.numpy()
    if features.logits is not None:
        arrays["logits"] = features.logits.numpy()
    return atomic_write(folder / key, lambda tmp: _savez(tmp, arrays))


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **arrays)
