"""What can be evaluated: an ADM npz, a folder of PNG/JPEG images, a statistics file, or
in-memory uint8 NHWC batches. Each becomes an `ImageSource` that streams validated batches and
carries whatever precomputed statistics the file holds.

Statistics keys follow ADM's reference files: `mu`/`sigma` (Inception pool_3, 2048-d) and
`mu_s`/`sigma_s` (sFID spatial features, 2023-d); genzoo adds `mu_dinov2`/`sigma_dinov2`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genzoo.data.npz import (
    IMAGES_KEY,
    array_header,
    check_images_header,
    iter_npz_images,
    npz_info,
    npz_keys,
    read_npz_arrays,
    read_npz_labels,
)
from genzoo.errors import GenzooError
from genzoo.metrics.statistics import FeatureStats, check_finite

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
META_KEY = "genzoo_meta"
# feature kind -> (mean key, covariance key, dimension or None when set by the extractor)
STATS_KEYS: dict[str, tuple[str, str, int | None]] = {
    "pool3": ("mu", "sigma", 2048),
    "spatial": ("mu_s", "sigma_s", 2023),
    "dinov2": ("mu_dinov2", "sigma_dinov2", None),
}


@dataclass
class ImageSource:
    """A set of images (and/or their statistics) to evaluate or to compare against."""

    name: str
    kind: str  # "npz" | "folder" | "arrays" | "statistics"
    num: int | None = None  # images available (None: unknown until read)
    size: tuple[int, int] | None = None  # (height, width) of the images
    labels: np.ndarray | None = None
    stats: dict[str, FeatureStats] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    _reader: Callable[[int], Iterator[np.ndarray]] | None = None
    _consumed: bool = False

    @property
    def has_images(self) -> bool:
        return self._reader is not None

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        if self._reader is None:
            raise GenzooError(f"{self.name}: holds statistics only, no images")
        if self._consumed and self.kind == "arrays":
            raise GenzooError(f"{self.name}: an iterable of batches can be read only once")
        self._consumed = True
        count = 0
        for batch in self._reader(batch_size):
            batch = check_batch(batch, f"{self.name} (images {count}..)")
            if self.size is None:
                self.size = (batch.shape[1], batch.shape[2])
            elif batch.shape[1:3] != self.size:
                raise GenzooError(
                    f"{self.name}: image {count} is {batch.shape[2]}x{batch.shape[1]} but earlier "
                    f"ones are {self.size[1]}x{self.size[0]}; all images must share one size"
                )
            count += len(batch)
            yield batch
        if self.kind == "arrays":
            self.num = count


def check_batch(batch, where: str) -> np.ndarray:
    """A uint8 NHWC numpy batch, or a clear error (dtype, layout, value range)."""
    if torch.is_tensor(batch):
        batch = batch.detach().cpu().numpy()
    batch = np.asarray(batch)
    if batch.ndim == 3 and batch.shape[-1] == 3:
        batch = batch[None]
    if batch.dtype.kind == "f" and batch.size:
        lo, hi = float(np.nanmin(batch)), float(np.nanmax(batch))
        raise GenzooError(
            f"{where}: images must be uint8 0..255, got {batch.dtype} with values in "
            f"[{lo:.3g}, {hi:.3g}]; convert with genzoo.data.transforms.to_uint8 (from [-1, 1]) "
            "or (x * 255).round().clip(0, 255).astype(np.uint8) (from [0, 1])"
        )
    if batch.dtype != np.uint8 and batch.dtype.kind in "iu" and batch.size:
        lo, hi = int(batch.min()), int(batch.max())
        raise GenzooError(
            f"{where}: images must be uint8, got {batch.dtype} (values {lo}..{hi}); "
            + ("cast with .astype(np.uint8)" if lo >= 0 and hi <= 255 else "values exceed 0..255")
        )
    from genzoo.data.npz import ArrayHeader

    check_images_header(ArrayHeader(batch.shape, batch.dtype, False), where)
    return np.ascontiguousarray(batch)


# -- files --------------------------------------------------------------------------------------


def _folder_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise GenzooError(
            f"{path}: no {'/'.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} images in this "
            "folder (sub-folders are not searched)"
        )
    return files


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise GenzooError(
                    f"{path}: image mode {im.mode}, expected 8-bit RGB; convert it "
                    "(e.g. Image.open(p).convert('RGB').save(p))"
                )
            return np.asarray(im)
    except OSError as e:
        raise GenzooError(f"{path}: cannot be read as an image ({e})") from e


def _folder_source(path: Path) -> ImageSource:
    files = _folder_files(path)
    first = _read_image(files[0])

    def reader(batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(files), batch_size):
            images = []
            for f in files[start : start + batch_size]:
                image = _read_image(f)
                if image.shape != first.shape:
                    raise GenzooError(
                        f"{f}: {image.shape[1]}x{image.shape[0]} px, but {files[0].name} is "
                        f"{first.shape[1]}x{first.shape[0]}; all images must share one size"
                    )
                images.append(image)
            yield np.stack(images)

    return ImageSource(
        name=str(path), kind="folder", num=len(files), size=first.shape[:2], path=path,
        _reader=reader,
    )  # fmt: skip


def read_statistics(path: Path, keys: Iterable[str]) -> dict[str, FeatureStats]:
    """Precomputed statistics of an npz, validated for shape and finiteness."""
    present = set(keys)
    wanted = [k for kind in STATS_KEYS.values() for k in kind[:2] if k in present]
    arrays = read_npz_arrays(path, wanted)
    stats = {}
    for kind, (mu_key, sigma_key, dim) in STATS_KEYS.items():
        if mu_key not in arrays and sigma_key not in arrays:
            continue
        if mu_key not in arrays or sigma_key not in arrays:
            raise GenzooError(f"{path}: has only one of '{mu_key}' and '{sigma_key}'")
        mu, sigma = arrays[mu_key], arrays[sigma_key]
        d = dim or (mu.shape[0] if mu.ndim == 1 else -1)
        if mu.shape != (d,) or sigma.shape != (d, d):
            raise GenzooError(
                f"{path}: '{mu_key}' must have shape [{d}] and '{sigma_key}' [{d}, {d}], got "
                f"{mu.shape} and {sigma.shape}; is this an ADM reference/statistics file?"
            )
        check_finite(mu, f"{path}[{mu_key}]")
        check_finite(sigma, f"{path}[{sigma_key}]")
        stats[kind] = FeatureStats(mu, sigma, num=0)
    return stats


def _npz_source(path: Path) -> ImageSource:
    keys = npz_keys(path)
    stats = read_statistics(path, keys)
    meta = {}
    if META_KEY in keys:
        raw = read_npz_arrays(path, [META_KEY])[META_KEY]
        try:
            meta = json.loads(str(np.asarray(raw).reshape(-1)[0]))
        except (ValueError, IndexError) as e:
            raise GenzooError(f"{path}: unreadable '{META_KEY}' record ({e})") from e
    for kind, s in stats.items():
        s.num = int(meta.get("num_images", {}).get(kind, 0)) if isinstance(meta, dict) else 0
    header = array_header(path, IMAGES_KEY)
    if header is None:
        if not stats:
            raise GenzooError(
                f"{path}: neither images ('{IMAGES_KEY}') nor statistics ('mu'/'sigma'); keys "
                f"found: {', '.join(keys) or 'none'}"
            )
        size = tuple(meta["res"]) if "res" in meta else None
        return ImageSource(str(path), "statistics", 0, size, stats=stats, meta=meta, path=path)
    check_images_header(header, f"{path}[{IMAGES_KEY}]")
    info = npz_info(path)
    return ImageSource(
        name=str(path),
        kind="npz",
        num=info.num,
        size=(info.height, info.width),
        labels=read_npz_labels(path) if info.has_labels else None,
        stats=stats,
        meta=meta,
        path=path,
        _reader=lambda batch_size: iter_npz_images(path, batch_size),
    )


def open_source(source, *, what: str = "samples") -> ImageSource:
    """An `ImageSource` from a path (npz / folder), an array, a tensor or an iterable of batches."""
    if isinstance(source, ImageSource):
        return source
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        if path.is_dir():
            return _folder_source(path)
        if path.is_file() and path.suffix == ".npz":
            return _npz_source(path)
        if path.is_file():
            raise GenzooError(
                f"{what} {path}: expected an .npz file or a folder of PNG/JPEG images"
            )
        raise GenzooError(f"{what} {path}: no such file or folder")
    if isinstance(source, np.ndarray | torch.Tensor):
        array = check_batch(source, f"{what} array")

        def array_reader(batch_size: int) -> Iterator[np.ndarray]:
            for start in range(0, len(array), batch_size):
                yield array[start : start + batch_size]

        return ImageSource(
            f"<{what} array>", "npz", len(array), array.shape[1:3], _reader=array_reader
        )
    if isinstance(source, Iterable):
        iterable = source

        def iter_reader(batch_size: int) -> Iterator[np.ndarray]:
            yield from iterable  # batches keep the caller's size

        return ImageSource(f"<{what} batches>", "arrays", None, _reader=iter_reader)
    raise GenzooError(
        f"{what}: expected a path (.npz or image folder), a uint8 NHWC array or an iterable of "
        f"uint8 NHWC batches, got {type(source).__name__}"
    )


def label_policy(labels: np.ndarray | None, num: int | None) -> str:
    """A short description of the class balance, e.g. '50 per class (1000 classes)'."""
    if labels is None:
        return "unknown (no labels stored)"
    if num is not None and len(labels) != num:
        return f"labels do not match images ({len(labels)} labels, {num} images)"
    counts = np.bincount(labels) if len(labels) else np.zeros(0, int)
    present = counts[counts > 0]
    if len(present) == 0:
        return "no labels"
    if present.min() == present.max():
        return f"{int(present[0])} per class ({len(present)} classes)"
    return f"{int(present.min())}-{int(present.max())} per class ({len(present)} classes present)"
