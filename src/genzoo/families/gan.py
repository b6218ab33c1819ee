"""Generative adversarial networks (family "gan"): alternating D and G updates, truncated sampling.

The model is the generator G (what the trainer averages and samples); the discriminator D is the
family's own module (`auxiliary`), so the ordinary loop checkpoints, resumes and wraps both.
One training step (`GAN.train_step`), as BigGAN's official loop does it: the step's real batch
(`train.batch_size` images in `train.grad_accum` micro-batches) is cut into `d_steps` equal
parts, one per D update; each D update runs D once per micro-batch on [G(z, y_fake); x_real],
with G in training mode but without a graph; then one G update over as many micro-batches of
fresh z and labels as one D update had. z ~ N(0, I)
and the fake labels are uniform over the classes. After each backward pass (and before the
optimiser step) orthogonal regularisation is added to the gradients directly (BigGAN §3.1): the
reported losses exclude it.

Sampling draws z = t·TruncNormal(−2, 2) (the TF-hub convention that BigGAN-deep's BN statistics
are indexed by) and runs G in eval mode. Through a Pipeline, sample i's z is row i of
`truncated_noise(seed)`, the official conversions' draw, so any shard of a large sample repeats
the rows of the whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.families.base import Family
from genzoo.families.common import eval_mode
from genzoo.families.diffaugment import diff_augment, parse_policy
from genzoo.families.gan_losses import (
    LOSSES,
    add_ortho_gradient,
    hinge_d_loss,
    hinge_g_loss,
    ns_d_loss,
    ns_g_loss,
    ortho_parameters,
    ortho_penalty,
    r1_penalty,
)
from genzoo.families.vqgan import unwrapped

__all__ = [
    "GAN", "GANConfig", "add_ortho_gradient", "diff_augment", "hinge_d_loss", "hinge_g_loss",
    "load_official_discriminator", "noise_rows", "ns_d_loss", "ns_g_loss", "ortho_parameters",
    "ortho_penalty", "r1_penalty", "truncated_noise", "truncated_normal",
]  # fmt: skip


@dataclass
class GANConfig:
    """BigGAN's recipe (paper values; the released run used lr 1e-4 / 4e-4, 1 D step, no ortho)."""

    loss: str = "hinge"  # "hinge" | "ns" (non-saturating logistic)
    d_steps: int = 2  # D updates per G update
    g_lr: float = 5e-5
    d_lr: float = 2e-4
    g_betas: tuple[float, float] = (0.0, 0.999)
    d_betas: tuple[float, float] = (0.0, 0.999)
    adam_eps: float = 1e-8
    g_ortho: float = 1e-4  # orthogonal regularisation of G (0: off)
    d_ortho: float = 0.0
    ortho_exclude: tuple[str, ...] = ("shared.",)  # G parameter-name prefixes left alone
    ema_start: int = 20000  # the EMA copies G exactly before this step
    diffaugment: str = ""  # e.g. "color,translation,cutout" ("" = none)
    r1_gamma: float = 0.0  # (γ/2)·E‖∇ₓD(x_real)‖² (0: off)


# -- latents ----------------------------------------------------------------------------------


def truncated_noise(
    batch: int, dim_z: int, truncation: float = 1.0, seed: int = 0, *, first: int = 0
) -> Tensor:
    """z = truncation · TruncNormal(−2, 2), float32 (batch, dim_z): the draw of the official
    BigGAN-deep port (`truncated_noise_sample`): scipy's truncnorm from one
    numpy RandomState(seed). scipy draws it by inverting uniforms taken row by row from the
    stream, so row i depends on (seed, i) alone; `first` returns rows first … first + batch − 1
    (one shard of a larger sample), skipping the uniforms of the rows before it. The exact values
    depend on the numpy/scipy versions."""
    from scipy.stats import truncnorm

    if int(batch) < 0 or int(first) < 0 or int(dim_z) < 1:
        raise GenzooError(
            f"truncated_noise: batch={batch}, first={first} must be ≥ 0 and dim_z={dim_z} ≥ 1"
        )
    if not (math.isfinite(truncation) and truncation > 0):
        raise GenzooError(f"truncation={truncation} must be a positive number, e.g. 0.5 or 1.0")
    if not 0 <= int(seed) < 2**32:
        raise GenzooError(f"seed={seed} must lie in [0, 2**32) (a numpy RandomState seed)")
    state = np.random.RandomState(int(seed))
    skip = int(first) * int(dim_z)  # the uniforms of the rows before `first`, drawn and dropped
    while skip:
        chunk = min(skip, 1 << 20)
        state.random_sample(chunk)
        skip -= chunk
    rows = truncnorm.rvs(-2, 2, size=(int(batch), int(dim_z)), random_state=state)
    return torch.from_numpy(truncation * rows.astype(np.float32))


def noise_rows(seed: int, indices: Sequence[int], dim_z: int, truncation: float) -> Tensor:
    """Rows `indices` of `truncated_noise(·, dim_z, truncation, seed)`: sample i's z depends on
    (seed, i) alone, whatever the batch or the shard it is drawn in."""
    idx = np.asarray(list(indices), dtype=np.int64)
    if idx.size == 0:
        return torch.zeros((0, dim_z))
    lo = int(idx.min())
    block = truncated_noise(int(idx.max()) - lo + 1, dim_z, truncation, seed, first=lo)
    return block[torch.from_numpy(idx - lo)]


Generators = torch.Generator | Sequence[torch.Generator] | None


def truncated_normal(n: int, dim_z: int, generators: Generators, truncation: float = 1.0) -> Tensor:
    """truncation · TruncNormal(−2, 2) (n, dim_z) float32 on CPU from torch generators, by
    inverting uniforms: one generator for the batch, one per sample (sample i from generator i
    alone), or None for the global RNG."""
    if generators is None:
        u = torch.rand((n, dim_z), dtype=torch.float64)
    elif isinstance(generators, torch.Generator):
        u = torch.rand(
            (n, dim_z), dtype=torch.float64, generator=generators, device=generators.device
        )
    else:
        if len(generators) != n:
            raise GenzooError(
                f"got {len(generators)} generators for {n} samples; pass one per sample"
            )
        rows = [
            torch.rand(dim_z, dtype=torch.float64, generator=g, device=g.device).cpu()
            for g in generators
        ]
        u = torch.stack(rows) if rows else torch.zeros((0, dim_z), dtype=torch.float64)
    u = u.cpu()
    low = 0.5 * math.erfc(2.0 / math.sqrt(2.0))  # Φ(−2)
    p = low + u * (1.0 - 2.0 * low)  # uniform on (Φ(−2), Φ(2))
    z = math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)
    return (truncation * z).float()


# -- the family -------------------------------------------------------------------------------


def check_gan_config(cfg: GANConfig) -> None:
    if cfg.loss not in LOSSES:
        raise GenzooError(f"gan.loss={cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    if int(cfg.d_steps) < 1:
        raise GenzooError(f"gan.d_steps must be at least 1, got {cfg.d_steps}")
    for name in ("g_lr", "d_lr", "adam_eps"):
        if not getattr(cfg, name) > 0:
            raise GenzooError(f"gan.{name} must be positive, got {getattr(cfg, name)}")
    for name in ("g_betas", "d_betas"):
        betas = tuple(getattr(cfg, name))
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise GenzooError(f"gan.{name} must be two numbers in [0, 1), got {betas}")
    for name in ("g_ortho", "d_ortho", "r1_gamma"):
        if getattr(cfg, name) < 0:
            raise GenzooError(f"gan.{name} must be ≥ 0, got {getattr(cfg, name)}")
    parse_policy(cfg.diffaugment)


class GAN(Family):
    """Adversarial training of a generator (the model) against the discriminator the backbone
    makes (`make_discriminator`, kept as the auxiliary module "D"); see the module doc.

    `train_step` calls `ctx.next_batch()` exactly `accum` times per step (so a resumed run reads
    the data an uninterrupted one does) and steps both optimizers itself.
    """

    find_unused_parameters = True  # the D step leaves G without gradients and vice versa

    kind = "gan"
    family = "gan"
    Config = GANConfig
    sample_options = {"truncation": 1.0}

    def __init__(self, cfg: GANConfig | None = None) -> None:
        super().__init__(cfg if cfg is not None else GANConfig())
        check_gan_config(self.cfg)

    # -- the discriminator, optimisers and EMA ----------------------------------------------
    def auxiliary(self, run_cfg: Any) -> dict[str, nn.Module]:
        """{"D": the backbone's discriminator}, built from the (resolved) model section."""
        from genzoo.backbones import BACKBONES

        kind = BACKBONES.kind_of(run_cfg.model)
        make = getattr(BACKBONES.get(kind), "make_discriminator", None)
        if make is None:
            raise GenzooError(
                f"the gan family trains a generator against its discriminator, and model kind "
                f"{kind!r} has none; use model.kind=biggan"
            )
        return {"D": make(run_cfg.model)}

    def make_optimizers(self, model: nn.Module, aux: Any = None, train_cfg: Any = None):
        """Adam for G and for D with the family's learning rates and betas (no weight decay);
        the train config's optimiser settings do not apply."""
        if not aux or "D" not in aux:
            raise GenzooError("the gan family needs its discriminator: aux['D'] is missing")
        if train_cfg is not None:
            self.micro_batches_per_update(train_cfg.grad_accum)
        c = self.cfg
        return {
            "G": torch.optim.Adam(
                model.parameters(), lr=c.g_lr, betas=tuple(c.g_betas), eps=c.adam_eps
            ),
            "D": torch.optim.Adam(
                unwrapped(aux["D"]).parameters(), lr=c.d_lr, betas=tuple(c.d_betas),
                eps=c.adam_eps,
            ),
        }  # fmt: skip

    def ema_decay(self, step: int, decay: float) -> float:
        """0 (the EMA copies G) while the official 1-based iteration count step + 1 is below
        ema_start, as BigGAN's `ema.update(itr)` does; `decay` from then on."""
        return 0.0 if step + 1 < self.cfg.ema_start else decay

    # -- training ---------------------------------------------------------------------------
    def micro_batches_per_update(self, accum: int) -> int:
        """Micro-batches of one D update: each D update takes its own part of the step's batch."""
        if int(accum) % self.cfg.d_steps:
            raise GenzooError(
                f"train.grad_accum={accum} must be a multiple of "
                f"family.d_steps={self.cfg.d_steps}: each D update takes grad_accum/d_steps of "
                "the step's micro-batches; set "
                f"--grad-accum {self.cfg.d_steps} (or a multiple)"
            )
        return int(accum) // self.cfg.d_steps

    def _latents(self, G: nn.Module, n: int, g: torch.Generator, device) -> tuple[Tensor, Tensor]:
        z = torch.randn((n, G.dim_z), generator=g, device=g.device).to(device)
        y = torch.randint(G.cfg.num_classes, (n,), generator=g, device=g.device).to(device)
        return z, y

    def _augment(self, g: torch.Generator) -> Callable[[Tensor], Tensor] | None:
        policy = self.cfg.diffaugment
        return (lambda x: diff_augment(x, policy, generator=g)) if parse_policy(policy) else None

    def train_step(self, ctx: Any) -> dict[str, float]:
        c = self.cfg
        G, net, D = ctx.model, ctx.net, ctx.aux["D"]
        plain_D = unwrapped(D)
        opt_g, opt_d = ctx.optimizers["G"], ctx.optimizers["D"]
        d_loss_fn, g_loss_fn = LOSSES[c.loss]
        per_update = self.micro_batches_per_update(ctx.accum)
        G.train()  # both nets: batch-statistics BN, SN power steps
        plain_D.train()
        logs: dict[str, float] = {}

        def log(name: str, value: Tensor, weight: float) -> None:
            logs[name] = logs.get(name, 0.0) + float(value.detach()) * weight

        draws: list[tuple[torch.Generator, int, torch.device]] = []
        plain_D.requires_grad_(True)
        G.requires_grad_(False)
        weight = 1.0 / (per_update * c.d_steps)
        for _ in range(c.d_steps):
            opt_d.zero_grad(set_to_none=True)
            draws = []
            for a in range(per_update):
                x, y, g = ctx.next_batch()
                draws.append((g, x.shape[0], x.device))
                z, y_fake = self._latents(G, x.shape[0], g, x.device)
                real = x.detach().requires_grad_(c.r1_gamma > 0)
                with ctx.no_sync(D, a == per_update - 1):
                    with ctx.autocast():
                        with torch.no_grad():
                            fake = net(z, y_fake)
                        images = torch.cat([fake, real.to(fake.dtype)])
                        augment = self._augment(g)
                        logits = D(augment(images) if augment else images, torch.cat([y_fake, y]))
                        d_fake, d_real = logits[: len(z)].float(), logits[len(z) :].float()
                        loss_real, loss_fake = d_loss_fn(d_fake, d_real)
                        loss = loss_real + loss_fake
                    if c.r1_gamma > 0:
                        r1 = r1_penalty(d_real, real, c.r1_gamma)
                        log("r1", r1, weight)
                        loss = loss + r1
                    (loss / per_update).backward()
                log("d_loss_real", loss_real, weight)
                log("d_loss_fake", loss_fake, weight)
                log("d_real", d_real.mean(), weight)
                log("d_fake", d_fake.mean(), weight)
            if c.d_ortho > 0:
                add_ortho_gradient(ortho_parameters(plain_D), c.d_ortho)
            opt_d.step()

        # G against a D held fixed; D runs unwrapped (no gradient of its own to all-reduce)
        plain_D.requires_grad_(False)
        G.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        for a, (g, n, device) in enumerate(draws):  # continue each micro-batch's stream
            z, y_fake = self._latents(G, n, g, device)
            with ctx.no_sync(net, a == per_update - 1):
                with ctx.autocast():
                    fake = net(z, y_fake)
                    augment = self._augment(g)
                    d_fake = plain_D(augment(fake) if augment else fake, y_fake)
                    g_loss = g_loss_fn(d_fake.float())
                (g_loss / per_update).backward()
            log("g_loss", g_loss, 1.0 / per_update)
        if c.g_ortho > 0:
            add_ortho_gradient(ortho_parameters(G, c.ortho_exclude), c.g_ortho)
        opt_g.step()
        plain_D.requires_grad_(True)

        logs["d_loss"] = logs["d_loss_real"] + logs["d_loss_fake"]
        logs["loss"] = logs["d_loss"] + logs["g_loss"]
        return logs

    # -- sampling ---------------------------------------------------------------------------
    def generate(self, net, y, *, seed, indices, latent_shape, device, null_label,
                 progress=False, truncation: float = 1.0):  # fmt: skip
        """Images of labels y, sample i from row indices[i] of `truncated_noise(seed)`."""
        check_truncation(truncation)
        z = noise_rows(seed, indices, net.dim_z, truncation).to(device)
        return self.sample_from_noise(net, y, z, truncation)

    def sample(
        self,
        net: Any,
        y: Tensor,
        *,
        generators: Generators = None,
        null_label: int | None = None,
        progress: bool = False,
        truncation: float = 1.0,
    ) -> Tensor:
        """Images (N, 3, R, R) in [-1, 1] for labels y, G in eval mode, from
        z = truncation·TruncNormal(−2, 2) drawn from `generators` (one per sample: sample i
        depends on generator i alone). There is no null class: `null_label` is ignored."""
        check_truncation(truncation)
        z = truncated_normal(y.shape[0], net.dim_z, generators, truncation).to(y.device)
        return self.sample_from_noise(net, y, z, truncation)

    def sample_from_noise(self, net: Any, y: Tensor, z: Tensor, truncation: float) -> Tensor:
        """G(z, y, truncation) in eval mode (running BN statistics, no power step)."""
        with eval_mode(net):
            return net(z, y, truncation=truncation)


def check_truncation(truncation: float) -> None:
    if isinstance(truncation, bool) or not (math.isfinite(truncation) and truncation > 0):
        raise GenzooError(
            f"truncation={truncation!r} must be a positive number, e.g. 0.5 or 1.0 (it scales "
            "z = truncation·TruncNormal(−2, 2))"
        )


def load_official_discriminator(kind: str, weights: str | Path | Any, **D_kwargs: Any) -> nn.Module:
    """An official BigGAN discriminator ("biggan": ajbrock `D.pth`) in eval mode, on CPU unless
    `device=` is given; D(x, y) gives logits (N, 1), and in training mode each call makes the
    spectral-norm power step. `D_kwargs`: the official Discriminator constructor arguments."""
    if kind.lower() != "biggan":
        raise GenzooError(
            f"no official discriminator for kind {kind!r}: only 'biggan' (ajbrock D.pth) has one; "
            "DeepMind never released BigGAN-deep's"
        )
    from genzoo.zoo.biggan import load_biggan_discriminator

    return load_biggan_discriminator(weights, **D_kwargs)
