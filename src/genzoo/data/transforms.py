"""Image conversions at the data boundary.

* `center_crop_arr`: the ADM / DiT preprocessing of a PIL image to a square of a given side.
* `to_float` / `to_uint8`: uint8 images <-> float images in [-1, 1] (the DiT conventions).
* `to_nhwc` / `to_nchw`: layout changes between files (NHWC) and networks (NCHW).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def center_crop_arr(pil_image: Image.Image, size: int) -> np.ndarray:
    """ADM centre crop: returns a (size, size, 3) uint8 RGB array.

    1. While the short side is at least 2 * size, halve both sides (integer division) with BOX.
    2. Resize with BICUBIC so that the short side equals `size`; each side becomes
       round(side * size / short).
    3. Crop size x size at offset ((H - size) // 2, (W - size) // 2).
    """
    image = pil_image if pil_image.mode == "RGB" else pil_image.convert("RGB")
    # BOX halving first keeps large downscales alias-free before the final bicubic step.
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    ratio = size / min(image.size)
    image = image.resize(
        (round(image.width * ratio), round(image.height * ratio)), resample=Image.BICUBIC
    )
    pixels = np.asarray(image)
    top = (pixels.shape[0] - size) // 2
    left = (pixels.shape[1] - size) // 2
    return np.array(pixels[top : top + size, left : left + size])  # a writable copy


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any layout) -> float32 in [-1, 1]: x / 127.5 - 1.

    The same values as torchvision's ToTensor followed by Normalize(0.5, 0.5).
    """
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8: clamp(127.5 x + 128, 0, 255), then truncated.

    Truncation (not rounding) is what the official DiT / SiT sampling scripts do, so FID numbers
    computed from our samples match theirs.
    """
    return (127.5 * images.to(torch.float32) + 128.0).clamp(0.0, 255.0).to(torch.uint8)


def to_nhwc(images: torch.Tensor) -> torch.Tensor:
    """NCHW -> NHWC (contiguous), the layout of image files and ADM npz batches."""
    if images.ndim != 4:
        raise ValueError(f"expected a 4-D NCHW tensor, got shape {tuple(images.shape)}")
    return images.permute(0, 2, 3, 1).contiguous()


def to_nchw(images: torch.Tensor) -> torch.Tensor:
    """NHWC -> NCHW (contiguous), the layout networks take."""
    if images.ndim != 4:
        raise ValueError(f"expected a 4-D NHWC tensor, got shape {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).contiguous()
