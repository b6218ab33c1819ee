"""The dataset contract shared by every data source.

A dataset is a map-style `torch.utils.data.Dataset` of `(image, label)` pairs where `image` is a
uint8 tensor [3, res, res] (or, for a latent cache, a float32 latent [C, h, w]) and `label` an
int in [0, num_classes).

Datasets never draw random numbers while reading: item i is a pure function of the dataset's
construction arguments and i. Horizontal flips are requested explicitly with `get(i, flip)` (or
`dataset[i, flip]`), so a training loop that draws flips from its own generator resumes exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Base class: subclasses set the attributes below and implement `_item`."""

    spec: str = ""  # the string that builds this dataset, e.g. "shapes" or "folder:/data/train"
    res: int = 0  # side of the square images (pixels)
    num_classes: int = 0
    class_names: list[str]
    labels: np.ndarray  # int64 [N]: the label of every item, in order
    is_latent: bool = False  # True for cached tokenizer latents

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: int, flip: bool = False) -> tuple[torch.Tensor, int]:
        """Item `index` (negative counts from the end), mirrored left-right when `flip` is true."""
        return self._item(self._check_index(int(index)), bool(flip))

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, int]:
        # `dataset[i, flip]` lets a sampler that yields (index, flip) pairs drive a DataLoader.
        index, flip = key if isinstance(key, tuple) else (key, False)
        return self.get(index, flip)

    def _item(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        """Item `index` in [0, len); subclasses implement this."""
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        return index % n

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spec={self.spec!r}, res={self.res}, items={len(self)}, "
            f"classes={self.num_classes})"
        )
