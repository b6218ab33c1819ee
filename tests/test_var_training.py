"""VAR through the ordinary loop, `genzoo.load` and the CLI: var-tiny trained on a multi-scale
VQ-VAE (the tokenizer's per-scale id lists), exact resume, Pipeline samples decoded from lists
of ids, and `genzoo sample --official var --weights F --vae V`.

The expected samples come from tests/var_layout.py's uncached re-enactment of the official
sampler (greedy, so the draws do not matter), never from the code under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from var_layout import random_var_state, random_vqvae_state, reenact_var_sampler, var_layout
from var_layout import vqvae_layout as msvq_layout

import genzoo
from genzoo.cli import main
from genzoo.pipeline import Pipeline
from genzoo.tokenizers.msvq import PATCH_NUMS_256

pytestmark = pytest.mark.usefixtures("one_thread")

SCALES = (1, 2, 3)  # 48 px images, L = 14: the tiny architecture on a shorter schedule
TINY = (1, 2, 3, 4)  # the spec's tiny test model: 64 px, L = 30
TRAIN = [
    "train", "--preset", "var-tiny", "--data", "shapes", "--res", "48", "--batch-size", "8",
    "--quiet", "--device", "cpu", "--set", "tokenizer.v_patch_nums=1,2,3",
    "--set", "train.log_every=1", "--set", "train.ckpt_every=1", "--set", "train.keep_ckpts=10",
]  # fmt: skip


def _uint8(x):  # [-1, 1] → uint8 NHWC, as every genzoo sample
    return (127.5 * x + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    state = random_vqvae_state(msvq_layout(ch=32, z=8, vocab=64, scales=4), seed=2)
    path = tmp_path_factory.mktemp("msvq") / "vae_tiny.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def runs(vae, tmp_path_factory):
    root = tmp_path_factory.mktemp("var")
    whole, split = root / "whole", root / "split"
    argv = [*TRAIN, "--tokenizer", f"msvq:{vae[0]}"]
    assert main([*argv, "--steps", "3", "--out", str(whole)]) == 0
    assert main([*argv, "--steps", "1", "--out", str(split)]) == 0
    assert main([*argv, "--steps", "3", "--out", str(split)]) == 0  # resumed
    return whole, split


def test_var_trains_on_per_scale_ids_and_resumes_bit_identically(runs):
    whole, split = runs
    for name in ("model", "ema"):
        a = load_file(str(whole / "checkpoints/step-0000003" / f"{name}.safetensors"))
        b = load_file(str(split / "checkpoints/step-0000003" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ema = load_file(str(whole / "checkpoints/step-0000003/ema.safetensors"))
    # the block-causal mask is a constant table: the EMA keeps its 0 / −inf entries
    level = torch.tensor([0] + [1] * 4 + [2] * 9)
    hidden = level[None, :] > level[:, None]  # a token sees every token of scales ≤ its own
    mask = ema["attn_bias_for_masking"][0, 0]
    assert torch.equal(mask.isinf(), hidden) and bool((mask[~hidden] == 0).all())
    rows = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0 <= r["acc"] <= 1 for r in rows)
    saved = json.loads((whole / "config.json").read_text())
    assert saved["model"]["patch_nums"] == list(SCALES) and saved["model"]["vocab_size"] == 64
    assert (whole / "grid.png").is_file()


def test_load_samples_decode_the_greedy_ids_of_the_official_sampler(runs, vae):
    whole, _ = runs
    pipe = genzoo.load(whole, device="cpu")
    labels = torch.tensor([0, 5, 9])
    images = pipe.sample(labels.tolist(), seed=3, cfg=2.0, top_k=1)
    assert images.shape == (3, 48, 48, 3) and images.dtype == np.uint8
    state = load_file(str(whole / "checkpoints/step-0000003/ema.safetensors"))
    _, f_hat = reenact_var_sampler(state, vae[1], labels, SCALES, 2, 2.0, 1, 0.0, False)
    expected = _uint8(pipe.tokenizer.fhat_to_img(f_hat))
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1

    # sampled draws: sample i's ids depend on (seed, i) alone
    def ids(labels, indices):
        return pipe.family.generate(
            pipe.model, torch.tensor(labels), seed=4, indices=indices, latent_shape=(),
            device=pipe.device, null_label=pipe.num_classes, top_k=20,
        )  # fmt: skip

    batch, alone = ids([1, 2, 3], [0, 1, 2]), ids([3], [2])
    assert [tuple(t.shape) for t in batch] == [(3, 1), (3, 4), (3, 9)]
    assert all(torch.equal(a[2:], b) for a, b in zip(batch, alone, strict=True))
    assert not all(torch.equal(a[2:], b) for a, b in zip(batch, ids([3], [1]), strict=True))


TINY_VAR = dict(depth=2, width=64, heads=2, vocab=64, cv=8, classes=10)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    state = random_var_state(var_layout(**TINY_VAR, patch_nums=TINY), TINY, seed=4)
    path = tmp_path_factory.mktemp("var-official") / "var_tiny.pth"
    torch.save(state, path)
    return path, state


def test_official_var_is_a_pipeline_with_the_published_protocol(official, vae):
    pipe = genzoo.load_official("var", official[0], vae=vae[0], patch_nums=TINY, device="cpu")
    assert isinstance(pipe, Pipeline) and pipe.image_size == 64 and pipe.num_classes == 10
    assert pipe.options() == {"cfg": 1.5, "top_k": 900, "top_p": 0.96}
    y = torch.tensor([2, 7])
    images = pipe.sample(y.tolist(), seed=0, top_k=1)  # the Pipeline's uint8 samples
    _, f_hat = reenact_var_sampler(official[1], vae[1], y, TINY, 2, 1.5, 1, 0.96, False)
    expected = _uint8(pipe.tokenizer.fhat_to_img(f_hat))
    assert images.shape == (2, 64, 64, 3)
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    official_images = pipe.sample(y, top_k=1)  # the official call: float images in [0, 1]
    assert official_images.shape == (2, 3, 64, 64) and official_images.dtype == torch.float32
    torch.testing.assert_close(official_images, (pipe.tokenizer.fhat_to_img(f_hat) + 1) / 2)


def test_sample_official_var_through_the_cli(vae, tmp_path, capsys):
    # the CLI reads the scales from the transformer: a published schedule (256 px, L = 680)
    state = random_var_state(var_layout(**TINY_VAR, patch_nums=PATCH_NUMS_256), PATCH_NUMS_256)
    weights = tmp_path / "var_tiny_256.pth"
    torch.save(state, weights)
    out = tmp_path / "var.npz"
    argv = ["sample", "--official", "var", "--weights", str(weights), "--num", "2",
            "--top-k", "1", "--batch-size", "1", "--out", str(out), "--device", "cpu",
            "--quiet"]  # fmt: skip
    assert main([*argv, "--vae", str(vae[0])]) == 0
    with np.load(out) as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.shape == (2, 256, 256, 3)
    y = torch.as_tensor(labels)
    _, f_hat = reenact_var_sampler(state, vae[1], y, PATCH_NUMS_256, 2, 1.5, 1, 0.96, False)
    tokenizer = genzoo.load_official_tokenizer("var-vqvae", vae[0], device="cpu")
    expected = _uint8(tokenizer.fhat_to_img(f_hat))
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    assert main(argv) == 2  # no --vae
    assert "--official var needs --vae FILE" in capsys.readouterr().err
