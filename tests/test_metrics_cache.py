"""The reference-feature cache: reused while the file and the extractor are unchanged."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from test_metrics_evaluate import styled_images

from genzoo.metrics import evaluate
from genzoo.metrics.feature_cache import default_cache_dir
from genzoo.metrics.inception import save_random_inception_weights

# the package exports the function `evaluate` under the module's name
evaluate_module = importlib.import_module("genzoo.metrics.evaluate")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_random_inception_weights(tmp_path_factory.mktemp("w") / "inc.pth", seed=5)


@pytest.fixture
def counted(monkeypatch):
    """Count the feature passes over the reference set."""
    calls = []
    real_extract = evaluate_module.extract

    def extract(source, needs, **kw):
        if kw.get("desc") == "reference":
            calls.append(source.name)
        return real_extract(source, needs, **kw)

    monkeypatch.setattr(evaluate_module, "extract", extract)
    return calls


def _run(samples, ref, weights, **kw):
    return evaluate(samples, ref, "fid,pr,kid", inception_weights=weights, kid_subset_size=4, **kw)


def test_second_evaluation_reads_reference_features_from_the_cache(tmp_path, weights, counted):
    np.savez(tmp_path / "s.npz", styled_images(6, 16, 0))
    np.savez(tmp_path / "ref.npz", styled_images(6, 16, 1))
    first = _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights)
    assert len(counted) == 1 and first["reference"]["features"].startswith("extracted and cached")
    second = _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights)
    assert len(counted) == 1  # no second pass over the reference images
    assert second["reference"]["features"].startswith("read from the cache")
    for key in ("fid", "precision", "recall", "kid"):
        assert second[key] == first[key]
    entries = list(default_cache_dir().glob("ref-*.npz"))
    assert len(entries) == 1 and not list(default_cache_dir().glob(".*.tmp"))


def test_a_changed_reference_file_or_extractor_is_not_served_stale(tmp_path, weights, counted):
    np.savez(tmp_path / "s.npz", styled_images(6, 16, 0))
    np.savez(tmp_path / "ref.npz", styled_images(6, 16, 1))
    before = _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights)
    np.savez(tmp_path / "ref.npz", styled_images(6, 16, 2))  # same name, other images
    after = _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights)
    assert len(counted) == 2 and after["fid"] != before["fid"]
    other = save_random_inception_weights(tmp_path / "other.pth", seed=6)
    _run(tmp_path / "s.npz", tmp_path / "ref.npz", other)
    assert len(counted) == 3


def test_cache_can_be_switched_off_and_a_damaged_entry_is_ignored(tmp_path, weights, counted):
    np.savez(tmp_path / "s.npz", styled_images(6, 16, 0))
    np.savez(tmp_path / "ref.npz", styled_images(6, 16, 1))
    off = _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights, ref_cache=False)
    assert "features" not in off["reference"] and not default_cache_dir().exists()
    folder = tmp_path / "cache"
    _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights, cache_dir=folder)
    (entry,) = folder.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated by a full disk, say
    again = _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights, cache_dir=folder)
    assert len(counted) == 3 and again["fid"] == off["fid"]
    assert again["reference"]["features"].startswith("extracted and cached")


def test_an_interrupted_write_leaves_no_entry(tmp_path, weights, monkeypatch):
    np.savez(tmp_path / "s.npz", styled_images(6, 16, 0))
    np.savez(tmp_path / "ref.npz", styled_images(6, 16, 1))
    import genzoo.metrics.feature_cache as cache

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "s.npz", tmp_path / "ref.npz", weights, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []
