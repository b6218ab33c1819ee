"""Tokenizers: pixels (identity) and kl-vae (a tiny random diffusers AutoencoderKL on disk)."""

import pytest
import torch
from conftest import tiny_vae
from diffusers import AutoencoderKL

from genzoo.errors import GenzooError
from genzoo.tokenizers import build_tokenizer


def _tiny_vae() -> AutoencoderKL:
    return tiny_vae()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    _tiny_vae().save_pretrained(path)
    return path


def _images(n=3, res=16, seed=0):
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pixels_is_the_identity():
    tokenizer = build_tokenizer("pixels")
    x = _images()
    assert torch.equal(tokenizer.encode(x), x) and torch.equal(tokenizer.decode(x), x)
    assert (tokenizer.stride, tokenizer.channels, tokenizer.spec) == (1, 3, "pixels")
    assert tokenizer.latent_shape(32) == (3, 32, 32)


def test_kl_vae_shapes_and_attributes(vae_dir):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    assert tokenizer.stride == 2 and tokenizer.channels == 4  # 2 ** (2 blocks - 1)
    assert tokenizer.spec == f"kl-vae:{vae_dir}" and tokenizer.scale == 0.18215
    assert tokenizer.latent_shape(16) == (4, 8, 8)
    z = tokenizer.encode(_images(), generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 4, 8, 8) and z.dtype == torch.float32
    assert tokenizer.decode(z).shape == (3, 3, 16, 16)
    with pytest.raises(GenzooError, match="not a multiple of its stride 2"):
        tokenizer.latent_shape(15)


def test_kl_vae_matches_diffusers_posterior_sample_and_scale(vae_dir):
    scale = 0.3
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}", scale=scale)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    x = _images()
    with torch.no_grad():
        oracle = vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(7))
        ours = tokenizer.encode(x, generator=torch.Generator().manual_seed(7))
        assert torch.allclose(ours, oracle * scale, atol=1e-6)
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(tokenizer.decode(z), vae.decode(z / scale).sample, atol=1e-6)


def test_kl_vae_sampling_is_seeded_and_per_item(vae_dir):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    x = _images()
    first = tokenizer.encode(x, generator=torch.Generator().manual_seed(3))
    again = tokenizer.encode(x, generator=torch.Generator().manual_seed(3))
    other = tokenizer.encode(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.allclose(first, other)

    # One generator per item: item k depends on generator k only, not on its batch.
    batch = tokenizer.encode(x, generator=[torch.Generator().manual_seed(10 + k) for k in range(3)])
    for k in range(3):
        alone = tokenizer.encode(x[k : k + 1], generator=torch.Generator().manual_seed(10 + k))
        assert torch.allclose(batch[k : k + 1], alone, atol=1e-5)


def test_tokenizers_are_frozen(vae_dir):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    assert not any(p.requires_grad for p in tokenizer.parameters())
    wrapper = torch.nn.ModuleDict({"tokenizer": tokenizer}).train()
    assert not wrapper["tokenizer"].training and not tokenizer.vae.training


def test_pipeline_folder_with_vae_subfolder(tmp_path, vae_dir):
    _tiny_vae().save_pretrained(tmp_path / "vae")
    tokenizer = build_tokenizer(f"kl-vae:{tmp_path}")
    assert tokenizer.latent_shape(32) == (4, 16, 16)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument:UserWarning")
def test_kl_vae_errors(tmp_path, monkeypatch):
    with pytest.raises(GenzooError, match="no such folder"):
        build_tokenizer(f"kl-vae:{tmp_path / 'missing'}")
    with pytest.raises(GenzooError, match="no config.json"):
        build_tokenizer(f"kl-vae:{tmp_path}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is fetched in tests
    with pytest.raises(GenzooError, match="huggingface-cli download genzoo-test/no-such-vae"):
        build_tokenizer("kl-vae:genzoo-test/no-such-vae")
    with pytest.raises(GenzooError, match="needs a source"):
        build_tokenizer("kl-vae")
    with pytest.raises(GenzooError, match="known tokenizers: pixels, kl-vae"):
        build_tokenizer("vqgan")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kl_vae_on_cuda_matches_cpu(vae_dir):
    tokenizer = build_tokenizer(f"kl-vae:{vae_dir}")
    x = _images()
    on_cpu = tokenizer.encode(x, generator=torch.Generator().manual_seed(0))
    tokenizer.to("cuda")
    on_gpu = tokenizer.encode(x.cuda(), generator=torch.Generator().manual_seed(0))
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-4)
