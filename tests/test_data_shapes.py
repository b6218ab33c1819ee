"""The procedural `shapes` dataset and the `build_dataset` registry."""

import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from genzoo.data import build_dataset
from genzoo.data.shapes import ShapesDataset
from genzoo.errors import GenzooError


def test_default_lengths_classes_and_balance():
    train = build_dataset("shapes", 32)
    held_out = build_dataset("shapes", 32, train=False)
    assert len(train) == 10_000 and len(held_out) == 2_000
    assert train.num_classes == 10 and len(set(train.class_names)) == 10
    assert np.array_equal(np.bincount(train.labels), np.full(10, 1000))
    assert np.array_equal(np.bincount(held_out.labels), np.full(10, 200))


@pytest.mark.parametrize("res", [16, 32, 64])
def test_items_are_uint8_rgb_at_any_resolution(res):
    data = ShapesDataset(res, length=20)
    for i in (0, 7, 19):
        image, label = data[i]
        assert image.shape == (3, res, res) and image.dtype == torch.uint8
        assert label == i % 10 and isinstance(label, int)
        assert image.float().std() > 5  # not a blank image


def test_item_is_a_pure_function_of_seed_split_and_index():
    forward = ShapesDataset(32, length=30, seed=5)
    backward = ShapesDataset(32, length=30, seed=5)
    first = [forward.get(i)[0] for i in range(30)]
    last = [backward.get(i)[0] for i in reversed(range(30))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, last))

    # A longer dataset with the same seed starts with the same items.
    assert torch.equal(ShapesDataset(32, seed=5).get(12)[0], first[12])
    # Another seed, or the held-out split, gives other images.
    other_seed = ShapesDataset(32, length=30, seed=6)
    held_out = ShapesDataset(32, train=False, length=30, seed=5)
    for i in range(10):
        assert not torch.equal(other_seed.get(i)[0], first[i])
        assert not torch.equal(held_out.get(i)[0], first[i])


def test_flip_is_an_explicit_mirror_image():
    data = ShapesDataset(32, length=10)
    image, label = data.get(3)
    mirrored, mirrored_label = data.get(3, flip=True)
    assert torch.equal(mirrored, image.flip(-1)) and mirrored_label == label
    assert torch.equal(data[3, True][0], mirrored)
    assert torch.equal(data.get(3)[0], image)  # reading a flip changes nothing stored
    assert torch.equal(data.get(-1)[0], data.get(9)[0])
    with pytest.raises(IndexError):
        data.get(10)


def _fourier_features(data: ShapesDataset) -> np.ndarray:
    """Log magnitude spectrum of the contrast image: invariant to where the shape sits."""
    images = np.stack([data.get(i)[0].numpy() for i in range(len(data))]).astype(np.float32)
    grey = images.mean(axis=1) / 255.0
    contrast = np.abs(grey - np.median(grey.reshape(len(grey), -1), axis=1)[:, None, None])
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(contrast)), axes=(1, 2))
    centre = spectrum[:, 8:24, 8:24]  # the 16 x 16 lowest frequencies
    return np.log1p(centre).reshape(len(grey), -1)


def test_classes_are_told_apart_by_a_simple_classifier():
    train = ShapesDataset(32, length=1000, seed=0)
    test = ShapesDataset(32, train=False, length=300, seed=0)
    scaler = StandardScaler().fit(_fourier_features(train))
    classifier = LogisticRegression(max_iter=500, C=0.1)
    classifier.fit(scaler.transform(_fourier_features(train)), train.labels)
    predicted = classifier.predict(scaler.transform(_fourier_features(test)))
    accuracy = (predicted == test.labels).mean()
    per_class = [(predicted[test.labels == c] == c).mean() for c in range(10)]
    assert accuracy > 0.6, accuracy  # chance is 0.1
    assert min(per_class) > 0.3, per_class


def test_rendering_is_fast():
    data = ShapesDataset(32, length=1000, seed=1)
    began = time.perf_counter()
    for i in range(len(data)):
        data.get(i)
    assert time.perf_counter() - began < 10.0  # about 0.3 s on one core


def test_errors():
    with pytest.raises(GenzooError, match="too small"):
        build_dataset("shapes", 8)
    with pytest.raises(GenzooError, match="known data specs: shapes, shapes:centred, digits, fo"):
        build_dataset("imagenet", 32)
    with pytest.raises(GenzooError, match="unknown pose 'tilted'; choose one of random, centred"):
        build_dataset("shapes:tilted", 32)
    with pytest.raises(GenzooError, match="needs a path"):
        build_dataset("folder:", 32)


def _foreground(image: np.ndarray) -> np.ndarray:
    """Pixels far from the mean border colour: the shape (backgrounds are low-contrast)."""
    pixels = image.astype(np.float32) / 255
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.abs(pixels - border.mean(0)).sum(-1) > 0.4


def test_centred_variant_keeps_colours_and_fixes_the_pose():
    centred = build_dataset("shapes:centred", 32)
    posed = build_dataset("shapes", 32)
    assert centred.spec == "shapes:centred" and posed.spec == "shapes"
    masks = [_foreground(centred.render(i)) for i in range(0, 200, 10)]  # all circles
    for mask in masks[1:]:
        iou = (mask & masks[0]).sum() / (mask | masks[0]).sum()
        assert iou > 0.85, iou  # one silhouette, whatever the colours
    ys, xs = np.nonzero(masks[0])
    assert abs(ys.mean() - 15.5) < 0.75 and abs(xs.mean() - 15.5) < 0.75
    posed_masks = [_foreground(posed.render(i)) for i in range(0, 200, 10)]
    ious = [(m & posed_masks[0]).sum() / (m | posed_masks[0]).sum() for m in posed_masks[1:]]
    assert np.median(ious) < 0.6  # the default pose really varies
    # the same item index draws the same colours in both variants
    for i in (3, 14, 25):
        a, b = centred.render(i), posed.render(i)
        colour_a, colour_b = a[_foreground(a)].mean(0), b[_foreground(b)].mean(0)
        assert np.abs(colour_a - colour_b).max() < 12, (i, colour_a, colour_b)
