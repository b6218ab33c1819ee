"""ADM npz files: `arr_0` uint8 images [N, H, W, 3] (NHWC, RGB) and optional `arr_1` labels [N].

This is the container of the ImageNet evaluation protocol (guided-diffusion's sampler and
evaluator, DiT's `sample_ddp.py`). 50,000 images at 256x256 take 9.8 GB, so nothing here loads
`arr_0` whole: the reader streams the zip member in batches and the writer streams batches into
an uncompressed npz that `np.load` reads back unchanged. The writer works on a temporary file in
the destination folder and renames it at the end, so an interrupted job never leaves a truncated
file under the final name.
"""

from __future__ import annotations

import ast
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from genzoo.errors import GenzooError

IMAGES_KEY = "arr_0"
LABELS_KEY = "arr_1"


@dataclass(frozen=True)
class NpzInfo:
    num: int
    height: int
    width: int
    channels: int
    dtype: str
    has_labels: bool


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


# -- reading ------------------------------------------------------------------------------------


def _open_zip(path: str | Path) -> zipfile.ZipFile:
    path = Path(path)
    if not path.is_file():
        raise GenzooError(f"{path}: no such file (expected an ADM .npz with arr_0 images)")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise GenzooError(
            f"{path}: not a valid .npz (zip) file ({e}); a truncated write or a plain .npy file? "
            "Re-create it with np.savez or genzoo sample"
        ) from e


def _member(zf: zipfile.ZipFile, key: str) -> str | None:
    names = zf.namelist()
    for name in (f"{key}.npy", key):
        if name in names:
            return name
    return None


def _read_header(fp: IO[bytes], where: str) -> ArrayHeader:
    """Parse the .npy header (format versions 1-3) and leave `fp` at the first data byte."""
    try:
        major, _minor = np.lib.format.read_magic(fp)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif major == 2:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        elif major == 3:  # utf-8 header, same layout as version 2
            length = int.from_bytes(fp.read(4), "little")
            meta = ast.literal_eval(fp.read(length).decode("utf-8"))
            shape, fortran, dtype = meta["shape"], meta["fortran_order"], np.dtype(meta["descr"])
        else:
            raise ValueError(f"unsupported .npy format version {major}")
    except (ValueError, KeyError, SyntaxError) as e:
        raise GenzooError(f"{where}: unreadable .npy header ({e})") from e
    return ArrayHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran))


def array_header(path: str | Path, key: str) -> ArrayHeader | None:
    """Shape, dtype and order of array `key` of an npz without reading its data (None if absent)."""
    with _open_zip(path) as zf:
        name = _member(zf, key)
        if name is None:
            return None
        with zf.open(name) as fp:
            return _read_header(fp, f"{path}[{key}]")


def check_images_header(header: ArrayHeader, where: str) -> None:
    """Reject anything that is not a C-ordered uint8 [N, H, W, 3] array, saying how to fix it."""
    shape, dtype = header.shape, header.dtype
    if len(shape) != 4:
        raise GenzooError(
            f"{where}: images must be a 4-D uint8 array [N, H, W, 3] (NHWC), got shape {shape}"
        )
    if shape[-1] != 3:
        hint = (
            " It looks like NCHW: transpose with x.transpose(0, 2, 3, 1)."
            if shape[1] in (1, 3)
            else " Only RGB images are supported."
        )
        raise GenzooError(
            f"{where}: images must be NHWC with 3 channels last, got shape {shape}.{hint}"
        )
    if dtype != np.uint8:
        hint = (
            " Float images in [0, 1] or [-1, 1] give meaningless metrics; convert with "
            "genzoo.data.transforms.to_uint8 (from [-1, 1]) or (x * 255).round().clip(0, 255)"
            ".astype(np.uint8) (from [0, 1])."
            if dtype.kind == "f"
            else " Convert to uint8 0..255."
        )
        raise GenzooError(f"{where}: images must have dtype uint8, got {dtype}.{hint}")
    if header.fortran_order:
        raise GenzooError(
            f"{where}: arr_0 is stored in Fortran order and cannot be streamed; re-save it "
            "C-ordered (np.ascontiguousarray) or with genzoo.data.npz.write_npz"
        )


def npz_info(path: str | Path) -> NpzInfo:
    """Number of images, their size and whether labels are present; validates the layout."""
    header = array_header(path, IMAGES_KEY)
    if header is None:
        raise GenzooError(
            f"{path}: no '{IMAGES_KEY}' array; an ADM sample file stores its uint8 images "
            f"[N, H, W, 3] as arr_0 (np.savez(path, images, labels))"
        )
    check_images_header(header, f"{path}[{IMAGES_KEY}]")
    n, h, w, c = header.shape
    labels = array_header(path, LABELS_KEY)
    return NpzInfo(n, h, w, c, str(header.dtype), labels is not None)


def iter_npz_images(path: str | Path, batch_size: int) -> Iterator[np.ndarray]:
    """Yield uint8 NHWC batches of `arr_0` in file order, reading the zip member as a stream.

    Only one batch is in memory at a time, whatever the number of images.
    """
    if batch_size < 1:
        raise GenzooError(f"batch_size must be >= 1, got {batch_size}")
    info = npz_info(path)
    image_bytes = info.height * info.width * info.channels
    with _open_zip(path) as zf, zf.open(_member(zf, IMAGES_KEY)) as fp:
        _read_header(fp, f"{path}[{IMAGES_KEY}]")
        for start in range(0, info.num, batch_size):
            count = min(batch_size, info.num - start)
            data = _read_exact(fp, count * image_bytes, path, start)
            yield np.frombuffer(data, dtype=np.uint8).reshape(
                count, info.height, info.width, info.channels
            )


def _read_exact(fp: IO[bytes], size: int, path: str | Path, start: int) -> bytearray:
    """Exactly `size` bytes into a fresh (writable) buffer."""
    buffer = bytearray(size)
    view, filled = memoryview(buffer), 0
    while filled < size:
        n = fp.readinto(view[filled:])
        if not n:
            raise GenzooError(
                f"{path}: arr_0 ends early near image {start} (file truncated?); re-create it"
            )
        filled += n
    return buffer


def read_npz_labels(path: str | Path) -> np.ndarray | None:
    """`arr_1` as int64 [N], or None when the file has no labels."""
    labels = read_npz_arrays(path, [LABELS_KEY]).get(LABELS_KEY)
    if labels is None:
        return None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise GenzooError(
            f"{path}: arr_1 must be integer class labels of shape [N], got "
            f"{labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int64)


def read_npz_arrays(path: str | Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Load the named small arrays (statistics, labels) of an npz; absent keys are skipped."""
    with _open_zip(path):
        pass  # a clear error for missing or corrupt files
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in keys if k in data.files}


def npz_keys(path: str | Path) -> list[str]:
    with _open_zip(path) as zf:
        return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]


# -- writing ------------------------------------------------------------------------------------


class NpzWriter:
    """Write arrays one after another into an uncompressed npz, atomically.

    Use as a context manager: the file appears under its final name only when the block exits
    without an exception; otherwise the temporary file is removed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        self._tmp = Path(tmp)
        self._zip = zipfile.ZipFile(self._tmp, mode="w", compression=zipfile.ZIP_STORED)

    def write_array(self, key: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            array = array.copy(order="C")
        with self._zip.open(f"{key}.npy", mode="w", force_zip64=True) as fp:
            np.lib.format.write_array(fp, array, allow_pickle=False)

    def write_stream(
        self, key: str, shape: tuple[int, ...], dtype: np.dtype, batches: Iterable[np.ndarray]
    ) -> int:
        """Stream batches (stacked along axis 0) into array `key` of the given total shape."""
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        header["shape"] = tuple(int(s) for s in shape)
        written = 0
        with self._zip.open(f"{key}.npy", mode="w", force_zip64=True) as fp:
            np.lib.format.write_array_header_2_0(fp, header)
            for batch in batches:
                batch = np.asarray(batch)
                if batch.dtype != dtype or batch.shape[1:] != shape[1:]:
                    raise GenzooError(
                        f"{self.path}: batch of {batch.dtype} {batch.shape} does not fit array "
                        f"'{key}' of {dtype} {shape}; every batch must be {dtype} "
                        f"[n, {', '.join(map(str, shape[1:]))}]"
                    )
                if written + len(batch) > shape[0]:
                    raise GenzooError(
                        f"{self.path}: got more than the announced {shape[0]} items for '{key}'"
                    )
                fp.write(np.ascontiguousarray(batch).tobytes())
                written += len(batch)
        if written != shape[0]:
            raise GenzooError(
                f"{self.path}: got {written} items for '{key}' but {shape[0]} were announced"
            )
        return written

    def commit(self) -> Path:
        self._zip.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _peek(batches: Iterable[np.ndarray]) -> tuple[np.ndarray | None, Iterator[np.ndarray]]:
    it = iter(batches)
    for first in it:
        first = np.asarray(first)
        if first.size or first.ndim == 4:
            return first, _chain(first, it)
    return None, iter(())


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def write_npz(
    path: str | Path,
    batches: Iterable[np.ndarray],
    labels: np.ndarray | None,
    num: int,
    *,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Stream uint8 NHWC batches into `arr_0` (exactly `num` images), `labels` into `arr_1`.

    `extra` arrays (e.g. reference statistics) are stored after them under their own keys.
    """
    path = Path(path)
    first, batches = _peek(batches)
    if first is None:
        raise GenzooError(f"{path}: no image batches to write (expected {num} images)")
    header = ArrayHeader((num, *first.shape[1:]), first.dtype, False)
    check_images_header(ArrayHeader(first.shape, first.dtype, False), f"{path}: first batch")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num,) or labels.dtype.kind not in "iu":
            raise GenzooError(
                f"{path}: labels must be integers of shape [{num}], got {labels.dtype} "
                f"{labels.shape}"
            )
    with NpzWriter(path) as writer:
        writer.write_stream(IMAGES_KEY, header.shape, header.dtype, batches)
        if labels is not None:
            writer.write_array(LABELS_KEY, labels.astype(np.int64))
        for key, value in (extra or {}).items():
            writer.write_array(key, value)
    return path
