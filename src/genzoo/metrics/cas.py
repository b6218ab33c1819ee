"""Classification Accuracy Score (CAS, Ravuri & Vinyals 2019).

Train a fresh classifier on the generated images and their labels only, then report top-1 / top-5
accuracy on real held-out images. A generator that ignores its labels, or covers few modes of a
class, scores low even when its samples look good one by one. The classifier is genzoo's small
CNN with the training recipe of `genzoo train-classifier`, so CAS is comparable across runs of the
same domain and resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genzoo.errors import GenzooError
from genzoo.metrics.classifier import (
    ClassifierConfig,
    dataset_tensors,
    fit_classifier,
    images_and_labels,
    predict,
    topk_accuracy,
)


def classification_accuracy_score(
    images: str | Path | np.ndarray | torch.Tensor,
    labels: np.ndarray | None,
    real_spec: str,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    seed: int = 0,
    data_seed: int = 0,
    device: str = "cpu",
    quiet: bool = True,
) -> dict:
    """CAS: top-1 / top-5 on real held-out images of a classifier trained on the samples."""
    x, y = images_and_labels(images, labels)
    if y is None:
        raise GenzooError(
            "CAS needs the class label of every sample (arr_1 in the npz, or labels=...)"
        )
    res = x.shape[2]
    if x.shape[3] != res:
        raise GenzooError(f"CAS: images must be square, got {x.shape[3]}x{res}")
    real, real_labels, names = dataset_tensors(real_spec, res, train=False, data_seed=data_seed)
    if int(y.max()) >= len(names):
        raise GenzooError(
            f"CAS: sample labels reach {int(y.max())} but {real_spec!r} has {len(names)} classes"
        )
    cfg = ClassifierConfig(num_classes=len(names), res=res, class_names=names)
    model = fit_classifier(
        x, y, cfg, steps=steps, batch_size=batch_size, seed=seed, device=device, quiet=quiet
    )
    _, logits = predict(model, real)
    return {
        "top1": topk_accuracy(logits, real_labels, 1),
        "top5": topk_accuracy(logits, real_labels, 5),
        "num_samples": len(x),
        "num_real": len(real),
        "reference": f"{real_spec} held-out split at {res}px",
        "classifier": f"{cfg.arch}, {steps} steps, batch {batch_size}, seed {seed}",
    }
