"""`digits`: scikit-learn's handwritten digits as RGB images."""

import numpy as np
import torch
from sklearn.datasets import load_digits

from genzoo.data import build_dataset


def _rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_split_is_disjoint_complete_and_keeps_labels():
    source = load_digits()
    expected = np.round(source.images * 255 / 16).astype(np.uint8)  # the documented mapping
    train = build_dataset("digits", 8)
    held_out = build_dataset("digits", 8, train=False)
    assert (len(train), len(held_out)) == (1438, 359)  # round(0.8 * 1797) = 1438
    assert train.num_classes == 10 and train.class_names == [str(d) for d in range(10)]

    # At 8 px nothing is resampled, so items are exactly the source images.
    label_of = {image.tobytes(): int(t) for image, t in zip(expected, source.target)}
    seen = []
    for data in (train, held_out):
        images = []
        for i in range(len(data)):
            image, label = data.get(i)
            assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
            assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
            key = image[0].numpy().tobytes()
            assert label_of[key] == label == data.labels[i]
            images.append(image[0].numpy())
        seen.append(_rows(np.stack(images)))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == _rows(expected)


def test_upsampled_items_shrink_back_to_their_source():
    small = build_dataset("digits", 8, train=False)
    large = build_dataset("digits", 32, train=False)
    sources = np.stack([small.get(i)[0][0].numpy() for i in range(len(small))]).astype(float)
    for i in range(0, len(large), 9):
        image, label = large.get(i)
        assert image.shape == (3, 32, 32) and label == small.labels[i]
        shrunk = image[0].numpy().astype(float).reshape(8, 4, 8, 4).mean(axis=(1, 3))
        distances = np.abs(sources - shrunk).mean(axis=(1, 2))
        assert distances.argmin() == i  # closest to its own source among all held-out digits
        assert distances[i] < 20


def test_deterministic_and_flips():
    a = build_dataset("digits", 16, seed=0)
    b = build_dataset("digits", 16, seed=9)  # the split does not depend on the seed
    for i in (0, 100, 1437):
        assert torch.equal(a.get(i)[0], b.get(i)[0])
        assert torch.equal(a.get(i, flip=True)[0], a.get(i)[0].flip(-1))
