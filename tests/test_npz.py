"""ADM npz I/O: streaming reads equal np.load, writes are atomic and np.load-compatible."""

from __future__ import annotations

import numpy as np
import pytest

from genzoo.data.npz import (
    NpzInfo,
    iter_npz_images,
    npz_info,
    read_npz_labels,
    write_npz,
)
from genzoo.errors import GenzooError


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)


def batches_of(x: np.ndarray, size: int):
    return (x[i : i + size] for i in range(0, len(x), size))


def test_round_trip_is_readable_by_numpy(tmp_path, images):
    labels = np.arange(12) % 4
    path = write_npz(tmp_path / "s.npz", batches_of(images, 5), labels, num=12)
    with np.load(path) as data:
        assert sorted(data.files) == ["arr_0", "arr_1"]
        np.testing.assert_array_equal(data["arr_0"], images)
        np.testing.assert_array_equal(data["arr_1"], labels)
    assert npz_info(path) == NpzInfo(12, 32, 32, 3, "uint8", True)
    np.testing.assert_array_equal(read_npz_labels(path), labels)


@pytest.mark.parametrize("batch_size", [1, 5, 12, 100])
def test_streaming_read_equals_full_load(tmp_path, images, batch_size):
    path = tmp_path / "ref.npz"
    np.savez(path, images)  # written by numpy itself, as ADM and DiT do
    chunks = list(iter_npz_images(path, batch_size))
    assert all(len(c) <= batch_size for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), np.load(path)["arr_0"])
    assert read_npz_labels(path) is None


def test_streaming_read_of_compressed_npz(tmp_path, images):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, images, np.arange(12))
    np.testing.assert_array_equal(np.concatenate(list(iter_npz_images(path, 7))), images)


def test_write_is_atomic_on_failure(tmp_path, images):
    path = tmp_path / "s.npz"
    np.savez(path, images[:2])  # an existing file must survive a failed write untouched
    before = path.read_bytes()

    def failing():
        yield images[:4]
        raise RuntimeError("sampler crashed")

    with pytest.raises(RuntimeError):
        write_npz(path, failing(), None, num=12)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no temporary left


def test_write_checks_the_announced_count(tmp_path, images):
    with pytest.raises(GenzooError, match="12 were announced"):
        write_npz(tmp_path / "s.npz", batches_of(images[:10], 4), None, num=12)
    with pytest.raises(GenzooError, match="more than the announced"):
        write_npz(tmp_path / "s.npz", batches_of(images, 4), None, num=8)
    assert not (tmp_path / "s.npz").exists()


def test_write_rejects_float_batches(tmp_path, images):
    with pytest.raises(GenzooError, match="uint8"):
        write_npz(tmp_path / "s.npz", [images.astype(np.float32) / 255], None, num=12)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 8, 8, 3), np.float32), "dtype uint8, got float32"),
        (np.zeros((4, 3, 8, 8), np.uint8), "NCHW"),
        (np.zeros((4, 8, 8), np.uint8), "4-D"),
    ],
)
def test_bad_layouts_are_rejected(tmp_path, array, message):
    path = tmp_path / "bad.npz"
    np.savez(path, array)
    with pytest.raises(GenzooError, match=message):
        npz_info(path)
    with pytest.raises(GenzooError, match=message):
        next(iter_npz_images(path, 2))


def test_missing_arr_0_and_missing_file(tmp_path):
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(3))
    with pytest.raises(GenzooError, match="no 'arr_0'"):
        npz_info(path)
    with pytest.raises(GenzooError, match="no such file"):
        npz_info(tmp_path / "absent.npz")
