"""A loaded generator: backbone + family + tokenizer, sampling labels into uint8 images.

pipe = genzoo.load("runs/dit-s2")            # a genzoo run (EMA weights of its newest checkpoint)
images = pipe.sample([0, 1, 2], sampler="heun", steps=50, cfg=1.5, seed=0)  # uint8 NHWC

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
from genzoo.files import atomic_write
from genzoo.train.loader import seed_for

DEFAULT_SAMPLER = {"diffusion": ("ddpm", 250), "flow": ("heun", 50)}


def sample_noise(shape: Sequence[int], seed: int, indices: Sequence[int]) -> torch.Tensor:
    """Initial noise of samples `indices`: sample i's noise depends on (seed, i) alone."""
    return torch.stack(
        [
            torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed_for(seed, i)))
            for i in indices
        ]
    )


def sample_generators(seed: int, indices: Sequence[int], device) -> list[torch.Generator]:
    """Per-sample generators for the solver's own draws (SDE / ancestral steps)."""
    return [torch.Generator(device).manual_seed(seed_for(seed, i, 0x5DE)) for i in indices]


class Pipeline:
    def __init__(
        self,
        model: nn.Module,
        family,
        tokenizer: nn.Module | None,
        cfg: RunConfig,
        device: torch.device | str = "cpu",
        class_names: list[str] | None = None,
        cfg_channels: int | None = None,
    ):
        self.model = model.eval()
        self.family = family
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.class_names = class_names
        self.cfg_channels = cfg_channels  # 3 for official DiT/SiT checkpoints

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    def latent_shape(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return (m.in_channels, m.input_size, m.input_size)

    def _check_labels(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y, dtype=torch.long, device=self.device).reshape(-1)
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise GenzooError(f"labels must lie in [0, {self.num_classes - 1}]; got {y.tolist()}")
        return y

    @torch.no_grad()
    def sample_latents(
        self,
        y,
        *,
        noise: torch.Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        cfg: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        cfg_channels: int | None = None,
        generator=None,
        seed: int = 0,
        progress: bool = False,
        **options,
    ) -> torch.Tensor:
        """Final latents (before the tokenizer decodes them) for labels `y`.

        `y` holds the labels of the real samples only; with `cfg > 1` the doubled batch with the
        null label is built here. `noise` may be given with N rows, or with 2N rows as the
        official DiT/SiT scripts build it (their second half is ignored, as the official
        `forward_with_cfg` ignores it). `generator` is a torch.Generator, a list of one
        generator per sample, or None: then the solver draws from the global RNG the way the
        official loops do, so seeding the global RNG reproduces the official samples.
        """
        y = self._check_labels(y)
        n = len(y)
        if noise is None:
            noise = sample_noise(self.latent_shape(), seed, range(n))
        noise = noise.to(self.device, torch.float32)
        if noise.shape[0] == 2 * n and cfg > 1:
            noise = noise[:n]
        if noise.shape[0] != n:
            raise GenzooError(f"noise has {noise.shape[0]} rows for {n} labels (expected {n})")
        fam = self.cfg.family
        default_sampler, default_steps = DEFAULT_SAMPLER[fam]
        return self.family.sample(
            self.model,
            y,
            noise=noise,
            sampler=sampler or default_sampler,
            steps=steps or default_steps,
            cfg=cfg,
            cfg_interval=cfg_interval,
            cfg_channels=cfg_channels if cfg_channels is not None else self.cfg_channels,
            null_label=self.num_classes,
            generator=generator,
            progress=progress,
            **options,
        )

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents → uint8 NHWC images (DiT's rounding: clamp(127.5·x + 128) then truncate)."""
        from genzoo.data.transforms import to_uint8

        if self.tokenizer is None:
            raise GenzooError("this pipeline has no tokenizer to decode with; pass vae=PATH")
        x = self.tokenizer.decode(latents.to(self.device))
        return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()

    def sample(
        self,
        labels,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        cfg: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        batch_size: int = 64,
        progress: bool = False,
        **options,
    ) -> np.ndarray:
        """uint8 NHWC images for `labels`. Sample i uses noise from (seed, indices[i]) only, so the
        result does not depend on the batch size or on how the work is split over processes."""
        y = self._check_labels(labels)
        idx = list(range(len(y))) if indices is None else list(indices)
        out = []
        for s in range(0, len(y), batch_size):
            sl = idx[s : s + batch_size]
            z = self.sample_latents(
                y[s : s + batch_size],
                noise=sample_noise(self.latent_shape(), seed, sl),
                sampler=sampler,
                steps=steps,
                cfg=cfg,
                cfg_interval=cfg_interval,
                generator=sample_generators(seed, sl, self.device),
                progress=progress,
                **options,
            )
            out.append(self.decode(z))
        h = self.cfg.model.input_size * (self.tokenizer.stride if self.tokenizer else 1)
        return np.concatenate(out) if out else np.zeros((0, h, h, 3), np.uint8)

    def save_grid(
        self,
        path: str | Path,
        *,
        classes: Sequence[int] | None = None,
        per_class: int = 8,
        cfg: float = 1.0,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
    ) -> Path:
        """A PNG with one row per class (the first 10 classes unless `classes` is given)."""
        classes = list(range(min(self.num_classes, 10))) if classes is None else list(classes)
        labels = np.repeat(classes, per_class)
        images = self.sample(labels, sampler=sampler, steps=steps, cfg=cfg, seed=seed)
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
    from genzoo.tokenizers import build_tokenizer

    tokenizer = build_tokenizer(cfg.tokenizer.spec, scale=cfg.tokenizer.scale)
    names_file = run_dir / CLASSES_FILE
    names = json.loads(names_file.read_text()) if names_file.is_file() else None
    return Pipeline(model.to(dev), build_family(cfg), tokenizer.to(dev), cfg, dev, names)
