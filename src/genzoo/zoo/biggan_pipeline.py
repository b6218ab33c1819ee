"""A loaded official BigGAN / BigGAN-deep generator as a genzoo `Pipeline`.

    pipe = genzoo.load_official("biggan", "G_ema.pth", BN_eps=1e-5, SN_eps=1e-6)
    x = pipe.model(z, y, truncation=1.0)                       # (B, 3, R, R) in [-1, 1]
    x = pipe.sample_images(y, truncation=0.5, seed=0)         # z = truncated_noise(B, …, 0.5, 0)
    images = pipe.sample(y, truncation=0.5, seed=0)           # the same, uint8 NHWC

`sample` is the Pipeline one (the GAN family draws sample i's z as row i of
`truncated_noise(seed)`), so `genzoo sample --official biggan …` shards it over processes and
`pipe.sample(y, seed=s)` equals `sample_images(y, seed=s)` converted to uint8.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.gan import GAN, GANConfig, truncated_noise
from genzoo.pipeline import Pipeline
from genzoo.tokenizers.pixels import PixelTokenizer

# eps values that the CLI cannot take as arguments, by the file's origin (spec §4, pitfall 3):
# a BigGAN-PyTorch training run (its files log `sv0`) used the launch script's, a TF-hub
# conversion (no `sv0`) was made with 1e-4 for both.
TRAINED_EPS = {"BN_eps": 1e-5, "SN_eps": 1e-6}
CONVERTED_EPS = {"BN_eps": 1e-4, "SN_eps": 1e-4}


class OfficialBigGAN(Pipeline):
    """A loaded official generator: `model(z, y, truncation)`, `sample_images` (the official
    conversions' seeded draw) and the Pipeline's uint8 `sample` / `save_grid`."""

    def __init__(self, model: nn.Module, config: Any, device: torch.device, kind: str):
        run = RunConfig(preset=f"official-{kind}", model=config, family=GANConfig())
        run.data.res = config.output_dim if kind == "biggan-deep" else config.resolution
        super().__init__(model, GAN(run.family), PixelTokenizer(), run, device)
        self.config = config
        self.kind = kind

    @property
    def dim_z(self) -> int:
        return self.model.dim_z

    def _labels(self, y: Any) -> Tensor:
        y = torch.as_tensor(y, device=self.device)
        if y.is_floating_point():
            if self.kind != "biggan-deep":
                raise GenzooError("float class vectors need kind 'biggan-deep'; pass int labels")
            return y.to(torch.float32)
        return self._check_labels(y)

    @torch.no_grad()
    def sample_images(self, y: Any, *, truncation: float = 1.0, seed: int = 0) -> Tensor:
        """model(truncated_noise(N, dim_z, truncation, seed), y, truncation): (N, 3, R, R) in
        [-1, 1]. y: int labels, or for BigGAN-deep also float class vectors (N, K)."""
        y = self._labels(y)
        z = truncated_noise(y.shape[0], self.dim_z, truncation, seed).to(self.device)
        return self.model(z, y, truncation=truncation)


BigGANPipeline = OfficialBigGAN  # the earlier name


def _has_sv_log(weights: Any) -> bool:
    from genzoo.zoo.official import read_state_dict

    return any(".sv" in k for k in read_state_dict(weights))


def biggan_from_cli(c, device: str) -> OfficialBigGAN:
    """`genzoo sample --official biggan --weights G_ema.pth [--truncation t]`: the architecture
    is read from the shapes; the eps values follow the file's origin (TRAINED_EPS when it logs
    `sv0`, as BigGAN-PyTorch's runs do, else CONVERTED_EPS, as the TF-hub conversions)."""
    from genzoo.zoo.biggan import load_biggan

    eps = TRAINED_EPS if _has_sv_log(c.weights) else CONVERTED_EPS
    return load_biggan(c.weights, device=device, **eps)


def biggan_deep_from_cli(c, device: str) -> OfficialBigGAN:
    """`genzoo sample --official biggan-deep --weights FOLDER_OR_BIN [--truncation t]`: the
    config comes from the folder's config.json, or else from the shapes."""
    from genzoo.zoo.biggan import load_biggan_deep

    return load_biggan_deep(c.weights, device=device)
