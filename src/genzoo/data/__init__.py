"""Datasets of (image, label) pairs, built from a spec string with `build_dataset`.

Specs:
* "shapes": procedural coloured shapes, 10 classes (no files; the embedded default).
* "shapes:centred": the same shapes upright, centred and of one size (the CPU demo's data).
* "digits": scikit-learn's handwritten digits, 10 classes (bundled, no download).
* "folder:PATH": an ImageNet-layout folder, ADM centre-cropped.
* "latents:DIR": a latent cache written by `genzoo encode` (`genzoo.data.latents`).
* "tokens:DIR": the token ids of a discrete tokenizer, cached the same way.

Every dataset follows `genzoo.data.base.ImageDataset`: uint8 [3, res, res] images (float latents
for a cache), `.num_classes`, `.class_names`, `.labels`, and `get(i, flip)`.
"""

from __future__ import annotations

from genzoo.data.base import ImageDataset
from genzoo.errors import GenzooError

KNOWN_SPECS = ("shapes", "shapes:centred", "digits", "folder:PATH", "latents:DIR", "tokens:DIR")

__all__ = ["KNOWN_SPECS", "ImageDataset", "build_dataset"]


def build_dataset(
    spec: str, res: int, *, train: bool = True, seed: int = 0, skip_bad: bool = False
) -> ImageDataset:
    """The dataset named by `spec` at resolution `res`.

    `train` picks the training or held-out stream of the built-in datasets and `seed` the
    procedural stream of `shapes`; a folder or a latent cache is fixed by its path. `skip_bad`
    leaves unreadable files of a folder out instead of stopping.
    """
    kind, sep, argument = spec.partition(":")
    if sep and not argument:
        raise GenzooError(f"data spec {spec!r} needs a path after ':', e.g. {kind}:/data/train")
    if kind == "shapes":
        from genzoo.data.shapes import ShapesDataset

        return ShapesDataset(res, train=train, seed=seed, pose=argument or "random")
    if kind == "digits" and not sep:
        from genzoo.data.digits import DigitsDataset

        return DigitsDataset(res, train=train, seed=seed)
    if kind == "folder" and sep:
        from genzoo.data.folder import FolderDataset

        return FolderDataset(argument, res, skip_bad=skip_bad)
    if kind in ("latents", "tokens") and sep:
        from genzoo.data.latents import LatentDataset

        return LatentDataset(argument, res)
    raise GenzooError(f"unknown data spec {spec!r}; known data specs: {', '.join(KNOWN_SPECS)}")
