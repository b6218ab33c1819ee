"""Latent cache: encode a tiny dataset with a tiny VAE, read it back with `latents:DIR`."""

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import tiny_vae
from diffusers import AutoencoderKL

from genzoo.data import build_dataset
from genzoo.data.latents import encode_command, encode_dataset, posterior_seed
from genzoo.data.shapes import ShapesDataset
from genzoo.data.transforms import to_float
from genzoo.errors import GenzooError
from genzoo.tokenizers import build_tokenizer

SEED = 3


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    vae = tiny_vae()
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images():
    return ShapesDataset(16, length=10, seed=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, vae_dir, images):
    out = tmp_path_factory.mktemp("caches") / "shapes16"
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    encode_dataset(images, tokenizer, out, batch_size=4, seed=SEED, progress=False)
    return out


def test_posterior_seed_convention():
    # Documented: the first 64-bit word of SeedSequence([seed, index, flip]).
    expected = np.random.SeedSequence([SEED, 5, 1]).generate_state(1, dtype=np.uint64)[0]
    assert posterior_seed(SEED, 5, True) == int(expected)
    assert len({posterior_seed(s, i, f) for s in (0, 1) for i in range(50) for f in (0, 1)}) == 200


def test_cache_items_equal_diffusers_posterior_samples(cache, vae_dir, images):
    data = build_dataset(f"latents:{cache}", 16)
    assert data.is_latent and len(data) == len(images)
    assert data.num_classes == 10 and data.class_names == images.class_names
    assert np.array_equal(data.labels, images.labels)
    meta = data.meta
    assert meta["tokenizer"] == f"kl-vae:{vae_dir}" and meta["scale"] == 0.18215
    assert (meta["res"], meta["count"], meta["data"]) == (16, 10, "shapes")

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    for i in range(len(images)):
        image, label = images.get(i)
        for flip in (False, True):
            pixels = to_float(image.flip(-1) if flip else image)[None]
            generator = torch.Generator().manual_seed(posterior_seed(SEED, i, flip))
            with torch.no_grad():
                oracle = vae.encode(pixels).latent_dist.sample(generator=generator)[0] * 0.18215
            latent, cached_label = data.get(i, flip=flip)
            assert latent.shape == (4, 8, 8) and latent.dtype == torch.float32
            assert cached_label == label
            assert torch.allclose(latent, oracle, atol=1e-5), (i, flip)


def test_cache_ignores_batch_size_and_depends_on_seed(tmp_path, cache, vae_dir, images):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    rebatched = encode_dataset(images, tokenizer, tmp_path / "b3", batch_size=3, seed=SEED,
                               progress=False)  # fmt: skip
    reseeded = encode_dataset(images, tokenizer, tmp_path / "s4", batch_size=4, seed=SEED + 1,
                              progress=False)  # fmt: skip
    reference = np.load(cache / "latents.npy")
    assert np.allclose(np.load(rebatched / "latents.npy"), reference, atol=1e-5)
    assert not np.allclose(np.load(reseeded / "latents.npy"), reference, atol=1e-3)


def test_float16_cache_and_batch_reads(tmp_path, vae_dir, images, cache):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    half = encode_dataset(images, tokenizer, tmp_path / "half", batch_size=4, seed=SEED,
                          progress=False, dtype="float16")  # fmt: skip
    assert np.load(half / "latents.npy").dtype == np.float16
    full, compact = build_dataset(f"latents:{cache}", 16), build_dataset(f"latents:{half}", 16)
    assert torch.allclose(compact.get(4)[0], full.get(4)[0], rtol=2e-3, atol=1e-3)

    indices, flips = np.array([7, 2, 7, 0]), np.array([1, 0, 0, 1])
    latents, labels = full.get_batch(indices, flips)
    for row, (i, flip) in enumerate(zip(indices, flips)):
        assert torch.equal(latents[row], full.get(int(i), bool(flip))[0])
        assert labels[row] == full.labels[i]


def test_dataset_pickles_without_the_latents(cache):
    data = build_dataset(f"latents:{cache}", 16)
    data.get(0)  # opens the memory map
    clone = pickle.loads(pickle.dumps(data))
    assert len(pickle.dumps(data)) < 4 * 10 * 2 * 4 * 8 * 8  # smaller than the float data
    assert torch.equal(clone.get(9, flip=True)[0], data.get(9, flip=True)[0])


def test_pixel_cache_via_encode_command(tmp_path, capsys):
    out = encode_command("digits", "pixels", 8, tmp_path / "digits8", batch_size=500)
    assert "latents:" in capsys.readouterr().out
    images, cached = build_dataset("digits", 8), build_dataset(f"latents:{out}", 8)
    assert len(cached) == len(images) == 1438
    for i in (0, 700, 1437):
        image, label = images.get(i)
        assert torch.equal(cached.get(i)[0], image.float() / 127.5 - 1)
        assert torch.equal(cached.get(i, flip=True)[0], image.flip(-1).float() / 127.5 - 1)
        assert cached.get(i)[1] == label


def test_existing_outputs(tmp_path, cache, vae_dir, images):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    stamp = (cache / "latents.npy").stat().st_mtime_ns
    # The same cache again is reused untouched.
    encode_dataset(images, tokenizer, cache, batch_size=4, seed=SEED, progress=False)
    assert (cache / "latents.npy").stat().st_mtime_ns == stamp
    with pytest.raises(GenzooError, match="different seed"):
        encode_dataset(images, tokenizer, cache, batch_size=4, seed=SEED + 1, progress=False)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something.txt").write_text("x")
    with pytest.raises(GenzooError, match="not a finished latent cache"):
        encode_dataset(images, tokenizer, busy, progress=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    encode_dataset(images, build_tokenizer("pixels"), empty, progress=False)
    assert json.loads((empty / "meta.json").read_text())["latent_shape"] == [3, 16, 16]


def test_failed_encoding_leaves_nothing_behind(tmp_path, images):
    class Failing(torch.nn.Module):
        spec, scale, stride, channels = "failing", 1.0, 1, 3

        def latent_shape(self, res):
            return (3, res, res)

        def encode(self, x, generator=None):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        encode_dataset(images, Failing(), tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_reading_errors(tmp_path, cache):
    with pytest.raises(GenzooError, match="no such directory"):
        build_dataset(f"latents:{tmp_path / 'missing'}", 16)
    with pytest.raises(GenzooError, match="not a finished latent cache"):
        build_dataset(f"latents:{tmp_path}", 16)
    with pytest.raises(GenzooError, match="encoded at resolution 16.*data.res=16"):
        build_dataset(f"latents:{cache}", 32)
    with pytest.raises(GenzooError, match="already a latent cache"):
        encode_command(f"latents:{cache}", "pixels", 16, tmp_path / "x", quiet=True)
