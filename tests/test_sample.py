"""Sampling a run: ADM npz output, batch/process independence, labels, interruption, Python API."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

import genzoo
from genzoo.cli import main
from genzoo.generate import make_labels


def _sample(run, out, *extra):
    argv = [
        "sample",
        "--run",
        str(run),
        "--out",
        str(out),
        "--steps",
        "3",
        "--quiet",
        "--device",
        "cpu",
        *extra,
    ]
    assert main(argv) == 0
    return np.load(out)


def test_npz_is_adm_format_and_independent_of_batch_size(tiny_run, tmp_path):
    a = _sample(tiny_run, tmp_path / "a.npz", "--num", "9", "--batch-size", "4", "--cfg", "2")
    b = _sample(tiny_run, tmp_path / "b.npz", "--num", "9", "--batch-size", "7", "--cfg", "2")
    assert a["arr_0"].dtype == np.uint8 and a["arr_0"].shape == (9, 16, 16, 3)
    assert a["arr_1"].shape == (9,) and a["arr_1"].max() < 10
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
    np.testing.assert_array_equal(a["arr_1"], b["arr_1"])
    c = _sample(tiny_run, tmp_path / "c.npz", "--num", "9", "--seed", "1")
    assert not np.array_equal(a["arr_0"], c["arr_0"])


def test_stochastic_sampler_is_independent_of_batch_size(tiny_run, tmp_path):
    a = _sample(
        tiny_run, tmp_path / "a.npz", "--num", "5", "--batch-size", "2", "--sampler", "ddpm"
    )
    b = _sample(
        tiny_run, tmp_path / "b.npz", "--num", "5", "--batch-size", "5", "--sampler", "ddpm"
    )
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])


def test_per_class_labels_are_exact_and_shuffled():
    labels = make_labels(None, 10, 50, seed=0)
    assert np.bincount(labels).tolist() == [50] * 10
    assert not np.all(np.diff(labels) >= 0)  # not class-sorted
    np.testing.assert_array_equal(labels, make_labels(500, 10, 50, seed=0))


def test_grid_has_one_row_per_class(tiny_run, tmp_path):
    from PIL import Image

    _sample(tiny_run, tmp_path / "s.npz", "--per-class", "2", "--grid", str(tmp_path / "g.png"))
    w, h = Image.open(tmp_path / "g.png").size
    assert h == 10 * (16 + 2) + 2 and w == 2 * (16 + 2) + 2


def _interrupt_at(monkeypatch, call: int) -> dict:
    """Make the `call`-th Pipeline.sample call raise KeyboardInterrupt; count every call."""
    from genzoo import pipeline

    calls = {"n": 0, "at": call}  # set "at" to 0 to stop interrupting
    real = pipeline.Pipeline.sample

    def sample(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(pipeline.Pipeline, "sample", sample)
    return calls


SIX = ["--num", "6", "--batch-size", "2", "--steps", "2", "--quiet", "--device", "cpu"]


def test_interrupted_sampling_leaves_no_file_under_the_final_name(tiny_run, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 2)
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(tiny_run), "--out", str(out), *SIX]) == 130
    assert not out.exists()
    # the one finished batch is kept (hidden) for a resume; nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".s.npz.part0-of-1.json",
        ".s.npz.part0-of-1.npy",
    ]


def test_interrupted_sampling_resumes_where_it_stopped(tiny_run, tmp_path, monkeypatch):
    argv = ["sample", "--run", str(tiny_run), *SIX, "--seed", "4"]
    assert main([*argv, "--out", str(tmp_path / "straight.npz")]) == 0
    calls = _interrupt_at(monkeypatch, 3)  # batches 1 and 2 done, then killed
    out = tmp_path / "s.npz"
    assert main([*argv, "--out", str(out)]) == 130 and not out.exists()
    calls["n"] = 0
    assert main([*argv, "--out", str(out)]) == 0
    assert calls["n"] == 1  # only the third batch was sampled again
    a, b = np.load(out), np.load(tmp_path / "straight.npz")
    assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "straight.npz"]
    stale = tmp_path / ".straight.npz.part1-of-2.npy"  # left by a killed 2-process job
    stale.write_bytes(b"")
    calls["at"] = 0
    assert main([*argv, "--out", str(tmp_path / "straight.npz")]) == 0 and not stale.exists()


def test_a_changed_command_does_not_reuse_interrupted_samples(tiny_run, tmp_path, monkeypatch):
    calls = _interrupt_at(monkeypatch, 3)
    out = tmp_path / "s.npz"
    argv = ["sample", "--run", str(tiny_run), *SIX, "--out", str(out)]
    assert main([*argv, "--seed", "1"]) == 130
    calls["n"] = calls["at"] = 0
    assert main([*argv, "--seed", "2"]) == 0 and calls["n"] == 3  # all three batches afresh
    assert main([*argv, "--seed", "2", "--out", str(tmp_path / "again.npz")]) == 0
    assert np.array_equal(np.load(out)["arr_0"], np.load(tmp_path / "again.npz")["arr_0"])


@pytest.mark.slow
def test_torchrun_two_processes_write_the_same_single_file(tiny_run, tmp_path):
    one = _sample(tiny_run, tmp_path / "one.npz", "--num", "7", "--batch-size", "3")
    run_cli(
        "sample",
        "--run-dir",
        str(tiny_run),
        "--out",
        str(tmp_path / "two.npz"),
        "--num-samples",
        "7",
        "--batch-size",
        "3",
        "--steps",
        "3",
        "--quiet",
        "--device",
        "cpu",
        torchrun=2,
    )
    two = np.load(tmp_path / "two.npz")
    np.testing.assert_array_equal(one["arr_0"], two["arr_0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]  # no parts left


def test_python_api_load_and_sample(tiny_run):
    pipe = genzoo.load(tiny_run, device="cpu")
    images = pipe.sample([0, 3, 9], steps=2, seed=0)
    assert images.dtype == np.uint8 and images.shape == (3, 16, 16, 3)
    again = pipe.sample([0, 3, 9], steps=2, seed=0, batch_size=1)
    np.testing.assert_array_equal(images, again)
    with pytest.raises(genzoo.errors.GenzooError, match="labels must lie in"):
        pipe.sample([10])


def test_bad_sample_arguments(tiny_run, tmp_path, capsys):
    assert (
        main(
            [
                "sample",
                "--run",
                str(tiny_run),
                "--out",
                str(tmp_path / "x.npz"),
                "--num",
                "2",
                "--sampler",
                "dpm9",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 2
    )
    assert "dpm9" in capsys.readouterr().err
    assert (
        main(
            [
                "sample",
                "--run",
                str(tmp_path),
                "--out",
                str(tmp_path / "x.npz"),
                "--num",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "not a genzoo run" in capsys.readouterr().err
