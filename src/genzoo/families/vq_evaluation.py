"""What `--eval-every` measures for a tokenizer run (the `vqgan` family): reconstruction FID on
held-out images and the codebook usage there.

The images are the first `train.eval_num` of the held-out split of the run's data
(`build_dataset(spec, res, train=False)`: another stream of the procedural datasets; a folder has
no split and is used as it is). rFID compares the Inception pool features of those images with
those of their reconstructions by the EMA model (`genzoo.tokenizers.rfid`); the Inception weights
are found as `genzoo eval` finds them ($GENZOO_INCEPTION_WEIGHTS, the torch hub cache, or a
download). Usage is the fraction of the codebook that encoding the split selects at least once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from genzoo.errors import GenzooError


def code_ids(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every code id the model picks for images x, flattened (a VQ's grid, or every scale)."""
    encoded = model.encode(x)
    ids = getattr(encoded, "ids", encoded)  # a VQModel returns its quantized tuple
    if isinstance(ids, torch.Tensor):
        return ids.flatten()
    return torch.cat([t.flatten() for t in ids])


def codebook_size(model: nn.Module) -> int:
    size = getattr(model, "vocab_size", None) or getattr(model.cfg, "codebook_size", None)
    if size is None:
        raise GenzooError(f"{type(model).__name__} does not say its codebook size")
    return int(size)


def held_out_images(run_cfg: Any, count: int, batch_size: int = 50) -> Iterator[np.ndarray]:
    """uint8 NHWC batches of the first `count` held-out images of the run's data."""
    from genzoo.data import build_dataset

    data = run_cfg.data
    dataset = build_dataset(data.spec, data.res, train=False, seed=data.seed)
    if getattr(dataset, "is_latent", False):
        raise GenzooError(
            f"--eval-every measures reconstructions of images; --data {data.spec} holds latents"
        )
    count = min(int(count), len(dataset))
    if count < 2:
        raise GenzooError(f"--eval-num {count}: rFID needs at least 2 held-out images")
    for start in range(0, count, batch_size):
        chunk = [dataset.get(i)[0] for i in range(start, min(start + batch_size, count))]
        yield torch.stack(chunk).permute(0, 2, 3, 1).numpy()


def held_out_reconstruction_metrics(pipe: Any, train_cfg: Any) -> dict[str, float]:
    """{"eval/rfid", "eval/codebook_usage"} of the pipeline's (EMA) model."""
    from genzoo.data.transforms import to_float
    from genzoo.metrics.inception import InceptionFeatures
    from genzoo.tokenizers.rfid import reconstruction_fid

    model = pipe.model
    inception = InceptionFeatures().to(pipe.device)
    images = list(held_out_images(pipe.cfg, train_cfg.eval_num))
    rfid = reconstruction_fid(model, images, features=inception, device=pipe.device)
    hit = torch.zeros(codebook_size(model), dtype=torch.bool)
    with torch.no_grad():
        for batch in images:
            x = to_float(torch.from_numpy(batch).permute(0, 3, 1, 2)).to(pipe.device)
            hit[code_ids(model, x).cpu()] = True
    return {"eval/rfid": float(rfid), "eval/codebook_usage": float(hit.float().mean())}
