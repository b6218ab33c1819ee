"""`shapes`: a procedural, class-conditional RGB dataset rendered in memory.

Ten classes told apart by silhouette (circle, square, triangle, star, cross, ring, heart,
crescent, arrow, bars). Each image draws a random position, size, rotation, foreground colour and
a low-contrast background texture (gradient, smooth noise or stripes). The silhouette is drawn
at 4x (2x above 128 px) with PIL and BOX-downsampled, which anti-aliases its edges.

Item i has label i % 10 and is rendered from a random stream seeded by (seed, split, i) only, so
any item can be produced alone, in any order, by any worker. Train (split 0, 10,000 items by
default) and held-out (split 1, 2,000 items) streams come from different seeds.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from genzoo.data.base import ImageDataset
from genzoo.errors import GenzooError

SHAPE_NAMES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "heart",
    "crescent",
    "arrow",
    "bars",
)

TRAIN_LENGTH = 10_000
HELD_OUT_LENGTH = 2_000
MIN_RES = 16
POSES = ("random", "centred")
CENTRED_RADIUS = 0.36  # of the side, for pose "centred"
CACHE_BYTES = 256 * 2**20  # keep rendered images when they fit in this much memory

Points = list[tuple[float, float]]


# -- silhouettes in unit coordinates (x right, y down, extent about [-1, 1]) ----------------------


def _regular(count: int, radius: float, phase: float) -> Points:
    step = 2 * math.pi / count
    return [
        (radius * math.cos(phase + k * step), radius * math.sin(phase + k * step))
        for k in range(count)
    ]


def _star() -> Points:
    outer = _regular(5, 1.05, -math.pi / 2)
    inner = _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
    return [p for pair in zip(outer, inner) for p in pair]


def _cross(half_width: float = 0.3) -> Points:
    w = half_width
    return [
        (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
        (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
    ]  # fmt: skip


def _heart(count: int = 48) -> Points:
    points = []
    for k in range(count):
        t = 2 * math.pi * k / count
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x / 16.5, -(y + 2.5) / 16.5))  # lobes up, centred vertically
    return points


def _arrow() -> Points:
    return [(-1, -0.22), (0.1, -0.22), (0.1, -0.65), (1, 0), (0.1, 0.65), (0.1, 0.22), (-1, 0.22)]


def _bar(centre_y: float, half_height: float = 0.17) -> Points:
    top, bottom = centre_y - half_height, centre_y + half_height
    return [(-0.9, top), (0.9, top), (0.9, bottom), (-0.9, bottom)]


_TRIANGLE = [(x, y + 0.15) for x, y in _regular(3, 1.1, -math.pi / 2)]  # centre the bounding box
_SQUARE = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
_STAR, _CROSS, _HEART, _ARROW = _star(), _cross(), _heart(), _arrow()
_BARS = [_bar(-0.6), _bar(0.0), _bar(0.6)]


def _draw_silhouette(label: int, draw: ImageDraw.ImageDraw, place) -> None:
    """Draw class `label` in white (255) on black; `place(x, y)` maps unit to canvas coords."""

    def polygon(points: Points, fill: int = 255) -> None:
        draw.polygon([place(x, y) for x, y in points], fill=fill)

    def disk(x: float, y: float, radius: float, fill: int = 255) -> None:
        cx, cy = place(x, y)
        r = radius * place.scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)

    name = SHAPE_NAMES[label]
    if name == "circle":
        disk(0, 0, 0.9)
    elif name == "square":
        polygon(_SQUARE)
    elif name == "triangle":
        polygon(_TRIANGLE)
    elif name == "star":
        polygon(_STAR)
    elif name == "cross":
        polygon(_CROSS)
    elif name == "ring":
        disk(0, 0, 1.0)
        disk(0, 0, 0.55, fill=0)
    elif name == "heart":
        polygon(_HEART)
    elif name == "crescent":
        disk(0, 0, 0.95)
        disk(0.5, 0, 0.72, fill=0)  # the rotation in `place` turns the bite
    elif name == "arrow":
        polygon(_ARROW)
    else:  # bars
        for bar in _BARS:
            polygon(bar)


class _Placement:
    """Rotate by `angle`, scale by `scale`, translate to (cx, cy): unit -> canvas coordinates."""

    def __init__(self, cx: float, cy: float, scale: float, angle: float) -> None:
        self.cx, self.cy, self.scale = cx, cy, scale
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        return (
            self.cx + self.scale * (self.cos * x - self.sin * y),
            self.cy + self.scale * (self.sin * x + self.cos * y),
        )


# -- one image ------------------------------------------------------------------------------------


def _colour(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)


def _background(rng: np.random.Generator, res: int, light: bool) -> np.ndarray:
    """A (res, res, 3) float background: a muted colour plus a low-contrast texture."""
    value = rng.uniform(0.72, 0.9) if light else rng.uniform(0.1, 0.32)
    base = _colour(rng.uniform(), rng.uniform(0.0, 0.45), value)
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    u, v = coords[None, :], coords[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    along = u * math.cos(angle) + v * math.sin(angle)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient
        texture = rng.uniform(0.06, 0.14) * (along - along.mean())
    elif kind == 1:  # smooth noise: a coarse random grid, bilinearly upsampled
        grid = rng.standard_normal((4, 4)).astype(np.float32)
        smooth = np.asarray(
            Image.fromarray(grid, mode="F").resize((res, res), resample=Image.BILINEAR)
        )
        texture = rng.uniform(0.025, 0.05) * smooth
    else:  # stripes
        cycles = rng.uniform(2.5, 6.0)
        texture = rng.uniform(0.03, 0.06) * np.sin(2 * np.pi * cycles * along + rng.uniform(0, 6))
    return base[None, None, :] + texture[:, :, None]


def render_shape(
    label: int, res: int, rng: np.random.Generator, pose: str = "random"
) -> np.ndarray:
    """Render one (res, res, 3) uint8 image of class `label` from the random stream `rng`.

    pose "random" draws position, size and rotation; "centred" keeps the same colours and
    background but puts every shape upright, in the middle, at one size.
    """
    radius = rng.uniform(0.24, 0.38) * res
    cx, cy = rng.uniform(radius, res - radius, size=2)
    # Hearts stay near upright (upside down they read as another shape); the rest turn freely.
    angle = rng.uniform(-0.5, 0.5) if SHAPE_NAMES[label] == "heart" else rng.uniform(0, 2 * np.pi)
    if pose == "centred":  # drawn above anyway, so the colour draws below match "random"
        radius, cx, cy, angle = CENTRED_RADIUS * res, res / 2, res / 2, 0.0
    light = rng.uniform() < 0.3
    foreground = _colour(
        rng.uniform(),
        rng.uniform(0.55, 1.0),
        rng.uniform(0.12, 0.35) if light else rng.uniform(0.78, 1.0),
    )
    background = _background(rng, res, light)

    supersample = 4 if res <= 128 else 2
    canvas = Image.new("L", (res * supersample, res * supersample), 0)
    place = _Placement(cx * supersample, cy * supersample, radius * supersample, angle)
    _draw_silhouette(label, ImageDraw.Draw(canvas), place)
    coverage = np.asarray(canvas.resize((res, res), resample=Image.BOX), dtype=np.float32)
    coverage = coverage[:, :, None] / 255.0

    image = background * (1.0 - coverage) + foreground[None, None, :] * coverage
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# -- dataset -----------------------------------------------------------------------------------


class ShapesDataset(ImageDataset):
    """The procedural `shapes` dataset; see the module docstring."""

    def __init__(
        self,
        res: int,
        *,
        train: bool = True,
        seed: int = 0,
        length: int | None = None,
        pose: str = "random",
    ) -> None:
        if pose not in POSES:
            raise GenzooError(f"shapes: unknown pose {pose!r}; choose one of {', '.join(POSES)}")
        if res < MIN_RES:
            raise GenzooError(f"shapes: resolution {res} is too small; use a resolution >= 16")
        if seed < 0:
            raise GenzooError(f"shapes: seed must be a non-negative integer, got {seed}")
        if length is None:
            length = TRAIN_LENGTH if train else HELD_OUT_LENGTH
        self.spec = "shapes" if pose == "random" else f"shapes:{pose}"
        self.pose = pose
        self.res = res
        self.train = train
        self.seed = seed
        self.split = 0 if train else 1
        self.num_classes = len(SHAPE_NAMES)
        self.class_names = list(SHAPE_NAMES)
        self.labels = np.arange(length, dtype=np.int64) % self.num_classes
        # Rendered images are kept (lazily) when they fit the cache budget.
        self._cache: np.ndarray | None = None
        self._cached: np.ndarray | None = None
        self._use_cache = length * res * res * 3 <= CACHE_BYTES

    def render(self, index: int) -> np.ndarray:
        """Item `index` as a (res, res, 3) uint8 array, rendered afresh."""
        rng = np.random.default_rng([self.seed, self.split, index])
        return render_shape(int(self.labels[index]), self.res, rng, self.pose)

    def _pixels(self, index: int) -> np.ndarray:
        if not self._use_cache:
            return self.render(index)
        if self._cache is None:
            self._cache = np.empty((len(self), self.res, self.res, 3), dtype=np.uint8)
            self._cached = np.zeros(len(self), dtype=bool)
        if not self._cached[index]:
            self._cache[index] = self.render(index)
            self._cached[index] = True
        return self._cache[index]

    def _item(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        pixels = self._pixels(index)
        if flip:
            pixels = pixels[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return image, int(self.labels[index])
