"""load_official, sample_latents and export on official-layout checkpoints (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_layout import random_official_state_dict

import genzoo
from genzoo.cli import main
from genzoo.errors import GenzooError

SMALL = dict(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10)


@pytest.fixture
def dit_file(tmp_path):
    path = tmp_path / "DiT-small.pt"
    torch.save(random_official_state_dict(seed=1, **SMALL), path)
    return path


def test_official_forward_is_the_loaded_network(dit_file):
    pipe = genzoo.load_official("dit", dit_file, device="cpu", **SMALL)
    assert not pipe.model.training and pipe.default_options["cfg_channels"] == 3
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([0, 999]), torch.tensor([1, 10])
    out = pipe.model(x, t, y)
    assert out.shape == (2, 8, 8, 8)  # learned sigma: [eps, v]
    # every key of the file reached the module (strict), so a changed tensor changes the output
    sd = torch.load(dit_file)
    assert all(torch.equal(sd[k], v) for k, v in pipe.model.state_dict().items())


def test_doubled_noise_in_the_official_convention_is_accepted(dit_file):
    pipe = genzoo.load_official("dit", dit_file, device="cpu", **SMALL)
    y = torch.tensor([3, 7])
    z = torch.randn(2, 4, 8, 8)
    doubled = torch.cat([z, torch.randn_like(z)])  # the official scripts' cat([z, z]) batch
    a = pipe.sample_latents(y, noise=z, sampler="ddim", steps=5, cfg=4.0)
    b = pipe.sample_latents(y, noise=doubled, sampler="ddim", steps=5, cfg=4.0)
    assert a.shape == (2, 4, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(GenzooError, match="noise has 3 rows for 2 labels"):
        pipe.sample_latents(y, noise=torch.randn(3, 4, 8, 8), sampler="ddim", steps=5)


def test_official_guidance_touches_three_channels_by_default(dit_file):
    pipe = genzoo.load_official("dit", dit_file, device="cpu", **SMALL)
    y, z = torch.tensor([3, 7]), torch.randn(2, 4, 8, 8)
    kw = dict(noise=z, sampler="ddim", steps=4, cfg=4.0)
    default = pipe.sample_latents(y, **kw)
    three = pipe.sample_latents(y, cfg_channels=3, **kw)
    every = pipe.sample_latents(y, cfg_channels=4, **kw)
    torch.testing.assert_close(default, three, rtol=0, atol=0)
    assert not torch.allclose(default, every)
    assert torch.isfinite(default).all()


def test_ddpm_with_global_rng_is_reproducible_by_seeding(dit_file):
    pipe = genzoo.load_official("dit", dit_file, device="cpu", **SMALL)
    y, z = torch.tensor([1, 2]), torch.randn(2, 4, 8, 8)
    torch.manual_seed(0)
    a = pipe.sample_latents(y, noise=z, sampler="ddpm", steps=6, cfg=1.5)
    torch.manual_seed(0)
    b = pipe.sample_latents(y, noise=z, sampler="ddpm", steps=6, cfg=1.5)
    torch.manual_seed(1)
    c = pipe.sample_latents(y, noise=z, sampler="ddpm", steps=6, cfg=1.5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    d = pipe.sample_latents(y, noise=z, sampler="ddpm", steps=6, generator=g1)
    e = pipe.sample_latents(y, noise=z, sampler="ddpm", steps=6, generator=g2)
    torch.testing.assert_close(d, e, rtol=0, atol=0)


def test_sit_checkpoint_with_learned_sigma_samples_velocity_channels(tmp_path):
    path = tmp_path / "SiT-small.safetensors"
    from safetensors.torch import save_file

    save_file(random_official_state_dict(seed=2, **SMALL), str(path))
    pipe = genzoo.load_official("sit", path, device="cpu", **SMALL)
    assert pipe.cfg.family.kind == "flow"
    y, z = torch.tensor([0, 9]), torch.randn(2, 4, 8, 8)
    # the official SiT forward keeps the velocity half of its 2C outputs
    assert pipe.model(z, torch.tensor([0.3, 0.7]), y).shape == (2, 4, 8, 8)
    for sampler in ("euler", "heun", "euler-maruyama"):
        g = torch.Generator().manual_seed(0)
        out = pipe.sample_latents(y, noise=z, sampler=sampler, steps=4, cfg=1.5, generator=g)
        assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_mismatching_file_names_the_keys_and_suggests_arguments(dit_file):
    with pytest.raises(GenzooError, match="pos_embed") as e:
        genzoo.load_official("dit", dit_file, device="cpu", **{**SMALL, "input_size": 16})
    assert "input_size" in str(e.value)


def test_export_round_trips_through_the_official_layout(tiny_run, tmp_path):
    out = tmp_path / "exported.pt"
    assert (
        main(["export", "--run", str(tiny_run), "--format", "official-dit", "--out", str(out)]) == 0
    )
    sd = torch.load(out, weights_only=True)
    assert isinstance(sd, dict) and "pos_embed" in sd and "y_embedder.embedding_table.weight" in sd
    pipe = genzoo.load(tiny_run, device="cpu")
    m = pipe.cfg.model
    official = genzoo.load_official(
        "dit",
        out,
        device="cpu",
        input_size=m.input_size,
        in_channels=m.in_channels,
        patch_size=m.patch_size,
        hidden_size=m.hidden_size,
        depth=m.depth,
        num_heads=m.num_heads,
        num_classes=m.num_classes,
    )
    x, t, y = torch.randn(3, 3, 16, 16), torch.tensor([5, 500, 900]), torch.tensor([0, 4, 10])
    torch.testing.assert_close(official.model(x, t, y), pipe.model(x, t, y), rtol=0, atol=0)


def test_export_refuses_non_official_switches(tmp_path, capsys):
    run = tmp_path / "rms"
    from conftest import TINY_TRAIN

    argv = ["train", *TINY_TRAIN, "--steps", "1", "--out", str(run), "--set", "model.norm=rmsnorm"]
    assert main(argv) == 0
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x.pt")]) == 2
    assert "norm" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_latent_pipeline_decodes_with_a_local_vae(tmp_path, dit_file):
    from conftest import tiny_vae

    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    pipe = genzoo.load_official("dit", dit_file, vae=str(tmp_path / "vae"), device="cpu", **SMALL)
    images = pipe.sample([1, 2, 3], sampler="ddim", steps=3, cfg=1.5, seed=0)
    assert images.dtype == np.uint8 and images.shape == (3, 16, 16, 3)
