"""BigGAN through the ordinary loop, `genzoo.load` and the CLI: G trained with its discriminator
as the family's own module, exact resume, EMA of G with its start step, grids, the NaN stop,
truncated sampling, and `genzoo sample --official biggan | biggan-deep`.

Expected values are re-computed here (EMA arithmetic, scipy's truncated normal, the reference
G forward of tests/biggan_layout.py), never taken from the code under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from biggan_layout import DEEP_KW, tiny_deep_state, tiny_g_state
from biggan_layout import reference_g as reference_generator
from safetensors.torch import load_file
from scipy.stats import truncnorm

import genzoo
from genzoo.cli import main
from genzoo.errors import GenzooError
from genzoo.families.gan import truncated_noise
from genzoo.pipeline import Pipeline
from genzoo.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = [
    "train", "--preset", "biggan-tiny", "--data", "shapes", "--res", "32", "--batch-size", "8",
    "--quiet", "--device", "cpu", "--set", "train.log_every=1", "--set", "train.ckpt_every=1",
    "--set", "train.keep_ckpts=10", "--set", "train.ema_decay=0.5", "--set", "family.ema_start=3",
    "--set", "family.diffaugment=color,translation,cutout", "--set", "family.g_ortho=1e-4",
]  # fmt: skip


def _weights(run, step, name):
    return load_file(str(run / "checkpoints" / f"step-{step:07d}" / f"{name}.safetensors"))


def _scipy_noise(n, dim_z, truncation, seed):
    rows = truncnorm.rvs(-2, 2, size=(n, dim_z), random_state=np.random.RandomState(seed))
    return torch.from_numpy(truncation * rows.astype(np.float32))


def _uint8(x):
    return (127.5 * x + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    whole, split = root / "whole", root / "split"
    assert main([*TRAIN, "--steps", "4", "--out", str(whole)]) == 0
    assert main([*TRAIN, "--steps", "2", "--out", str(split)]) == 0
    assert main([*TRAIN, "--steps", "4", "--out", str(split)]) == 0  # resumed
    return whole, split


def test_a_resumed_gan_run_is_bit_identical_and_holds_both_networks(runs):
    whole, split = runs
    files = {p.name for p in (whole / "checkpoints" / "step-0000004").iterdir()}
    assert files == {"model.safetensors", "ema.safetensors", "aux-D.safetensors", "state.pt"}
    state = torch.load(whole / "checkpoints/step-0000004/state.pt", weights_only=False)
    assert set(state["optimizers"]) == {"G", "D"}
    for name in ("model", "ema", "aux-D"):
        a, b = _weights(whole, 4, name), _weights(split, 4, name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert not torch.equal(_weights(whole, 4, "aux-D")["linear.weight"],
                           _weights(whole, 1, "aux-D")["linear.weight"])  # fmt: skip
    assert (whole / "grid.png").is_file() and list((whole / "samples").glob("grid-*.png"))
    rows = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all({"d_loss", "g_loss", "d_real", "d_fake"} <= set(r) for r in rows)


def test_the_ema_is_of_g_and_pegged_to_it_before_ema_start(runs):
    whole, _ = runs
    model = {s: _weights(whole, s, "model") for s in (2, 3, 4)}
    ema = {s: _weights(whole, s, "ema") for s in (2, 3, 4)}
    assert ema[2].keys() == model[2].keys() and "shared.weight" in ema[2]  # G's keys only
    assert not any(k.startswith("D.") for k in ema[2])
    # ema_start=3: iterations 1, 2 copy G; from iteration 3 on, ema ← ½·ema + ½·G
    assert all(torch.equal(ema[2][k], model[2][k]) for k in model[2])
    for s in (3, 4):
        for k, v in model[s].items():
            torch.testing.assert_close(ema[s][k], 0.5 * ema[s - 1][k] + 0.5 * v, rtol=0, atol=1e-6)


def test_load_samples_with_truncation_from_the_seeded_rows(runs):
    whole, _ = runs
    pipe = genzoo.load(whole, device="cpu")
    labels = [0, 3, 3, 9]
    images = pipe.sample(labels, truncation=0.5, seed=7)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    z = _scipy_noise(4, pipe.model.dim_z, 0.5, 7)
    with torch.no_grad():
        expected = _uint8(pipe.model.eval()(z, torch.tensor(labels)))
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    alone = pipe.sample([3], truncation=0.5, seed=7, indices=[2])  # one shard of the sample
    assert np.array_equal(alone[0], pipe.sample(labels, truncation=0.5, seed=7, batch_size=1)[2])
    assert not np.array_equal(images, pipe.sample(labels, truncation=1.0, seed=7))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(GenzooError, match="truncation"):
            pipe.sample([0], truncation=bad)


def test_a_non_finite_gan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    from genzoo.train import loop

    real = loop.build_family

    def poisoned(cfg, tokenizer=None):
        family = real(cfg, tokenizer)
        step, calls = family.train_step, {"n": 0}

        def bad_step(ctx):
            calls["n"] += 1
            logs = step(ctx)
            if calls["n"] == 3:
                logs["d_loss"] = logs["loss"] = float("inf")
            return logs

        family.train_step = bad_step
        return family

    monkeypatch.setattr(loop, "build_family", poisoned)
    out = tmp_path / "run"
    argv = [*TRAIN, "--steps", "5", "--set", "train.ckpt_every=2", "--out", str(out)]
    assert main(argv) == 2
    assert [c.step for c in list_checkpoints(out)] == [2]


def test_grad_accum_must_split_into_the_d_steps(tmp_path, capsys):
    argv = [*TRAIN, "--steps", "1", "--batch-size", "9", "--grad-accum", "3"]
    argv += ["--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "train.grad_accum=3 must be a multiple of family.d_steps=2" in capsys.readouterr().err


def test_truncated_noise_rows_of_a_shard_are_those_of_the_whole_draw():
    whole = _scipy_noise(9, 5, 0.7, 11)
    torch.testing.assert_close(truncated_noise(9, 5, 0.7, 11), whole, rtol=0, atol=0)
    torch.testing.assert_close(truncated_noise(3, 5, 0.7, 11, first=4), whole[4:7], rtol=0, atol=0)


def test_official_biggan_is_a_pipeline_and_samples_through_the_cli(tmp_path):
    state = tiny_g_state(seed=3)
    weights = tmp_path / "G_ema.pth"
    torch.save(state, weights)
    pipe = genzoo.load_official("biggan", weights, device="cpu", BN_eps=1e-5, SN_eps=1e-6)
    assert isinstance(pipe, Pipeline) and pipe.image_size == 128 and pipe.num_classes == 10
    x = pipe.sample_images([1, 2], truncation=0.4, seed=5)
    assert np.array_equal(pipe.sample([1, 2], truncation=0.4, seed=5), _uint8(x))

    out = tmp_path / "biggan.npz"
    argv = ["sample", "--official", "biggan", "--weights", str(weights), "--num", "5",
            "--truncation", "0.5", "--batch-size", "2", "--seed", "4", "--out", str(out),
            "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    with np.load(out) as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.shape == (5, 128, 128, 3)
    z = _scipy_noise(5, 30, 0.5, 4)  # sample i: row i of the seed's draw, whatever the batch
    expected = _uint8(reference_generator(state, z, torch.as_tensor(labels)))
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1


def test_official_biggan_deep_samples_through_the_cli(tmp_path):
    weights = tmp_path / "pytorch_model.bin"
    torch.save(tiny_deep_state(), weights)
    out = tmp_path / "deep.npz"
    argv = ["sample", "--official", "biggan-deep", "--weights", str(weights), "--num", "2",
            "--truncation", "0.3", "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    with np.load(out) as f:
        images, labels = f["arr_0"], f["arr_1"]
    pipe = genzoo.load_official("biggan-deep", weights, device="cpu", **DEEP_KW)
    assert images.shape == (2, 64, 64, 3)
    assert np.array_equal(images, pipe.sample(labels, truncation=0.3, seed=0))
    argv[argv.index("0.3")] = "1.5"
    assert main(argv) == 2  # outside (0, 1]: BigGAN-deep has statistics for t ≤ 1 only
