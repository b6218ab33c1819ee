"""`evaluate`, `genzoo eval` and `genzoo ref` end to end, with random Inception weights."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.errors import GenzooError
from genzoo.metrics import evaluate
from genzoo.metrics.cli import add_parsers
from genzoo.metrics.inception import InceptionFeatures, save_random_inception_weights

N = 12  # images per set: Inception at 299 px costs ~0.15 s per image on CPU


def styled_images(n: int, size: int, seed: int) -> np.ndarray:
    """Varied synthetic images: noise, gradients and checkerboards with random colours."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        colour = rng.uniform(0, 255, 3)
        style = i % 3
        if style == 0:
            img = rng.normal(colour, 40, (size, size, 3))
        elif style == 1:
            img = colour * (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0, 0.8))[..., None]
        else:
            period = rng.integers(2, 8)
            img = colour * (((xx * size // period + yy * size // period) % 2)[..., None])
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def save_folder(path: Path, images: np.ndarray) -> Path:
    path.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    weights = save_random_inception_weights(root / "inception.pth", seed=3)
    a = save_folder(root / "a", styled_images(N, 32, 0))
    b = save_folder(root / "b", styled_images(N, 32, 1))
    return root, weights, a, b


@pytest.fixture(scope="module")
def parity(setup):
    """genzoo and torch-fidelity on the same two folders with the same weights."""
    import torch_fidelity

    _, weights, a, b = setup
    ours = evaluate(
        a, b, ("fid", "is", "kid", "pr"), inception_weights=weights, is_mode="torch-fidelity",
        is_splits=2, kid_subsets=10, kid_subset_size=6,
    )  # fmt: skip
    theirs = torch_fidelity.calculate_metrics(
        input1=str(a), input2=str(b), cuda=False, fid=True, isc=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        isc_splits=2, kid_subsets=10, kid_subset_size=6, cache=False, verbose=False,
        save_cpu_ram=True,
    )  # fmt: skip
    return ours, theirs


@pytest.mark.slow
def test_fid_is_kid_pr_equal_torch_fidelity(parity):
    ours, theirs = parity
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert ours["is"] > 1.05  # the random classifier separates these images
    assert ours["fid"] > 1.0
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    # Features agree to ~1e-7, so at most one borderline point may fall on the other side.
    assert ours["precision"] == pytest.approx(theirs["precision"], abs=1.01 / N)
    assert ours["recall"] == pytest.approx(theirs["recall"], abs=1.01 / N)


@pytest.mark.slow
def test_every_number_sits_next_to_its_protocol(parity, setup):
    ours, _ = parity
    _, weights, a, b = setup
    fid = ours["metrics"]["fid"]
    assert fid["value"] == ours["fid"] and fid["samples"] == N and fid["reference"] == N
    assert "pool_3" in fid["features"] and fid["trace_method"] == "eigh"
    assert "RandomState(2020)" in ours["metrics"]["is"]["split_rule"]
    assert ours["metrics"]["pr"]["k"] == 3 and ours["metrics"]["kid"]["subset_size"] == 6
    assert ours["samples"] == {
        "source": str(a), "num": N, "resolution": [32, 32], "labels": "unknown (no labels stored)"
    }  # fmt: skip
    assert ours["reference"]["id"] == f"folder {b} ({N} images)"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert ours["feature_extractors"]["inception"]["weights_sha256"] == sha
    assert ours["resize_policy"].startswith("none")
    json.dumps(ours)  # the record is plain JSON


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero_in_any_order(setup, tmp_path):
    _, weights, _, _ = setup
    x = styled_images(6, 32, 5)
    ref = tmp_path / "ref.npz"
    np.savez(ref, x[::-1])  # same images, another order, as an ADM npz
    r = evaluate(x, ref, "fid", inception_weights=weights, batch_size=4)
    # 6 images span 5 of 2048 dimensions: float32 noise in the null space (~1e-14 eigenvalues)
    # enters through square roots, so "zero" is ~1e-4 here; two different sets score > 1.
    assert abs(r["fid"]) < 1e-3


# -- statistics files -----------------------------------------------------------------------


def fake_stats(seed: int, images: np.ndarray | None = None, **extra) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "mu": rng.normal(size=2048).astype(np.float32),
        "sigma": np.diag(rng.uniform(0.1, 2, 2048)),
        "mu_s": rng.normal(size=2023).astype(np.float32),
        "sigma_s": np.diag(rng.uniform(0.1, 2, 2023)),
    }
    if images is not None:
        arrays["arr_0"] = images
    arrays.update(extra)
    return arrays


def closed_form_fd(a: dict, b: dict, mu: str, sigma: str) -> float:
    d = a[mu].astype(np.float64) - b[mu].astype(np.float64)
    roots = np.sqrt(np.diag(a[sigma])) - np.sqrt(np.diag(b[sigma]))
    return float(d @ d + roots @ roots)


def test_adm_reference_file_is_used_as_is(tmp_path):
    samples, ref = fake_stats(0), fake_stats(1, images=styled_images(4, 32, 2))
    np.savez(tmp_path / "s.npz", **samples)
    np.savez(tmp_path / "VIRTUAL_imagenet256_labeled.npz", **ref)
    r = evaluate(tmp_path / "s.npz", tmp_path / "VIRTUAL_imagenet256_labeled.npz", "fid,sfid")
    assert r["fid"] == pytest.approx(closed_form_fd(samples, ref, "mu", "sigma"), rel=1e-9)
    assert r["sfid"] == pytest.approx(closed_form_fd(samples, ref, "mu_s", "sigma_s"), rel=1e-9)
    sha = hashlib.sha256((tmp_path / "VIRTUAL_imagenet256_labeled.npz").read_bytes()).hexdigest()
    assert r["reference"]["id"] == f"VIRTUAL_imagenet256_labeled.npz sha256:{sha[:16]}"
    assert r["metrics"]["fid"]["reference"] == "precomputed statistics"
    assert r["feature_extractors"] == {}  # nothing was computed from images


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mu": np.zeros(100)}, r"'mu' must have shape \[2048\]"),
        ({"sigma_s": np.eye(2000)}, r"'sigma_s' \[2023, 2023\], got \(2023,\) and \(2000, 2000\)"),
        ({"sigma": np.full((2048, 2048), np.nan)}, "NaN or inf"),
    ],
)
def test_bad_reference_statistics_are_rejected(tmp_path, change, message):
    np.savez(tmp_path / "s.npz", **fake_stats(0))
    np.savez(tmp_path / "ref.npz", **{**fake_stats(1), **change})
    with pytest.raises(GenzooError, match=message):
        evaluate(tmp_path / "s.npz", tmp_path / "ref.npz", "fid")


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    samples, ref = fake_stats(2), fake_stats(3)
    np.savez(tmp_path / "s.npz", **samples)
    np.savez(tmp_path / "ref.npz", **ref)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "out" / "eval.json"
    args = parser.parse_args(
        ["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "ref.npz"), "--json", str(out),
         "--metrics", "fid", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("fid") and "ref.npz sha256:" in printed
    record = json.loads(out.read_text())
    expected = closed_form_fd(samples, ref, "mu", "sigma")
    assert record["metrics"]["fid"]["value"] == pytest.approx(expected, rel=1e-9)


# -- bad inputs -----------------------------------------------------------------------------


def test_bad_sample_arrays_are_rejected(tmp_path):
    np.savez(tmp_path / "ref.npz", **fake_stats(1))
    ref = tmp_path / "ref.npz"
    with pytest.raises(GenzooError, match=r"uint8 0..255, got float32 with values in \[0, 1\]"):
        evaluate(np.linspace(0, 1, 4 * 8 * 8 * 3, dtype=np.float32).reshape(4, 8, 8, 3), ref)
    with pytest.raises(GenzooError, match="NCHW"):
        evaluate(np.zeros((4, 3, 8, 8), np.uint8), ref)
    np.savez(tmp_path / "f.npz", np.zeros((4, 8, 8, 3), np.float64))
    with pytest.raises(GenzooError, match="dtype uint8, got float64"):
        evaluate(tmp_path / "f.npz", ref)
    with pytest.raises(GenzooError, match="statistics only"):
        evaluate(ref, ref, "is")
    with pytest.raises(GenzooError, match="need a reference"):
        evaluate(ref, None, "fid")
    with pytest.raises(GenzooError, match="unknown metric 'fidd'"):
        evaluate(ref, ref, "fid,fidd")


def test_folders_must_hold_rgb_images_of_one_size(setup, tmp_path):
    _, weights, _, _ = setup
    save_folder(tmp_path / "mixed", styled_images(2, 16, 3))
    Image.fromarray(styled_images(1, 20, 4)[0]).save(tmp_path / "mixed" / "z.png")
    with pytest.raises(GenzooError, match="z.png: 20x20 px, but 000.png is 16x16"):
        evaluate(tmp_path / "mixed", None, "is", inception_weights=weights)
    save_folder(tmp_path / "gray", styled_images(2, 16, 3)[..., 0])
    with pytest.raises(GenzooError, match="mode L, expected 8-bit RGB"):
        evaluate(tmp_path / "gray", None, "is", inception_weights=weights)


def test_resolution_mismatch_needs_a_resize_policy(setup, tmp_path):
    _, weights, _, _ = setup
    np.savez(tmp_path / "ref.npz", styled_images(4, 32, 6))
    small = styled_images(4, 16, 7)
    with pytest.raises(GenzooError, match="16x16 but the reference .* is 32x32.*resize-policy"):
        evaluate(small, tmp_path / "ref.npz", "fid", inception_weights=weights)
    r = evaluate(
        small, tmp_path / "ref.npz", "kid", inception_weights=weights, kid_subset_size=4,
        resize_policy="tf-bilinear",
    )  # fmt: skip
    assert np.isfinite(r["kid"]) and r["resize_policy"].startswith("none outside the network")


def test_too_few_images_for_pr_and_is(setup, tmp_path):
    _, weights, _, _ = setup
    np.savez(tmp_path / "ref.npz", styled_images(3, 16, 8))
    x = styled_images(3, 16, 9)
    with pytest.raises(GenzooError, match="k=3 nearest neighbours need at least 4"):
        evaluate(x, tmp_path / "ref.npz", "pr", inception_weights=weights)
    with pytest.raises(GenzooError, match="3 images cannot fill 10 splits"):
        evaluate(x, None, "is", inception_weights=weights, is_mode="torch-fidelity")


def test_in_memory_batches_with_labels(setup):
    _, weights, _, _ = setup
    x = styled_images(6, 16, 10)
    batches = (x[i : i + 4] for i in range(0, 6, 4))  # what a training loop yields
    r = evaluate(batches, None, ["is"], inception_weights=weights, labels=np.array([0, 1, 2] * 2))
    assert r["samples"]["num"] == 6 and r["samples"]["labels"] == "2 per class (3 classes)"
    assert 1.0 <= r["is"] <= 6.0 and r["metrics"]["is"]["splits"] == 1


def test_nan_features_are_reported(setup, monkeypatch):
    _, weights, _, _ = setup
    original = InceptionFeatures.forward

    def broken(self, images):
        out = original(self, images)
        out["pool3"] = out["pool3"] * float("nan")
        return out

    monkeypatch.setattr(InceptionFeatures, "forward", broken)
    with pytest.raises(GenzooError, match="NaN or inf"):
        evaluate(
            styled_images(4, 16, 11), styled_images(4, 16, 12), "fid", inception_weights=weights
        )


# -- genzoo ref -----------------------------------------------------------------------------


@pytest.mark.slow
def test_reference_from_an_imagenet_layout_folder(setup, tmp_path):
    _, weights, _, _ = setup
    from genzoo.data import build_dataset

    rng = np.random.default_rng(13)
    for c in ("n01", "n02"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "train" / c / f"{i}.png")
    spec = f"folder:{tmp_path / 'train'}"
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "ref.npz"
    args = parser.parse_args(
        ["ref", "--data", spec, "--res", "32", "--out", str(out), "--num-images", "4",
         "--inception-weights", str(weights), "--batch-size", "4", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0

    ds = build_dataset(spec, 32)
    images = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(len(ds))])
    with np.load(out) as f:
        assert f["arr_0"].shape == (4, 32, 32, 3) and f["arr_1"].shape == (4,)
        kept = [int(np.flatnonzero((images == im).all(axis=(1, 2, 3)))[0]) for im in f["arr_0"]]
        np.testing.assert_array_equal(f["arr_1"], [ds[i][1] for i in kept])
        feats = InceptionFeatures(weights)(torch.from_numpy(images).permute(0, 3, 1, 2))
        pool3 = feats["pool3"].double().numpy()
        np.testing.assert_allclose(f["mu"], pool3.mean(axis=0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(f["sigma"], np.cov(pool3, rowvar=False), rtol=1e-4, atol=1e-8)
        assert f["mu_s"].shape == (2023,) and f["sigma_s"].shape == (2023, 2023)
        meta = json.loads(str(f["genzoo_meta"]))
    assert meta["num_images"] == {"pool3": 6, "spatial": 6} and meta["data"] == spec
