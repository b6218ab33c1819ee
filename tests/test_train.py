"""The training loop: run directory, exact resume, continuation, DDP equivalence, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_TRAIN, run_cli, tiny_vae
from safetensors.torch import load_file

from genzoo.cli import main
from genzoo.errors import GenzooError
from genzoo.train.checkpoint import latest_checkpoint, list_checkpoints


def _weights(run, name="ema"):
    return load_file(str(latest_checkpoint(run).path / f"{name}.safetensors"))


def test_run_directory_holds_everything(tiny_run):
    assert json.loads((tiny_run / "config.json").read_text())["model"]["input_size"] == 16
    ckpt = latest_checkpoint(tiny_run)
    assert ckpt.step == 2
    for f in ("model.safetensors", "ema.safetensors", "state.pt"):
        assert (ckpt.path / f).is_file()
    state = torch.load(ckpt.path / "state.pt", weights_only=False)
    assert state["step"] == 2 and state["position"] == 16 and "state" in state["optimizer"]
    rows = [json.loads(x) for x in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["loss"] > 0 and r["img_per_s"] > 0 for r in rows)
    assert any((tiny_run / "tb").iterdir())
    from PIL import Image

    grid = Image.open(tiny_run / "grid.png")
    assert grid.size[1] > 10 * 16  # one row per class (10 shape classes)
    assert json.loads((tiny_run / "classes.json").read_text())[:1]


@pytest.mark.slow
def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *TINY_TRAIN, "--steps", "4", "--out", str(straight)]) == 0
    assert main(["train", *TINY_TRAIN, "--steps", "2", "--out", str(resumed)]) == 0
    run_cli("train", *TINY_TRAIN, "--steps", "4", "--out", str(resumed))
    assert latest_checkpoint(resumed).step == 4
    for name in ("ema", "model"):
        a, b = _weights(straight, name), _weights(resumed, name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    # A different seed really changes the weights, so the equality above is not vacuous.
    other = tmp_path / "other"
    main(["train", *TINY_TRAIN, "--steps", "4", "--seed", "1", "--out", str(other)])
    assert not torch.equal(
        _weights(other)["final_layer.linear.weight"], a["final_layer.linear.weight"]
    )


def test_finished_run_continues_with_more_steps_and_keeps_old_settings(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "cont"
    shutil.copytree(tiny_run, run)
    # Only --out and --steps: the run's own config is the base.
    assert main(["train", "--out", str(run), "--steps", "3", "--quiet", "--device", "cpu"]) == 0
    assert [c.step for c in list_checkpoints(run)] == [2, 3]


def test_changing_the_model_or_data_on_resume_is_refused(tiny_run, capsys):
    argv = ["train", *TINY_TRAIN, "--steps", "3", "--out", str(tiny_run)]
    argv[argv.index("16")] = "32"  # --res 16 → 32
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "data.res: run has 16, command asks for 32" in err and "new --out" in err
    assert latest_checkpoint(tiny_run).step == 2  # nothing touched


def test_out_pointing_at_a_non_run_directory_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["train", *TINY_TRAIN, "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "is not a genzoo run" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_resolution_and_unknown_names_are_clear(tmp_path, capsys):
    argv = ["train", *TINY_TRAIN, "--steps", "1", "--res", "18", "--set", "model.patch_size=4"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "resolution 18 is not divisible by patch size 4" in capsys.readouterr().err
    assert (
        main(
            ["train", *TINY_TRAIN, "--steps", "1", "--data", "cifar", "--out", str(tmp_path / "b")]
        )
        == 2
    )
    assert "cifar" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                *TINY_TRAIN,
                "--steps",
                "1",
                "--set",
                "model.widht=3",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "model.widht" in capsys.readouterr().err


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from genzoo.config import apply_overrides
    from genzoo.train import loop
    from genzoo.zoo.presets import preset

    real = loop.build_family

    def poisoned(cfg, tokenizer=None):
        fam = real(cfg, tokenizer)
        calls = {"n": 0}
        loss = fam.loss

        def bad_loss(*a, **k):
            calls["n"] += 1
            out = loss(*a, **k)
            if calls["n"] == 3:
                out["loss"] = out["loss"] * float("nan")
            return out

        fam.loss = bad_loss
        return fam

    monkeypatch.setattr(loop, "build_family", poisoned)
    cfg = preset("dit-tiny")
    apply_overrides(
        cfg,
        [
            "data.res=16",
            "train.batch_size=8",
            "train.steps=5",
            "train.ckpt_every=2",
            "train.quiet=true",
        ],
    )
    with pytest.raises(GenzooError, match="loss became nan at step 3.*step-0000002"):
        loop.train(cfg, tmp_path / "run", device="cpu")
    assert [c.step for c in list_checkpoints(tmp_path / "run")] == [2]


def test_partial_checkpoint_is_ignored_and_cleaned(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "crashed"
    shutil.copytree(tiny_run, run)
    junk = run / "checkpoints" / ".tmp-step-0000003-999"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"truncated")
    assert latest_checkpoint(run).step == 2
    assert main(["train", "--out", str(run), "--steps", "3", "--quiet", "--device", "cpu"]) == 0
    assert not junk.exists() and latest_checkpoint(run).step == 3


@pytest.mark.slow
def test_two_gloo_processes_make_the_same_update_as_one(tmp_path):
    """Same global batch of 8: 2 processes × 4 vs 1 process × 2 accumulation steps × 4."""
    two, one = tmp_path / "two", tmp_path / "one"
    run_cli("train", *TINY_TRAIN, "--steps", "2", "--out", str(two), torchrun=2)
    main(["train", *TINY_TRAIN, "--steps", "2", "--grad-accum", "2", "--out", str(one)])
    a, b = _weights(two, "model"), _weights(one, "model")
    assert latest_checkpoint(two).step == 2
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # ...and the update is not nothing: the final layer starts at zero and has moved.
    assert a["final_layer.linear.weight"].abs().max() > 0


@pytest.mark.slow
def test_fsdp2_makes_the_same_updates_as_ddp_and_resumes(tmp_path):
    """train.fsdp shards weights, gradients and optimizer state over 2 gloo processes; the
    gathered checkpoint equals DDP's after 3 steps, with a stop and resume after step 2."""
    fsdp, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    sharded = ["--set", "train.fsdp=true", "--out", str(fsdp)]
    run_cli("train", *TINY_TRAIN, "--steps", "2", *sharded, torchrun=2)
    run_cli("train", *TINY_TRAIN, "--steps", "3", *sharded, torchrun=2)
    run_cli("train", *TINY_TRAIN, "--steps", "3", "--out", str(ddp), torchrun=2)
    assert latest_checkpoint(fsdp).step == 3
    for weights in ("model", "ema"):
        a, b = _weights(fsdp, weights), _weights(ddp, weights)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=f"{weights}: {k}")
    assert _weights(fsdp, "model")["final_layer.linear.weight"].abs().max() > 0


@pytest.mark.slow
def test_training_from_cached_latents_and_sampling_through_the_vae(tmp_path):
    """Encode once with a (tiny, random) KL-VAE, train from the cache, sample images back."""
    from genzoo.data.latents import encode_dataset
    from genzoo.data.shapes import ShapesDataset
    from genzoo.tokenizers import build_tokenizer

    tiny_vae().save_pretrained(tmp_path / "vae")
    spec = f"kl-vae:{tmp_path / 'vae'}"
    encode_dataset(ShapesDataset(16, length=24), build_tokenizer(spec), tmp_path / "cache")
    run = tmp_path / "run"
    argv = ["train", "--preset", "dit-tiny", "--data", f"latents:{tmp_path / 'cache'}"]
    argv += ["--res", "16", "--batch-size", "4", "--steps", "2", "--quiet", "--device", "cpu"]
    assert main([*argv, "--out", str(run), "--set", "train.grid_steps=2"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["tokenizer"] == {"kind": "kl-vae", "source": str(tmp_path / "vae"), "scale": 0.18215}
    assert cfg["model"]["input_size"] == 8
    assert cfg["model"]["in_channels"] == 4
    import genzoo

    images = genzoo.load(run, device="cpu").sample([0, 1], steps=2)
    assert images.shape == (2, 16, 16, 3) and images.dtype.name == "uint8"


def test_cosine_schedule_is_followed_by_the_optimizer(tmp_path):
    out = tmp_path / "cos"
    argv = ["train", *TINY_TRAIN, "--steps", "4", "--out", str(out)]
    assert main([*argv, "--set", "train.lr_schedule=cosine"]) == 0
    lrs = [json.loads(line)["lr"] for line in (out / "log.jsonl").read_text().splitlines()]
    # update s of 4 uses lr·(1 + cos(π·s/4))/2: the last one a seventh of the first
    assert [lr / lrs[0] for lr in lrs] == pytest.approx([1, 0.853553, 0.5, 0.146447], abs=1e-6)


def test_weights_that_do_not_fit_the_run_config_are_named(tiny_run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from genzoo.pipeline import load

    run = tmp_path / "edited"
    shutil.copytree(tiny_run, run)
    path = latest_checkpoint(run).path / "ema.safetensors"
    state = load_file(str(path))
    state["pos_embed"] = torch.zeros(1, 3, 5)
    state.pop("final_layer.linear.bias")
    save_file(state, str(path))
    with pytest.raises(GenzooError, match="do not match the model built from the run") as err:
        load(run)
    assert "missing keys (1): final_layer.linear.bias" in str(err.value)
    assert "mis-shaped keys (1): pos_embed: file [1, 3, 5] vs model [1, " in str(err.value)
