"""DINOv2 plumbing without torch.hub: official key names, preprocessing, a tiny ViT (Tier A 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genzoo.errors import GenzooError
from genzoo.metrics.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_L14,
    DinoFeatures,
    DinoVisionTransformer,
    ViTConfig,
    preprocess,
)
from genzoo.metrics.resize import resize_pil_bicubic

TINY = ViTConfig(img_size=56, patch_size=14, dim=64, depth=2, heads=1)  # a 4x4 position grid


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = DinoVisionTransformer(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("dino") / "tiny.pth"
    torch.save(net.state_dict(), path)
    return path


def images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_vit_l14_has_the_official_state_dict_layout():
    with torch.device("meta"):
        state = DinoVisionTransformer(VIT_L14).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["patch_embed.proj.weight"] == (1024, 3, 14, 14)
    assert shapes["cls_token"] == (1, 1, 1024)
    assert shapes["pos_embed"] == (1, 1 + 37 * 37, 1024)
    assert shapes["mask_token"] == (1, 1024)
    assert shapes["blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert shapes["blocks.23.mlp.fc1.weight"] == (4096, 1024)
    for name in ("norm1", "attn.proj", "ls1.gamma", "norm2", "mlp.fc2", "ls2.gamma"):
        assert any(k.startswith(f"blocks.0.{name}") for k in state)
    assert "norm.weight" in state and len(state) == 5 + 24 * 14 + 2


def test_pil_resize_equals_pil_byte_for_byte():
    x = images(2, size=57, seed=1)
    ours = resize_pil_bicubic(x, (224, 224))
    for i in range(2):
        expected = np.asarray(Image.fromarray(x[i]).resize((224, 224), Image.BICUBIC))
        np.testing.assert_array_equal(ours[i], expected)


def test_preprocessing_normalises_with_imagenet_statistics():
    x = images(1, size=224, seed=2)  # already 224: the resize is the identity
    got = preprocess(x, "pil")
    expected = (
        torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    ) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert got.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (
        preprocess(images(1, 60), "torch") - preprocess(images(1, 60), "pil")
    ).abs().mean() < 0.1


def test_position_embeddings_follow_dinov2_interpolation_rule():
    net = DinoVisionTransformer(TINY)
    with torch.no_grad():
        net.pos_embed.normal_()
    assert net.position_embedding(4, 4) is net.pos_embed  # stored grid: used as is
    pos = net.position_embedding(16, 16)
    assert pos.shape == (1, 1 + 256, 64)
    torch.testing.assert_close(pos[:, :1], net.pos_embed[:, :1])
    grid = net.pos_embed[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    # DINOv2: bicubic with scale factor (16 + 0.1) / 4 per axis, not a plain resize to 16x16.
    expected = F.interpolate(grid, scale_factor=(16.1 / 4, 16.1 / 4), mode="bicubic")
    torch.testing.assert_close(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 256, 64))
    plain = F.interpolate(grid, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1)
    assert (pos[:, 1:] - plain.reshape(1, 256, 64)).abs().max() > 1e-3


def test_tiny_dinov2_features_have_the_right_shape_and_ignore_batching(tiny_weights):
    net = DinoFeatures(tiny_weights, allow_download=False)
    assert net.net.cfg == TINY  # architecture read from the weights
    x = images(3, seed=3)
    together = net(x)
    assert together.shape == (3, 64) and torch.isfinite(together).all()
    alone = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)
    assert net.describe()["input_resize"].startswith("pil bicubic to 224")


def test_non_dinov2_weights_are_rejected(tmp_path, tiny_weights):
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(GenzooError, match="not DINOv2"):
        DinoFeatures(bad)
    with pytest.raises(GenzooError, match="missing keys"):
        DinoFeatures(tiny_weights, config=VIT_L14)


def test_block_mlp_uses_the_exact_gelu_of_dinov2():
    """DINOv2's blocks use nn.GELU() (erf), not DiT's tanh approximation: at 1e-3 per unit the
    difference would move FD-DINOv2 features."""
    torch.manual_seed(1)
    mlp = DinoVisionTransformer(TINY).blocks[0].mlp
    x = torch.randn(2, 5, TINY.dim) * 3
    with torch.no_grad():
        expected = mlp.fc2(0.5 * mlp.fc1(x) * (1 + torch.erf(mlp.fc1(x) / 2**0.5)))
        assert torch.allclose(mlp(x), expected, atol=1e-6)
        assert not torch.allclose(
            mlp.fc2(F.gelu(mlp.fc1(x), approximate="tanh")), expected, atol=1e-6
        )
