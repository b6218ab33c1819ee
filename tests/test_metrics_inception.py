"""Inception features against torch-fidelity with shared random weights (Tier A 5-6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

import genzoo.metrics.weights as weights_module
from genzoo.errors import GenzooError
from genzoo.metrics.inception import (
    INCEPTION_URL,
    InceptionFeatures,
    save_random_inception_weights,
)
from genzoo.metrics.resize import resize_bilinear_tf1


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return save_random_inception_weights(tmp_path_factory.mktemp("w") / "inception.pth", seed=1)


def reference(weights: Path, dtype: torch.dtype = torch.float32) -> FeatureExtractorInceptionV3:
    net = FeatureExtractorInceptionV3(
        "inception-v3-compat",
        ["2048", "logits_unbiased"],
        feature_extractor_weights_path=str(weights),
    )
    # torch-fidelity 0.4.0 maps feature_extractor_internal_dtype="float64" to float32; set both.
    net.feature_extractor_internal_dtype = dtype
    return net.to(dtype)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def random_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


# -- resize and normalisation -------------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 32, 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tf1_bilinear_resize_is_bit_exact(size, dtype):
    x = torch.rand(1, 3, size, size, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 255
    theirs = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(resize_bilinear_tf1(x, (299, 299)), theirs)


def test_tf1_bilinear_resize_is_not_pytorch_bilinear():
    x = torch.rand(1, 3, 256, 256) * 255
    half_pixel = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (resize_bilinear_tf1(x, (299, 299)) - half_pixel).abs().max() > 1.0


def test_network_input_is_resized_then_normalised_as_in_the_graph(weights):
    net = InceptionFeatures(weights)
    seen = []
    net.net.Conv2d_1a_3x3.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    images = random_images(1, 40, 40, seed=2)
    net(images)
    expected = (resize_bilinear_tf1(images.float(), (299, 299)) - 128) / 128
    assert torch.equal(seen[0], expected)


# -- features -----------------------------------------------------------------------------------


def test_pool3_and_logits_match_torch_fidelity_in_float32(weights):
    ours, theirs = InceptionFeatures(weights), reference(weights)
    for images in (random_images(2, 256, 256, seed=3), random_images(1, 45, 77, seed=4)):
        got = ours(images)
        with torch.no_grad():
            pool3, logits = theirs(images)
        assert rel_err(got["pool3"], pool3) <= 1e-5
        assert rel_err(got["logits"], logits) <= 1e-5
        for value in got.values():
            assert torch.isfinite(value).all()


def test_pool3_matches_torch_fidelity_in_float64(weights):
    ours = InceptionFeatures(weights, dtype=torch.float64)
    theirs = reference(weights, torch.float64)
    captured = []  # torch-fidelity returns float32; read its float64 pool before the cast
    theirs.AvgPool.register_forward_hook(lambda m, i, o: captured.append(o.flatten(1)))
    images = random_images(1, 64, 64, seed=5)
    got = ours(images)
    with torch.no_grad():
        theirs(images)
    assert got["pool3"].dtype == torch.float64
    assert rel_err(got["pool3"], captured[0]) <= 1e-10


def test_sfid_features_are_mixed_6d_branch1x1_channels_last(weights):
    ours, theirs = InceptionFeatures(weights), reference(weights)
    captured = []
    theirs.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.append(o.clone()))
    images = random_images(2, 64, 64, seed=6)
    spatial = ours(images)["spatial"]
    with torch.no_grad():
        theirs(images)
    hooked = captured[0]  # [N, 192, 17, 17]
    assert hooked.shape == (2, 192, 17, 17) and spatial.shape == (2, 2023)
    expected = hooked.permute(0, 2, 3, 1)[..., :7].reshape(2, -1)
    assert rel_err(spatial, expected) <= 1e-5
    # Flatten order (h, w, c) with c fastest: element 7 is (h0, w1, c0), 119 is (h1, w0, c0).
    for index, (h, w, c) in {1: (0, 0, 1), 7: (0, 1, 0), 119: (1, 0, 0), 2022: (16, 16, 6)}.items():
        assert spatial[:, index] == pytest.approx(hooked[:, c, h, w], rel=1e-5, abs=1e-6)


def test_batch_composition_does_not_change_features(weights):
    net = InceptionFeatures(weights)
    images = random_images(3, 32, 32, seed=7)
    together = net(images)["pool3"]
    alone = torch.cat([net(images[i : i + 1])["pool3"] for i in range(3)])
    assert rel_err(alone, together) <= 1e-5


# -- weights ------------------------------------------------------------------------------------


def test_weights_are_identified_by_hash(weights):
    import hashlib

    net = InceptionFeatures(weights)
    assert net.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert net.describe()["official_weights"] is False


def test_wrong_architecture_is_rejected(tmp_path, weights):
    state = torch.load(weights, weights_only=True)
    state.pop("Mixed_7c.branch1x1.conv.weight")
    state["fc.weight"] = torch.zeros(1000, 2048)
    bad = tmp_path / "resnet.pth"
    torch.save(state, bad)
    with pytest.raises(GenzooError, match="not Inception-v3") as err:
        InceptionFeatures(bad)
    assert "missing keys (1): Mixed_7c.branch1x1.conv.weight" in str(err.value)
    assert "mis-shaped keys (1): fc.weight: file [1000, 2048] vs model" in str(err.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(GenzooError, match="cannot be read"):
        InceptionFeatures(tmp_path / "junk.pth")


def test_missing_weights_say_what_to_fetch_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("GENZOO_INCEPTION_WEIGHTS", raising=False)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights_module.torch.hub, "download_url_to_file", offline)
    with pytest.raises(GenzooError) as info:
        InceptionFeatures()
    message = str(info.value)
    assert INCEPTION_URL in message
    assert str(tmp_path / "hub" / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[-1]) in message
    assert "--inception-weights" in message and "GENZOO_INCEPTION_WEIGHTS" in message
    with pytest.raises(GenzooError, match="no such file"):
        InceptionFeatures(tmp_path / "absent.pth")


def test_weights_from_environment_and_hub_cache(tmp_path, monkeypatch, weights):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("GENZOO_INCEPTION_WEIGHTS", str(weights))
    assert InceptionFeatures(allow_download=False).weights_path == weights
    monkeypatch.delenv("GENZOO_INCEPTION_WEIGHTS")
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights.read_bytes())
    assert InceptionFeatures(allow_download=False).weights_path == cached


def test_images_must_be_uint8_nchw(weights):
    net = InceptionFeatures(weights)
    with pytest.raises(ValueError, match="uint8"):
        net(torch.zeros(1, 3, 8, 8))
    assert np.isfinite(net(random_images(1, 8, 8, 0))["logits"].numpy()).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_features_match_cpu_with_tf32_off(weights):
    from genzoo.metrics.features import exact_float32

    images = random_images(4, 256, 256, seed=8)
    cpu = InceptionFeatures(weights)(images)
    gpu_net = InceptionFeatures(weights).to("cuda")
    with exact_float32():
        gpu = gpu_net(images)
    for key in ("pool3", "logits", "spatial"):
        assert rel_err(gpu[key].cpu(), cpu[key]) <= 1e-4
