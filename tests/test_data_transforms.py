"""Image conversions: known values of to_float / to_uint8 and the ADM centre crop geometry."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from genzoo.data.transforms import center_crop_arr, to_float, to_nchw, to_nhwc, to_uint8


def test_to_float_known_values_and_torchvision_normalize():
    values = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8)
    expected = torch.tensor(
        [-1.0, 1 / 127.5 - 1, 127 / 127.5 - 1, 128 / 127.5 - 1, 254 / 127.5 - 1, 1]
    )
    assert to_float(values).dtype == torch.float32
    assert torch.allclose(to_float(values), expected, atol=1e-7)

    # ToTensor + Normalize(0.5, 0.5), the DiT training transform, on a random image.
    image = np.random.default_rng(0).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    oracle = TF.normalize(TF.to_tensor(image), [0.5] * 3, [0.5] * 3)
    ours = to_float(torch.from_numpy(image).permute(2, 0, 1))
    assert torch.allclose(ours, oracle, atol=1e-6)


def test_to_uint8_dit_convention_at_known_points():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 5.0, float(1 / 127.5)])
    # -1 -> 0.5 -> 0; 0 -> 128; 1 -> 255.5 -> clamp 255; out of range clamps; +1 step -> 129.
    assert to_uint8(x).tolist() == [0, 128, 255, 0, 255, 129]
    assert to_uint8(x).dtype == torch.uint8


def test_to_uint8_truncates_rather_than_rounds():
    k = torch.arange(0, 255, dtype=torch.float32)
    just_below_next = (k + 0.75 - 128.0) / 127.5  # 127.5 x + 128 = k + 0.75 -> k (rounding: k + 1)
    just_above = (k + 0.25 - 128.0) / 127.5
    assert torch.equal(to_uint8(just_below_next), k.to(torch.uint8))
    assert torch.equal(to_uint8(just_above), k.to(torch.uint8))


def test_to_uint8_matches_numpy_formula_and_inverts_to_float():
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1.3, 1.3, size=(2, 3, 8, 8)))
    x = x.to(torch.float32)
    oracle = np.clip(127.5 * x.numpy() + 128.0, 0, 255).astype(np.uint8)
    assert np.array_equal(to_uint8(x).numpy(), oracle)

    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_float(every)), every)


def test_layout_changes():
    x = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    nhwc = to_nhwc(x)
    assert nhwc.shape == (2, 4, 5, 3)
    assert nhwc[1, 2, 3, 0] == x[1, 0, 2, 3]
    assert torch.equal(to_nchw(nhwc), x)
    with pytest.raises(ValueError):
        to_nhwc(x[0])


def _gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


# (width, height, size, BOX halvings as sizes, bicubic size, (top, left)); worked out by hand.
CASES = [
    (300, 200, 64, [(150, 100)], (96, 64), (0, 16)),
    (101, 77, 32, [(50, 38)], (42, 32), (0, 5)),
    (77, 131, 32, [(38, 65)], (32, 55), (11, 0)),
    (520, 260, 64, [(260, 130), (130, 65)], (128, 64), (0, 32)),
    (20, 13, 32, [], (49, 32), (0, 8)),  # upsampling, round(20 * 32 / 13) = 49
]


@pytest.mark.parametrize(("width", "height", "size", "halvings", "bicubic", "offset"), CASES)
def test_center_crop_arr_against_hand_computed_geometry(
    width, height, size, halvings, bicubic, offset
):
    image = _gradient_image(width, height)
    oracle = image
    for step in halvings:
        oracle = oracle.resize(step, resample=Image.BOX)
    oracle = np.asarray(oracle.resize(bicubic, resample=Image.BICUBIC))
    top, left = offset
    oracle = oracle[top : top + size, left : left + size]

    out = center_crop_arr(image, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert np.array_equal(out, oracle)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_center_crop_arr_converts_to_rgb_first(mode):
    image = _gradient_image(45, 40, mode)
    out = center_crop_arr(image, 16)
    halved = image.convert("RGB").resize((22, 20), resample=Image.BOX)  # 40 >= 2 * 16
    oracle = np.asarray(halved.resize((18, 16), resample=Image.BICUBIC))[:, 1:17]
    assert out.shape == (16, 16, 3)
    assert np.array_equal(out, oracle)
