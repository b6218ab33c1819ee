"""Reconstruction FID (rFID) of a tokenizer: the Fréchet distance between the features of real
images and of their reconstructions decode(encode(x)), converted to uint8 as samples are
(clamp(127.5·x + 128, 0, 255), truncated). Both sets stream through the same feature extractor
in batches; only their float64 statistics are kept.

    from genzoo.metrics.inception import InceptionFeatures
    rfid = reconstruction_fid(tokenizer, images_uint8_nhwc, features=InceptionFeatures(...))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from genzoo.data.transforms import to_float, to_uint8
from genzoo.errors import GenzooError
from genzoo.metrics.fid import frechet_distance_stats
from genzoo.metrics.statistics import StreamingStats

Images = np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor]


def _batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 NHWC batches of at most batch_size images, from an array or an iterable of them."""
    chunks = [images] if isinstance(images, np.ndarray | torch.Tensor) else images
    for chunk in chunks:
        chunk = torch.as_tensor(chunk)
        if chunk.dtype != torch.uint8 or chunk.ndim != 4 or chunk.shape[-1] != 3:
            raise GenzooError(
                f"reconstruction FID: images must be uint8 NHWC (N, H, W, 3), got "
                f"{chunk.dtype} of shape {tuple(chunk.shape)}"
            )
        for start in range(0, len(chunk), batch_size):
            yield chunk[start : start + batch_size]


def reconstruct(tokenizer_or_model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) for a tokenizer, or the reconstruction of a VQModel's forward."""
    module = tokenizer_or_model
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            if hasattr(module, "decode_ids"):  # a VQModel
                return module.decode(module.encode(x).latents)
            return module.decode(module.encode(x))
    finally:
        module.train(was_training)


def _features(extract: Callable[[torch.Tensor], Any], images: torch.Tensor, key: str):
    out = extract(images)
    if isinstance(out, dict):
        if key not in out:
            raise GenzooError(
                f"reconstruction FID: the feature extractor returned {sorted(out)}, not {key!r}; "
                "pass feature_key=..."
            )
        out = out[key]
    return torch.as_tensor(out).reshape(len(images), -1)


def reconstruction_fid(
    tokenizer_or_model: nn.Module,
    images: Images,
    *,
    features: Callable[[torch.Tensor], Any],
    feature_key: str = "pool3",
    batch_size: int = 50,
    device: str | torch.device | None = None,
    method: str = "eigh",
) -> float:
    """rFID of `tokenizer_or_model` on uint8 NHWC `images` (an array, or batches of them).

    `features` maps uint8 NCHW images to features (N, d), or to a dict holding them under
    `feature_key` (as genzoo's InceptionFeatures does: "pool3" gives the usual rFID).
    """
    if device is None:
        first = next(tokenizer_or_model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    real, recon = StreamingStats("real images"), StreamingStats("reconstructions")
    for batch in _batches(images, batch_size):
        nchw = batch.permute(0, 3, 1, 2).contiguous()
        x_hat = reconstruct(tokenizer_or_model, to_float(nchw).to(device))
        with torch.no_grad():
            real.update(_features(features, nchw, feature_key))
            recon.update(_features(features, to_uint8(x_hat).cpu(), feature_key))
    return frechet_distance_stats(real.result(), recon.result(), method)
