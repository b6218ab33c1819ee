"""`folder:PATH`: ImageNet layout, ImageFolder order, ADM centre crop, and bad inputs."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS as TORCHVISION_EXTENSIONS

from genzoo.data import build_dataset
from genzoo.data.folder import IMG_EXTENSIONS
from genzoo.errors import GenzooError


def _save(path, width, height, mode="RGB", seed=0, **options):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, **options)


@pytest.fixture
def imagenet_like(tmp_path):
    root = tmp_path / "train"
    _save(root / "n02_dog" / "b.png", 37, 53, seed=1)
    _save(root / "n02_dog" / "a.JPEG", 120, 80, seed=2, format="JPEG")
    _save(root / "n02_dog" / "nested" / "c.bmp", 64, 64, seed=3)
    _save(root / "n01_cat" / "z.jpg", 301, 199, seed=4)
    _save(root / "n01_cat" / "grey.png", 50, 70, mode="L", seed=5)
    _save(root / "n03_bird" / "rgba.png", 33, 33, mode="RGBA", seed=6)
    (root / "n03_bird" / "notes.txt").write_text("not an image")
    return root


def test_extensions_are_imagefolders():
    assert set(IMG_EXTENSIONS) == set(TORCHVISION_EXTENSIONS)


def test_order_and_labels_follow_imagefolder(imagenet_like):
    data = build_dataset(f"folder:{imagenet_like}", 32)
    reference = ImageFolder(str(imagenet_like))
    assert data.class_names == reference.classes == ["n01_cat", "n02_dog", "n03_bird"]
    assert data.num_classes == 3
    assert data.paths == [path for path, _ in reference.samples]
    assert data.labels.tolist() == [label for _, label in reference.samples]


def test_items_are_adm_centre_crops(imagenet_like):
    data = build_dataset(f"folder:{imagenet_like}", 32)
    for i, path in enumerate(data.paths):
        image, label = data.get(i)
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert label == data.labels[i]
        # Independent recipe: RGB, BOX-halve while short side >= 64, bicubic to short side 32.
        oracle = Image.open(path).convert("RGB")
        while min(oracle.size) >= 64:
            oracle = oracle.resize((oracle.width // 2, oracle.height // 2), Image.BOX)
        short = min(oracle.size)
        oracle = oracle.resize(
            (round(oracle.width * 32 / short), round(oracle.height * 32 / short)), Image.BICUBIC
        )
        top, left = (oracle.height - 32) // 2, (oracle.width - 32) // 2
        oracle = np.asarray(oracle.crop((left, top, left + 32, top + 32)))
        assert np.array_equal(image.permute(1, 2, 0).numpy(), oracle), path
        assert torch.equal(data.get(i, flip=True)[0], image.flip(-1))


def test_layout_errors(tmp_path):
    with pytest.raises(GenzooError, match="no such directory"):
        build_dataset(f"folder:{tmp_path / 'missing'}", 32)

    flat = tmp_path / "flat"
    _save(flat / "a.png", 8, 8)
    with pytest.raises(GenzooError, match=r"no class sub-folders.*1 image.*ImageNet layout"):
        build_dataset(f"folder:{flat}", 32)

    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "dog").mkdir()
    (empty / "dog" / "readme.txt").write_text("x")
    with pytest.raises(GenzooError, match=r"2 class folder\(s\) but no images"):
        build_dataset(f"folder:{empty}", 32)

    _save(empty / "dog" / "a.png", 8, 8)
    with pytest.raises(GenzooError, match=r"class folder\(s\) with no images.*cat"):
        build_dataset(f"folder:{empty}", 32)


@pytest.fixture
def with_bad_files(imagenet_like):
    garbage = imagenet_like / "n01_cat" / "broken.jpg"
    garbage.write_bytes(b"this is not a JPEG file at all")
    truncated = imagenet_like / "n02_dog" / "truncated.jpg"
    _save(truncated, 90, 90, seed=7, format="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:400])
    return imagenet_like, [str(garbage), str(truncated)]


def test_unreadable_image_names_the_file_and_suggests_skip_bad(with_bad_files):
    root, bad = with_bad_files
    data = build_dataset(f"folder:{root}", 32)
    assert len(data) == 8
    for path in bad:
        index = data.paths.index(path)
        with pytest.raises(GenzooError, match="--skip-bad") as error:
            data.get(index)
        assert path in str(error.value)


def test_skip_bad_leaves_unreadable_images_out(with_bad_files):
    root, bad = with_bad_files
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        data = build_dataset(f"folder:{root}", 32, skip_bad=True)
    assert sorted(data.skipped) == sorted(bad)
    assert len(data) == 6 and not set(bad) & set(data.paths)
    assert data.num_classes == 3
    for i in range(len(data)):
        assert data.get(i)[0].shape == (3, 32, 32)
