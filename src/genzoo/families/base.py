"""The family contract: what the training loop, `Pipeline` and the CLI ask of a generative family.

A family is built from its config section (`Family(cfg)`) and provides

* `loss(net, z, y, *, generator, step, total_steps) -> dict` — `"loss"` is minimised, the other
  entries are logged; `z` is what the tokenizer made of the images (latents or token ids);
* `sample(net, y, *, generators, null_label, progress, **options)` — latents or token ids;
* `sample_options` — the sampling options it accepts, with their defaults (the CLI exposes
  them; `Pipeline.sample` refuses any other option by name);

and, where it needs them, the hooks below (the defaults serve a one-network family):

* `generate(...)` — per-sample randomness from (seed, i): by default one generator per sample;
  noise-driven families also draw their starting noise here;
* `auxiliary(run_cfg)` — extra trainable modules the family owns (a discriminator), which the
  trainer moves, wraps, checkpoints and resumes with the model;
* `make_optimizers(model, aux, train_cfg)` — one optimizer per name (default: AdamW on the model);
* `train_step(ctx)` — a family with its own update (alternating GAN steps) defines it; otherwise
  the trainer's ordinary step runs `loss` over the micro-batches.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from genzoo.errors import GenzooError
from genzoo.train.loader import seed_for


def sample_generators(seed: int, indices: Sequence[int], device) -> list[torch.Generator]:
    """Per-sample generators for a sampler's own draws: sample i's depend on (seed, i) alone."""
    return [torch.Generator(device).manual_seed(seed_for(seed, i, 0x5DE)) for i in indices]


class Family:
    kind: ClassVar[str]
    Config: ClassVar[type]
    sample_options: ClassVar[dict[str, Any]] = {}
    # options whose default is None: the type a string given for them is read as
    option_types: ClassVar[dict[str, type]] = {}
    train_step = None  # a family with its own update defines `train_step(self, ctx) -> dict`
    # DDP: True when a step leaves some parameters without gradients (alternating GAN steps)
    find_unused_parameters: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # -- options ----------------------------------------------------------------------------
    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """`options` with names checked and strings (from the command line) typed."""
        out = {}
        for name, value in options.items():
            if name not in self.sample_options:
                known = ", ".join(self.sample_options) or "none"
                raise GenzooError(
                    f"option {name!r} is not a sampling option of the {self.kind} family; "
                    f"its options are: {known}"
                )
            out[name] = self._typed(name, value) if isinstance(value, str) else value
        return out

    def _typed(self, name: str, text: str) -> Any:
        from genzoo.config import parse_typed

        default = self.sample_options[name]
        t = self.option_types.get(name, type(default))
        if t is tuple:
            t = tuple[float, ...]
        if text.strip().lower() == "none" and default is None:
            return None
        return parse_typed(text, t, name)

    # -- sampling ---------------------------------------------------------------------------
    def generate(
        self,
        net: nn.Module,
        y: torch.Tensor,
        *,
        seed: int,
        indices: Sequence[int],
        latent_shape: tuple[int, ...],
        device: torch.device,
        null_label: int,
        progress: bool = False,
        **options: Any,
    ) -> Any:
        """`sample` with the randomness of sample i taken from (seed, indices[i]) alone."""
        return self.sample(
            net,
            y,
            generators=sample_generators(seed, indices, device),
            null_label=null_label,
            progress=progress,
            **options,
        )

    def sample(self, net, y, *, generators, null_label, progress=False, **options):
        raise NotImplementedError

    def loss(self, net, z, y, *, generator=None, step: int = 0, total_steps: int = 1):
        raise NotImplementedError

    # -- training hooks ---------------------------------------------------------------------
    def save_training_grid(self, pipe: Any, path: Any, train_cfg: Any, dataset: Any) -> Any:
        """The periodic picture of a run: samples, one row per class."""
        return pipe.save_grid(path, **training_grid_options(self, train_cfg))

    def evaluate_during_training(self, pipe: Any, train_cfg: Any, dataset: Any) -> dict:
        """`--eval-every`: metrics of samples of the EMA model against `--eval-ref`."""
        from genzoo.train.evaluation import evaluate_samples

        return evaluate_samples(pipe, train_cfg, **training_grid_options(self, train_cfg))

    def ema_decay(self, step: int, decay: float) -> float:
        """The EMA decay of update `step` (a family may start its average late, as BigGAN)."""
        return decay

    def auxiliary(self, run_cfg: Any) -> dict[str, nn.Module]:
        return {}

    def make_optimizers(
        self, model: nn.Module, aux: dict[str, nn.Module], train_cfg: Any
    ) -> dict[str, torch.optim.Optimizer]:
        params = [p for p in model.parameters() if p.requires_grad]
        return {
            "model": torch.optim.AdamW(
                params,
                lr=train_cfg.lr,
                betas=tuple(train_cfg.betas),
                weight_decay=train_cfg.weight_decay,
            )  # fmt: skip
        }


def option_names(families: typing.Iterable[type]) -> dict[str, Any]:
    """Every sampling option of the given family classes, with the first default seen."""
    out: dict[str, Any] = {}
    for cls in families:
        for k, v in cls.sample_options.items():
            out.setdefault(k, v)
    return out


def sample_noise(shape: Sequence[int], seed: int, indices: Sequence[int]) -> torch.Tensor:
    """Initial noise of samples `indices`: sample i's noise depends on (seed, i) alone."""
    return torch.stack(
        [
            torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed_for(seed, i)))
            for i in indices
        ]
    )


class NoiseFamily(Family):
    """A family that integrates from Gaussian noise in latent space (diffusion, flow).

    Options shared by both: solver, steps, CFG scale, noise-level interval and guided channels
    (0: all). `generate` draws sample i's starting noise from (seed, i) and its solver draws from
    a generator of its own.
    """

    common_options: ClassVar[dict[str, Any]] = {
        "cfg": 1.0,
        "cfg_interval": (),  # (lo, hi) noise levels where guidance is on; empty: everywhere
        "cfg_channels": 0,  # guide only the first K latent channels; 0: all
    }

    def generate(self, net, y, *, seed, indices, latent_shape, device, null_label,
                 progress=False, **options):  # fmt: skip
        noise = sample_noise(latent_shape, seed, indices).to(device)
        return self.sample_from_noise(
            net, y, noise, generator=sample_generators(seed, indices, device),
            null_label=null_label, progress=progress, **options,
        )  # fmt: skip

    def sample_from_noise(self, net, y, noise, *, generator, null_label, progress=False,
                          sampler=None, steps=None, cfg=1.0, cfg_interval=None,
                          cfg_channels=None, **options):  # fmt: skip
        """`sample` with the family's defaults for the options not given."""
        return self.sample(
            net,
            y,
            noise=noise,
            sampler=sampler or self.sample_options["sampler"],
            steps=steps or self.sample_options["steps"],
            cfg=cfg,
            cfg_interval=tuple(cfg_interval) if cfg_interval else None,
            cfg_channels=cfg_channels or None,
            null_label=null_label,
            generator=generator,
            progress=progress,
            **options,
        )


def training_grid_options(family: Family, train_cfg: Any) -> dict[str, Any]:
    """The run's grid settings (train.grid_cfg, train.grid_steps) that the family takes."""
    wanted = {"cfg": train_cfg.grid_cfg, "steps": train_cfg.grid_steps}
    return {k: v for k, v in wanted.items() if k in family.sample_options}
