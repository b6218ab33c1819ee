"""`folder:PATH`: images in the ImageNet layout, preprocessed with the ADM centre crop.

Layout: PATH/<class name>/<image files> (files may sit in nested folders below a class). Class
indices follow the sorted class-folder names and items follow torchvision's `ImageFolder` order,
so index i here is `ImageFolder(PATH).samples[i]`. Each image is converted to RGB and cropped
with `center_crop_arr` to res x res.

The folder is what it is: `train` and `seed` do not change it (point a held-out run at another
folder). With `skip_bad=True`, every file is opened, verified and decoded once at construction
(JPEGs at 1/8 scale, which still reads every byte) and unreadable ones are left out and listed
in `.skipped`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from genzoo.data.base import ImageDataset
from genzoo.data.transforms import center_crop_arr
from genzoo.errors import GenzooError

# The extensions torchvision's ImageFolder accepts (compared case-insensitively).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

LAYOUT_HINT = "expected the ImageNet layout PATH/<class name>/<image>.JPEG, one folder per class"


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def find_images(root: Path) -> tuple[list[str], list[str], list[int]]:
    """(class names, image paths, labels) in ImageFolder order; GenzooError on a bad layout."""
    if not root.exists():
        raise GenzooError(f"folder:{root}: no such directory ({LAYOUT_HINT})")
    if not root.is_dir():
        raise GenzooError(f"folder:{root}: is a file, not a directory ({LAYOUT_HINT})")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        loose = sum(
            1 for entry in os.scandir(root) if entry.is_file() and is_image_file(entry.name)
        )
        found = f"; it holds {loose} image(s) directly, put them in class folders" if loose else ""
        raise GenzooError(f"folder:{root}: no class sub-folders{found} ({LAYOUT_HINT})")

    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        before = len(paths)
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(files):
                if is_image_file(file):
                    paths.append(os.path.join(folder, file))
                    labels.append(label)
        if len(paths) == before:
            empty.append(name)
    extensions = ", ".join(IMG_EXTENSIONS)
    if not paths:
        raise GenzooError(
            f"folder:{root}: {len(classes)} class folder(s) but no images with a known extension "
            f"({extensions}) inside them ({LAYOUT_HINT})"
        )
    if empty:
        shown = ", ".join(str(root / name) for name in empty[:5])
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise GenzooError(
            f"folder:{root}: class folder(s) with no images ({extensions}): {shown}{more}; "
            "add images or remove the empty folders"
        )
    return classes, paths, labels


def check_image(path: str) -> str | None:
    """None if `path` decodes as an image, else a short description of what is wrong."""
    try:
        with Image.open(path) as image:
            image.verify()  # headers and, for PNG, chunk checksums
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (1, 1))  # decode at 1/8 scale: fast, still reads every byte
            image.load()
    except Exception as exc:  # PIL raises many types for bad files
        return f"{type(exc).__name__}: {exc}"
    return None


class FolderDataset(ImageDataset):
    """An ImageNet-layout folder; see the module docstring."""

    def __init__(self, path: str | Path, res: int, *, skip_bad: bool = False) -> None:
        root = Path(path).expanduser()
        classes, paths, labels = find_images(root)
        self.spec = f"folder:{path}"
        self.root = root
        self.res = res
        self.skip_bad = skip_bad
        self.class_names = classes
        self.num_classes = len(classes)
        self.skipped: list[str] = []
        if skip_bad:
            paths, labels = self._drop_unreadable(paths, labels)
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def _drop_unreadable(self, paths: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
        kept_paths: list[str] = []
        kept_labels: list[int] = []
        reasons: list[str] = []
        scan = tqdm(
            zip(paths, labels),
            total=len(paths),
            desc=f"checking images in {self.root}",
            disable=len(paths) < 2000,
        )
        for path, label in scan:
            problem = check_image(path)
            if problem is None:
                kept_paths.append(path)
                kept_labels.append(label)
            else:
                self.skipped.append(path)
                reasons.append(f"{path} ({problem})")
        if not kept_paths:
            raise GenzooError(f"folder:{self.root}: none of the {len(paths)} images can be read")
        if self.skipped:
            shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
            warnings.warn(
                f"folder:{self.root}: skipped {len(self.skipped)} unreadable image(s) of "
                f"{len(paths)}: {shown}",
                stacklevel=3,
            )
        return kept_paths, kept_labels

    def load(self, index: int) -> np.ndarray:
        """Item `index` as a (res, res, 3) uint8 array."""
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return center_crop_arr(image, self.res)
        except Exception as exc:  # PIL raises many types for bad files
            if self.skip_bad:
                advice = "it passed the check at start-up, so it may have changed since; replace it"
            else:
                advice = "delete or replace it, or pass --skip-bad (data.skip_bad=true) to skip it"
            raise GenzooError(
                f"cannot read image {path} ({type(exc).__name__}: {exc}); {advice}"
            ) from exc

    def _item(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        pixels = self.load(index)
        if flip:
            pixels = pixels[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return image, int(self.labels[index])
