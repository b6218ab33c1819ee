"""Image resizing exactly as the reference protocols do it.

* `resize_bilinear_tf1`: TensorFlow 1 `ResizeBilinear` with align_corners=False, the resize inside
  the 2015 Inception graph (ADM, TTUR, torch-fidelity). Source coordinate dst * (in / out), no
  half-pixel offset and no antialiasing. The result is bit-identical to torch-fidelity's
  `interpolate_bilinear_2d_like_tensorflow1x` (same element-wise operations in the same order),
  but interpolates along the width once per input row instead of once per output row, which
  makes it several times faster for upsampling.
* `resize_pil_bicubic`: PIL BICUBIC on uint8 images (antialiased), the DINOv2 recipe of dgm-eval
  and EDM2's "pil" mode, and genzoo's optional sample-resize policy.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _tf1_axis(
    size_in: int, size_out: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower/upper source indices and fractional weights along one axis."""
    # The scale is rounded to float32 first, exactly like the reference port, so that float64
    # runs also agree bit for bit.
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    src = torch.arange(size_out, dtype=dtype, device=device) * scale.to(device)
    lo = src.long()
    hi = (lo + 1).clamp_max(size_in - 1)
    return lo, hi, src - lo.to(src.dtype)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float NCHW `x` to `size` = (height, width) like TF1 bilinear (align_corners=False)."""
    if x.ndim != 4 or not torch.is_floating_point(x):
        raise ValueError(f"expected a float NCHW tensor, got {x.dtype} {tuple(x.shape)}")
    out_h, out_w = size
    y_lo, y_hi, dy = _tf1_axis(x.shape[2], out_h, x.dtype, x.device)
    x_lo, x_hi, dx = _tf1_axis(x.shape[3], out_w, x.dtype, x.device)
    left, right = x.index_select(3, x_lo), x.index_select(3, x_hi)
    rows = left + (right - left) * dx.view(1, 1, 1, out_w)  # [N, C, H_in, W_out]
    top, bottom = rows.index_select(2, y_lo), rows.index_select(2, y_hi)
    return top + (bottom - top) * dy.view(1, 1, out_h, 1)


def resize_pil_bicubic(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 NHWC images to `size` = (height, width) with PIL BICUBIC, one by one."""
    height, width = size
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((len(images), height, width, images.shape[3]), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image)
        out[i] = np.asarray(pil.resize((width, height), resample=Image.BICUBIC))
    return out
