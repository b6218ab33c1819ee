"""The first token family end to end on the embedded data: train a tiny VQ, cache its token
ids, train a tiny LlamaGen GPT on them, resume it, and sample images through the CLI."""

import json

import numpy as np
import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data.latents import LatentDataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vq") / "run"
    argv = ["train", "--preset", "vq16-tiny", "--data", "shapes", "--res", "32", "--out", str(run)]
    argv += ["--steps", "3", "--batch-size", "4", "--quiet", "--device", "cpu"]
    argv += ["--set", "family.disc_start=2", "--set", "train.ckpt_every=3"]
    argv += ["--set", "family.perceptual_weight=0"]  # LPIPS itself: test_vq.py
    assert main(argv) == 0
    return run


def test_vq_training_logs_reconstruction_and_codebook_usage(vq_run):
    records = [json.loads(r) for r in (vq_run / "log.jsonl").read_text().splitlines()]
    last = records[-1]
    assert {"rec_l1", "rec_l2", "perceptual", "commit", "codebook", "usage", "d_loss"} <= set(last)
    assert 0 < last["usage"] <= 1
    assert last["disc_active"] == 1.0  # the discriminator switched on at step 2
    assert (vq_run / "checkpoints" / "step-0000003" / "aux-disc.safetensors").is_file()
    assert (vq_run / "grid.png").is_file()


def test_tokens_cache_train_resume_and_sample(vq_run, tmp_path):
    cache = tmp_path / "tokens"
    argv = ["encode", "--data", "shapes", "--tokenizer", f"vq:{vq_run}", "--res", "32"]
    assert main([*argv, "--out", str(cache), "--quiet", "--device", "cpu"]) == 0
    ids = LatentDataset(cache)
    assert ids.latent_shape == (8, 8) and ids.meta["dtype"] == "int32"
    x, _ = ids.get_batch(np.array([0, 1]), np.array([0, 1]))
    assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) < 256

    def train(out, steps):
        argv = ["train", "--preset", "llamagen-tiny", "--data", f"tokens:{cache}", "--res", "32"]
        argv += ["--out", str(out), "--steps", str(steps), "--batch-size", "8", "--quiet"]
        argv += ["--device", "cpu", "--set", "train.ckpt_every=2", "--set", "model.n_layer=2"]
        assert main(argv) == 0

    train(tmp_path / "whole", 4)
    train(tmp_path / "split", 2)
    train(tmp_path / "split", 4)
    a, b = genzoo.load(tmp_path / "whole"), genzoo.load(tmp_path / "split")
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k  # resume is bit-exact
    cfg = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert cfg["tokenizer"] == {"kind": "vq", "source": str(vq_run), "ema": True}
    assert cfg["model"]["block_size"] == 64 and cfg["model"]["vocab_size"] == 256

    out = tmp_path / "s.npz"
    argv = ["sample", "--run", str(tmp_path / "whole"), "--num", "6", "--out", str(out)]
    argv += ["--temperature", "1.0", "--top-k", "5", "--top-p", "0.9", "--cfg", "2.0"]
    argv += ["--cfg-schedule", "linear", "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    images = np.load(out)["arr_0"]
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    # sample i depends on (seed, i) alone
    again = a.sample(np.load(out)["arr_1"][3:5], indices=[3, 4], top_k=5, top_p=0.9, cfg=2.0,
                     cfg_schedule="linear")  # fmt: skip
    assert (again == images[3:5]).all()
    assert main([*argv[:-3], "--sampler", "heun", "--device", "cpu"]) == 2  # not an ar option


def test_a_token_cache_of_another_grid_is_refused(vq_run, tmp_path, capsys):
    from genzoo.data.latents import encode_dataset
    from genzoo.data.shapes import ShapesDataset
    from genzoo.tokenizers import build_tokenizer

    tok = build_tokenizer(f"vq:{vq_run}")
    cache = encode_dataset(ShapesDataset(32, length=8), tok, tmp_path / "tokens", progress=False)
    meta = json.loads((cache / "meta.json").read_text())
    meta["latent_shape"] = [4, 4]
    (cache / "meta.json").write_text(json.dumps(meta))
    argv = ["train", "--preset", "llamagen-tiny", "--data", f"tokens:{cache}", "--res", "32"]
    assert main([*argv, "--out", str(tmp_path / "r"), "--steps", "1", "--quiet"]) == 2
    assert "holds items of shape (4, 4)" in capsys.readouterr().err


def test_encode_dataset_stores_ids_of_a_discrete_tokenizer_as_int32(vq_run, tmp_path):
    from genzoo.data.latents import encode_dataset
    from genzoo.data.shapes import ShapesDataset
    from genzoo.errors import GenzooError
    from genzoo.tokenizers import build_tokenizer

    tok = build_tokenizer(f"vq:{vq_run}")
    cache = encode_dataset(ShapesDataset(32, length=4), tok, tmp_path / "ids", progress=False)
    assert LatentDataset(cache).meta["dtype"] == "int32"
    with pytest.raises(GenzooError, match="use int32 for the ids of a discrete tokenizer"):
        encode_dataset(ShapesDataset(32, length=4), tok, tmp_path / "f", dtype="float32")
