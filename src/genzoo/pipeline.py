"""A loaded generator: backbone + family + tokenizer, sampling labels into uint8 images.

pipe = genzoo.load("runs/dit-s2")            # a genzoo run (EMA weights of its newest checkpoint)
images = pipe.sample([0, 1, 2], sampler="heun", steps=50, cfg=1.5, seed=0)  # uint8 NHWC
images = genzoo.load("runs/llamagen").sample([0, 1], temperature=1.0, top_k=0, cfg=2.0)

pipe = genzoo.load_official("dit", "DiT-XL-2-256x256.pt", vae="sd-vae-ft-mse")
z = pipe.sample_latents(y, noise=z0, sampler="ddpm", steps=250, cfg=1.5)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.base import sample_noise
from genzoo.files import atomic_write

__all__ = ["Pipeline", "load", "write_grid"]


class Pipeline:
    """A backbone, its family and its tokenizer: labels in, uint8 images out.

    `default_options` are sampling options this pipeline applies unless the call overrides
    them (official DiT/SiT checkpoints guide 3 latent channels, as their scripts do).
    """

    def __init__(
        self,
        model: nn.Module,
        family,
        tokenizer: nn.Module | None,
        cfg: RunConfig,
        device: torch.device | str = "cpu",
        class_names: list[str] | None = None,
        default_options: dict | None = None,
        latent_shape: tuple[int, ...] | None = None,
    ):
        self.model = model.eval()
        self.family = family
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.class_names = class_names
        self.default_options = dict(default_options or {})
        self._latent_shape = latent_shape

    @property
    def num_classes(self) -> int:
        return getattr(self.cfg.model, "num_classes", 0)

    @property
    def image_size(self) -> int:
        return self.cfg.data.res

    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample before decoding: (C, h, w) latents or (h, w) token ids."""
        if self._latent_shape is None:
            if self.tokenizer is None:
                raise GenzooError("this pipeline has no tokenizer; pass its latent shape")
            self._latent_shape = tuple(self.tokenizer.latent_shape(self.image_size))
        return self._latent_shape

    def _check_labels(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y, dtype=torch.long, device=self.device).reshape(-1)
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise GenzooError(f"labels must lie in [0, {self.num_classes - 1}]; got {y.tolist()}")
        return y

    def options(self, **options) -> dict:
        """The family's sampling options for a call: names checked, CLI strings typed."""
        return self.family.check_options({**self.default_options, **options})

    @torch.no_grad()
    def sample_latents(
        self,
        y,
        *,
        noise: torch.Tensor | None = None,
        generator=None,
        seed: int = 0,
        progress: bool = False,
        **options,
    ) -> torch.Tensor:
        """Final latents (before the tokenizer decodes them) of a noise-driven family.

        `y` holds the labels of the real samples only; with `cfg > 1` the doubled batch with the
        null label is built here. `noise` may be given with N rows, or with 2N rows as the
        official DiT/SiT scripts build it (their second half is ignored, as the official
        `forward_with_cfg` ignores it). `generator` is a torch.Generator, a list of one
        generator per sample, or None: then the solver draws from the global RNG the way the
        official loops do, so seeding the global RNG reproduces the official samples.
        Options: sampler, steps, cfg, cfg_interval, cfg_channels and the solver's own.
        """
        if not hasattr(self.family, "sample_from_noise"):
            raise GenzooError(
                f"the {self.family.kind} family does not start from noise; use sample()"
            )
        y = self._check_labels(y)
        n = len(y)
        opts = self.options(**options)
        if noise is None:
            noise = sample_noise(self.latent_shape(), seed, range(n))
        noise = noise.to(self.device, torch.float32)
        if noise.shape[0] == 2 * n and float(opts.get("cfg", 1.0)) > 1:
            noise = noise[:n]
        if noise.shape[0] != n:
            raise GenzooError(f"noise has {noise.shape[0]} rows for {n} labels (expected {n})")
        return self.family.sample_from_noise(
            self.model, y, noise, generator=generator, null_label=self.num_classes,
            progress=progress, **opts,
        )  # fmt: skip

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents or ids → uint8 NHWC images (DiT's rounding: clamp(127.5·x + 128), truncate)."""
        from genzoo.data.transforms import to_uint8

        if self.tokenizer is None:
            raise GenzooError("this pipeline has no tokenizer to decode with; pass vae=PATH")
        if isinstance(latents, torch.Tensor):  # multi-scale tokenizers take a list of id maps
            latents = latents.to(self.device)
        x = self.tokenizer.decode(latents)
        return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def sample(
        self,
        labels,
        *,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        batch_size: int = 64,
        progress: bool = False,
        **options,
    ) -> np.ndarray:
        """uint8 NHWC images for `labels`, with the family's sampling `options` (e.g. sampler,
        steps, cfg for diffusion; temperature, top_k, top_p, cfg for autoregressive). Sample i
        depends on (seed, indices[i]) only, so the result does not depend on the batch size or
        on how the work is split over processes."""
        y = self._check_labels(labels)
        opts = self.options(**options)
        idx = list(range(len(y))) if indices is None else list(indices)
        out = []
        for s in range(0, len(y), batch_size):
            z = self.family.generate(
                self.model,
                y[s : s + batch_size],
                seed=seed,
                indices=idx[s : s + batch_size],
                latent_shape=self.latent_shape(),
                device=self.device,
                null_label=self.num_classes,
                progress=progress,
                **opts,
            )
            out.append(self.decode(z))
        h = self.image_size
        return np.concatenate(out) if out else np.zeros((0, h, h, 3), np.uint8)

    def save_grid(
        self,
        path: str | Path,
        *,
        classes: Sequence[int] | None = None,
        per_class: int = 8,
        seed: int = 0,
        **options,
    ) -> Path:
        """A PNG with one row per class (the first 10 classes unless `classes` is given)."""
        classes = list(range(min(self.num_classes, 10))) if classes is None else list(classes)
        labels = np.repeat(classes, per_class)
        images = self.sample(labels, seed=seed, **options)
        return write_grid(path, images, rows=len(classes))


def write_grid(path: str | Path, images: np.ndarray, rows: int, pad: int = 2) -> Path:
    """Tile uint8 NHWC images into a rows × cols PNG, written atomically."""
    from PIL import Image

    n, h, w, c = images.shape
    cols = -(-n // rows)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = images[k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"))


def load(run_dir: str | Path, *, device: str | None = None, weights: str = "ema") -> Pipeline:
    """A genzoo run directory → Pipeline on its newest checkpoint (`weights`: "ema" or "model")."""
    from genzoo.build import build_model
    from genzoo.families import build_family
    from genzoo.tokenizers import build_tokenizer
    from genzoo.train.checkpoint import latest_checkpoint, load_weights
    from genzoo.train.loop import CLASSES_FILE, CONFIG_FILE

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise GenzooError(f"{run_dir} is not a genzoo run directory (no {CONFIG_FILE})")
    cfg = RunConfig.load(run_dir / CONFIG_FILE)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise GenzooError(f"{run_dir} has no finished checkpoint yet; train it first")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(cfg)
    if weights not in ("ema", "model"):
        raise GenzooError(f"weights={weights!r}: choose 'ema' or 'model'")
    load_weights(model, ckpt.path / f"{weights}.safetensors")
    tokenizer = build_tokenizer(cfg.tokenizer)
    names_file = run_dir / CLASSES_FILE
    names = json.loads(names_file.read_text()) if names_file.is_file() else None
    tokenizer = tokenizer.to(dev)
    return Pipeline(model.to(dev), build_family(cfg, tokenizer), tokenizer, cfg, dev, names)
