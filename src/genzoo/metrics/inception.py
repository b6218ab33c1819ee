"""The TF-2015 Inception-v3 of the ImageNet protocol, through torch-fidelity's exact port.

One forward pass gives every Inception feature the protocol uses:

* "pool3"  [N, 2048]: TF `pool_3`, the global average of Mixed_7c (FID, precision/recall, KID);
* "logits" [N, 1008]: pool3 . W^T without the bias (TF `softmax/logits/MatMul`; IS);
* "spatial" [N, 2023]: TF `mixed_6/conv`, the post-ReLU output of `Mixed_6d.branch1x1` (a forward
  hook) moved channels-last, first 7 channels, flattened in (h, w, c) order: 17 * 17 * 7 (sFID).
  Flattening channels-first instead permutes the vector and breaks comparisons with ADM's stored
  mu_s / sigma_s.

The network is torch-fidelity's `FeatureExtractorInceptionV3` module (architecture patched to
match TF: count_include_pad=False pools, max-pool in Mixed_7c, BN eps 1e-3). We run its layers
ourselves after a bit-exact, faster TF1 bilinear resize to 299 and the graph's (x - 128) / 128
normalisation, which is what its own forward does; tests check that the outputs agree.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tfi
from torch import nn

from genzoo.metrics.resize import resize_bilinear_tf1
from genzoo.metrics.weights import (
    check_state_dict,
    file_sha256,
    load_state_dict,
    resolve_weights,
)

INCEPTION_URL = tfi.URL_INCEPTION_V3
INCEPTION_SHA256_PREFIX = "6726825d"  # in the official file name (torch hub convention)
INCEPTION_ENV = "GENZOO_INCEPTION_WEIGHTS"
INCEPTION_SIZE = 299
SPATIAL_CHANNELS = 7  # ADM keeps mixed_6/conv[..., :7]
FEATURE_DIMS = {"pool3": 2048, "logits": 1008, "spatial": 17 * 17 * SPATIAL_CHANNELS}

# Layers of torch-fidelity's network in forward order, up to the 8x8x2048 map before pool_3.
TRUNK = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "MaxPool_1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "MaxPool_2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)


class _InceptionSkeleton(nn.Module):
    """torch-fidelity's layers without any weights loaded: the expected state-dict layout."""

    def __init__(self):
        super().__init__()
        conv = tfi.BasicConv2d
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = tfi.InceptionA(192, pool_features=32)
        self.Mixed_5c = tfi.InceptionA(256, pool_features=64)
        self.Mixed_5d = tfi.InceptionA(288, pool_features=64)
        self.Mixed_6a = tfi.InceptionB(288)
        self.Mixed_6b = tfi.InceptionC(768, channels_7x7=128)
        self.Mixed_6c = tfi.InceptionC(768, channels_7x7=160)
        self.Mixed_6d = tfi.InceptionC(768, channels_7x7=160)
        self.Mixed_6e = tfi.InceptionC(768, channels_7x7=192)
        self.Mixed_7a = tfi.InceptionD(768)
        self.Mixed_7b = tfi.InceptionE_1(1280)
        self.Mixed_7c = tfi.InceptionE_2(2048)
        self.fc = nn.Linear(2048, 1008)


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in torch-fidelity's layout, for offline tests and benchmarks.

    He-normal convolutions and identity batch norms (gamma 1, beta 0, mean 0, var 1) keep the
    activations' scale through the depth; the random 1008 x 2048 classifier (with bias) is
    scaled so that logits differ enough between images for the Inception Score to leave 1.
    """
    gen = torch.Generator().manual_seed(seed)
    state = _InceptionSkeleton().state_dict()
    for key, value in state.items():
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            value.copy_(torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif key.endswith(("bn.weight", "bn.running_var")):
            value.fill_(1.0)
        elif key.endswith(("bn.bias", "bn.running_mean")):
            value.zero_()
        elif key.startswith("fc."):
            value.copy_(torch.randn(value.shape, generator=gen) * 50 * 2048**-0.5)
    return state


def save_random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    torch.save(random_inception_state_dict(seed), path)
    return Path(path)


def resolve_inception_weights(weights: str | Path | None, allow_download: bool = True) -> Path:
    return resolve_weights(
        weights,
        env_var=INCEPTION_ENV,
        url=INCEPTION_URL,
        what="Inception-v3 (TF-2015, torch-fidelity)",
        option="--inception-weights",
        allow_download=allow_download,
    )


class InceptionFeatures(nn.Module):
    """uint8 NCHW images (any size) -> {"pool3", "logits", "spatial"} in one pass."""

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        allow_download: bool = True,
    ):
        super().__init__()
        path = resolve_inception_weights(weights, allow_download)
        state = load_state_dict(path, "Inception-v3 (TF-2015)")
        check_state_dict(state, _InceptionSkeleton().state_dict(), path, "Inception-v3 (TF-2015)")
        self.weights_path = path
        self.weights_sha256 = file_sha256(path)
        self.official_weights = self.weights_sha256.startswith(INCEPTION_SHA256_PREFIX)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Inception runs in float32 or float64, not {dtype}")
        self.dtype = dtype
        self.net = tfi.FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(path),
        )
        # Cast ourselves: torch-fidelity 0.4.0 maps its "float64" option to float32.
        self.net.to(dtype)
        self._spatial: torch.Tensor | None = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._capture_spatial)
        # Channels-last convolutions are markedly faster on CPU (oneDNN) and GPU (cuDNN).
        self.net.to(memory_format=torch.channels_last)

    def _capture_spatial(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._spatial = output

    def describe(self) -> dict:
        return {
            "name": "inception-v3-compat (TF-2015 graph, torch-fidelity port)",
            "weights": str(self.weights_path),
            "weights_sha256": self.weights_sha256,
            "official_weights": self.official_weights,
            "input_resize": "TF1 bilinear (align_corners=False, no antialias) to 299x299",
            "normalisation": "(x - 128) / 128",
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        device = self.net.fc.weight.device
        x = images.to(device=device, dtype=self.dtype)
        x = resize_bilinear_tf1(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        x = (x - 128) / 128  # the graph's normalisation
        x = x.contiguous(memory_format=torch.channels_last)
        for name in TRUNK:
            x = getattr(self.net, name)(x)
        pool3 = torch.flatten(self.net.AvgPool(x), 1)
        logits = pool3 @ self.net.fc.weight.T  # no bias: ADM and improved-gan IS
        spatial = self._spatial[:, :SPATIAL_CHANNELS]  # [N, 7, 17, 17]
        spatial = spatial.permute(0, 2, 3, 1).reshape(len(spatial), -1)  # (h, w, c) order
        self._spatial = None
        return {"pool3": pool3, "logits": logits, "spatial": spatial}
