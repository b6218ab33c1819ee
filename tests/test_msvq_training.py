"""VAR's multi-scale VQ-VAE trained by the vqgan family through the ordinary loop: the losses of
its forward against the formulas (re-enacted with tests/test_msvq.py's reference quantiser),
reconstruction, perceptual, adversarial and commitment terms in the log, `--eval-every` rFID and
codebook usage on held-out images, and the trained run as the `msvq:RUN` tokenizer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_msvq import reference_decoder, reference_encode, reference_encoder
from var_layout import code_map, contribution, random_vqvae_state
from var_layout import vqvae_layout as msvq_layout

import genzoo
from genzoo.cli import main
from genzoo.data import build_dataset
from genzoo.errors import GenzooError
from genzoo.metrics.inception import save_random_inception_weights
from genzoo.tokenizers import build_tokenizer
from genzoo.tokenizers.msvq import MSVQConfig
from genzoo.tokenizers.msvq_model import MSVQModel

pytestmark = pytest.mark.usefixtures("one_thread")

SCALES = (1, 2)  # 32 px images: the tiny architecture on the shortest schedule
TINY = dict(ch=32, z_channels=8, vocab_size=64, v_patch_nums=SCALES)
TRAIN = [
    "train", "--preset", "msvq-tiny", "--data", "shapes", "--res", "32", "--batch-size", "4",
    "--quiet", "--device", "cpu", "--set", "model.v_patch_nums=1,2", "--set", "train.log_every=1",
    "--set", "family.disc_start=2", "--eval-every", "3", "--eval-num", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return save_random_inception_weights(tmp_path_factory.mktemp("w") / "inception.pth", seed=4)


@pytest.fixture(scope="module")
def run(inception, tmp_path_factory):
    out = tmp_path_factory.mktemp("msvq") / "run"
    saved = os.environ.get("GENZOO_INCEPTION_WEIGHTS")
    os.environ["GENZOO_INCEPTION_WEIGHTS"] = str(inception)  # random weights: nothing fetched
    try:
        with pytest.warns(UserWarning, match="randomly initialised VGG16"):
            assert main([*TRAIN, "--steps", "3", "--out", str(out)]) == 0
    finally:
        if saved is None:
            os.environ.pop("GENZOO_INCEPTION_WEIGHTS")
        else:
            os.environ["GENZOO_INCEPTION_WEIGHTS"] = saved
    return out


def test_the_forward_losses_are_the_official_quantiser_loss_halves():
    state = random_vqvae_state(msvq_layout(ch=32, z=8, vocab=64, scales=2), seed=6)
    model = MSVQModel(MSVQConfig(**TINY))
    model.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x_hat, losses = model(x)
    with torch.no_grad():
        f, ids = reference_encoder(state, x), reference_encode(state, x, SCALES)
        f_hat, expected = 0, 0
        for k, (idx, p) in enumerate(zip(ids, SCALES, strict=True)):
            f_hat = f_hat + contribution(state, code_map(state, idx, p), k, SCALES)
            expected = expected + F.mse_loss(f_hat, f) / len(SCALES)
    torch.testing.assert_close(losses["codebook"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["commit"], 0.25 * expected, rtol=1e-5, atol=1e-6)
    used = torch.unique(torch.cat([i.flatten() for i in ids])).numel() / 64
    assert losses["usage"].item() == pytest.approx(used) and losses["entropy"].item() == 0
    # the decoder sees f̂ (straight-through): its output is the reference decoding of the ids
    torch.testing.assert_close(x_hat.clamp(-1, 1), reference_decoder(state, f_hat), atol=1e-4,
                               rtol=1e-4)  # fmt: skip
    (x_hat - x).square().mean().backward(retain_graph=True)
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # through the estimator
    assert model.quantize.embedding.weight.grad is None  # reconstruction skips the codebook
    losses["codebook"].backward()
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


def test_msvq_trains_by_the_vqgan_loop_with_every_loss_term(run):
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert {"rec_l2", "perceptual", "codebook", "commit", "usage"} <= set(r)
        assert r["perceptual"] > 0 and r["codebook"] > 0 and 0 < r["usage"] <= 1
    assert steps[0]["disc_active"] == 0 and steps[0]["g_adv"] == 0  # disc_start=2
    assert all(r["disc_active"] == 1 and r["d_loss"] > 0 and r["g_adv"] != 0 for r in steps[1:])
    assert (run / "grid.png").is_file()
    files = {p.name for p in (run / "checkpoints" / "step-0000003").iterdir()}
    assert {"model.safetensors", "ema.safetensors", "aux-disc.safetensors"} <= files


def test_eval_every_reports_rfid_and_usage_on_held_out_images(run):
    (evaluated,) = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()
                    if "eval/rfid" in x]  # fmt: skip
    assert evaluated["step"] == 3
    # rFID itself is genzoo.tokenizers.rfid's (tests/test_vq.py); a 2048-d Fréchet distance is
    # too slow to compute twice here, so only its presence is checked
    assert np.isfinite(evaluated["eval/rfid"]) and evaluated["eval/rfid"] >= 0
    ema = run / "checkpoints" / "step-0000003" / "ema.safetensors"
    tokenizer = genzoo.load_official_tokenizer("var-vqvae", ema, v_patch_nums=SCALES, device="cpu")
    held_out = build_dataset("shapes", 32, train=False)
    images = torch.stack([held_out.get(i)[0] for i in range(2)])  # the first eval_num
    ids = tokenizer.encode(images.float() / 127.5 - 1)
    usage = torch.unique(torch.cat([i.flatten() for i in ids])).numel() / 64
    assert evaluated["eval/codebook_usage"] == pytest.approx(usage)


def test_a_trained_run_is_the_msvq_tokenizer_of_a_var_run(run):
    tokenizer = build_tokenizer(MSVQConfig(**TINY, source=str(run)))
    assert tokenizer.spec == f"msvq:{run}"
    assert not any(p.requires_grad for p in tokenizer.parameters())
    ema = run / "checkpoints" / "step-0000003" / "ema.safetensors"
    official = genzoo.load_official_tokenizer("var-vqvae", ema, v_patch_nums=SCALES, device="cpu")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(tokenizer.encode(x), official.encode(x)))
    longer = build_tokenizer(MSVQConfig(**{**TINY, "v_patch_nums": (1, 2, 3)}, source=str(run)))
    assert longer.patch_nums == (1, 2, 3)  # one codebook serves any schedule
    with pytest.raises(GenzooError, match="tokenizer.ch=64 but the run has 32"):
        build_tokenizer(MSVQConfig(**{**TINY, "ch": 64}, source=str(run)))


def test_a_schedule_that_does_not_end_at_the_image_side_is_refused(tmp_path, capsys):
    argv = [*TRAIN[:-4], "--steps", "1", "--res", "48", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.v_patch_nums=(1, 2) ends at a 2×2 token map" in err and "--res 32" in err
