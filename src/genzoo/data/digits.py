"""`digits`: scikit-learn's bundled handwritten digits, upsampled to RGB images.

The source is `sklearn.datasets.load_digits()`: 1,797 grey 8x8 images with ink values 0..16 and
labels 0..9 (bundled with scikit-learn, so nothing is downloaded). Each image is mapped to uint8
as round(v * 255 / 16) (white ink on black), upsampled to the resolution with PIL BICUBIC (values
clipped to 0..255 by PIL) and replicated to three channels.

The split is fixed, whatever the seed: a permutation drawn once from a generator seeded with 0
puts the first 80% (1,438 images) in train and the remaining 359 in held-out. The seed has no
effect on this dataset; it is accepted so every dataset builds from the same arguments.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genzoo.data.base import ImageDataset
from genzoo.errors import GenzooError

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8


def digits_split(count: int, train: bool) -> np.ndarray:
    """Indices into the `count` source images that form the train (or held-out) split, in order."""
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    cut = int(round(TRAIN_FRACTION * count))
    return order[:cut] if train else order[cut:]


class DigitsDataset(ImageDataset):
    """scikit-learn digits at `res` x `res`; see the module docstring."""

    def __init__(self, res: int, *, train: bool = True, seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        if res < 8:
            raise GenzooError(f"digits: resolution {res} is below the source's 8 px; use >= 8")
        source = load_digits()
        rows = digits_split(len(source.target), train)
        self.spec = "digits"
        self.res = res
        self.train = train
        self.seed = seed
        self.num_classes = 10
        self.class_names = [str(d) for d in range(10)]
        self.labels = source.target[rows].astype(np.int64)
        # Only the 8x8 sources are kept; upsampling happens per item.
        self._small = np.round(source.images[rows] * (255.0 / 16.0)).astype(np.uint8)

    def _item(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        small = Image.fromarray(self._small[index], mode="L")
        grey = np.array(small.resize((self.res, self.res), resample=Image.BICUBIC))
        if flip:
            grey = np.ascontiguousarray(grey[:, ::-1])
        image = torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1)
        return image.contiguous(), int(self.labels[index])
