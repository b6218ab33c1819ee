"""Generative adversarial networks (family "gan"): alternating D and G updates, truncated sampling.

One training step (`GAN.train_step`), as BigGAN's official loop does it: `d_steps` D updates, each
over `accum` micro-batches that run D once on [G(z, y_fake); x_real] with G in training mode but
without a graph; then one G update over `accum` micro-batches of fresh z and labels. z ~ N(0, I)
and the fake labels are uniform over the classes. After each backward pass (and before the
optimiser step) orthogonal regularisation is added to the gradients directly (BigGAN §3.1): the
reported losses exclude it.

Sampling draws z = t·TruncNormal(−2, 2) (the TF-hub convention that BigGAN-deep's BN statistics
are indexed by) and runs G in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.families.base import Family
from genzoo.families.common import eval_mode
from genzoo.families.diffaugment import diff_augment, parse_policy


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


# -- losses -----------------------------------------------------------------------------------


def hinge_d_loss(d_fake: Tensor, d_real: Tensor) -> tuple[Tensor, Tensor]:
    """(mean relu(1 − D(x)), mean relu(1 + D(G(z))))."""
    return F.relu(1.0 - d_real).mean(), F.relu(1.0 + d_fake).mean()


def hinge_g_loss(d_fake: Tensor) -> Tensor:
    return -d_fake.mean()


def ns_d_loss(d_fake: Tensor, d_real: Tensor) -> tuple[Tensor, Tensor]:
    """(mean softplus(−D(x)), mean softplus(D(G(z)))): −log σ(D(x)) − log(1 − σ(D(G(z))))."""
    return F.softplus(-d_real).mean(), F.softplus(d_fake).mean()


def ns_g_loss(d_fake: Tensor) -> Tensor:
    return F.softplus(-d_fake).mean()


LOSSES: dict[str, tuple[Callable, Callable]] = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "ns": (ns_d_loss, ns_g_loss),
}


# -- orthogonal regularisation ----------------------------------------------------------------


def _off_diagonal_gram(w: Tensor) -> Tensor:
    gram = w @ w.t()
    return gram * (1.0 - torch.eye(w.shape[0], device=w.device, dtype=w.dtype))


def ortho_penalty(weights: Iterable[Tensor], strength: float = 1e-4) -> Tensor:
    """(strength/2)·Σ‖W Wᵀ ⊙ (1 − I)‖²_F over the weights, each viewed as (out, −1).

    Its gradient is 2·strength·(W Wᵀ ⊙ (1 − I)) W, the term BigGAN adds to each gradient.
    """
    total = None
    for weight in weights:
        term = _off_diagonal_gram(weight.view(weight.shape[0], -1)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * strength * total


def ortho_parameters(module: nn.Module, exclude: Sequence[str] = ()) -> list[nn.Parameter]:
    """The parameters orthogonal regularisation acts on: those with ≥ 2 dimensions whose names
    start with none of `exclude` (biases, BN gains and the attention γ drop out by shape)."""
    prefixes = tuple(exclude)
    return [
        p
        for name, p in module.named_parameters()
        if p.ndim >= 2 and not (prefixes and name.startswith(prefixes))
    ]


@torch.no_grad()
def add_ortho_gradient(params: Iterable[nn.Parameter], strength: float) -> None:
    """Add 2·strength·(W Wᵀ ⊙ (1 − I)) W to each parameter's gradient (after backward)."""
    for p in params:
        w = p.view(p.shape[0], -1)
        term = (2.0 * strength * (_off_diagonal_gram(w) @ w)).view_as(p)
        if p.grad is None:
            p.grad = term.clone()
        else:
            p.grad += term


# -- latents ----------------------------------------------------------------------------------


def truncated_noise(
    batch: int, dim_z: int, truncation: float = 1.0, seed: int = 0, *, first: int = 0
) -> Tensor:
    """z = truncation · TruncNormal(−2, 2), float32 (batch, dim_z): the draw of the official
    BigGAN-deep port (`truncated_noise_sample`): scipy's truncnorm from one
    numpy RandomState(seed). scipy draws it by inverting uniforms taken row by row from the
    stream, so row i depends on (seed, i) alone; `first` returns rows first … first + batch − 1
    (one shard of a larger sample). The exact values depend on the numpy/scipy versions."""
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
    rows = truncnorm.rvs(-2, 2, size=(first + batch, dim_z), random_state=state)
    return torch.from_numpy(truncation * rows.astype(np.float32)[first:])


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


def r1_penalty(d_real: Tensor, real: Tensor, gamma: float) -> Tensor:
    """(γ/2)·mean over samples of ‖∇ₓ D(x)‖² (Mescheder et al. 2018)."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(1).mean()


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
    """Adversarial training of a model with `.G` and `.D` (a `BigGAN`); see the module doc.

    `train_step` calls `ctx.next_batch()` exactly d_steps × accum times per step and steps both
    optimizers itself.
    """

    find_unused_parameters = True  # the D step leaves G without gradients and vice versa

    kind = "gan"
    family = "gan"
    Config = GANConfig
    sample_options = {"truncation": 1.0}

    def __init__(self, cfg: GANConfig | None = None) -> None:
        super().__init__(cfg if cfg is not None else GANConfig())
        check_gan_config(self.cfg)

    # -- optimisers and EMA -----------------------------------------------------------------
    def make_optimizers(self, model: nn.Module, *unused: Any) -> dict[str, Any]:
        """Adam for G and for D with the family's learning rates and betas (no weight decay).
        The trainer's other arguments (aux modules, train config) do not change them."""
        c = self.cfg
        return {
            "G": torch.optim.Adam(
                model.G.parameters(), lr=c.g_lr, betas=tuple(c.g_betas), eps=c.adam_eps
            ),
            "D": torch.optim.Adam(
                model.D.parameters(), lr=c.d_lr, betas=tuple(c.d_betas), eps=c.adam_eps
            ),
        }

    def ema_decay(self, step: int, decay: float) -> float:
        """The EMA decay after `step` updates: 0 (copy G) before ema_start, as BigGAN does."""
        return 0.0 if step < self.cfg.ema_start else decay

    # -- training ---------------------------------------------------------------------------
    def _latents(
        self, model: nn.Module, n: int, g: torch.Generator, device
    ) -> tuple[Tensor, Tensor]:
        z = torch.randn((n, model.dim_z), generator=g, device=g.device).to(device)
        y = torch.randint(model.G.cfg.num_classes, (n,), generator=g, device=g.device).to(device)
        return z, y

    def _augment(self, g: torch.Generator) -> Callable[[Tensor], Tensor] | None:
        policy = self.cfg.diffaugment
        return (lambda x: diff_augment(x, policy, generator=g)) if parse_policy(policy) else None

    def train_step(self, ctx: Any) -> dict[str, float]:
        c = self.cfg
        model, net = ctx.model, ctx.net
        opt_g, opt_d = ctx.optimizers["G"], ctx.optimizers["D"]
        d_loss_fn, g_loss_fn = LOSSES[c.loss]
        accum = int(ctx.accum)
        model.train()  # both nets: batch-statistics BN, SN power steps
        logs: dict[str, float] = {}

        def log(name: str, value: Tensor, weight: float) -> None:
            logs[name] = logs.get(name, 0.0) + float(value.detach()) * weight

        draws: list[tuple[torch.Generator, int, torch.device]] = []
        model.D.requires_grad_(True)
        model.G.requires_grad_(False)
        for _ in range(c.d_steps):
            opt_d.zero_grad(set_to_none=True)
            draws = []
            for _ in range(accum):
                x, y, g = ctx.next_batch()
                draws.append((g, x.shape[0], x.device))
                z, y_fake = self._latents(model, x.shape[0], g, x.device)
                real = x.detach().requires_grad_(c.r1_gamma > 0)
                with ctx.autocast():
                    d_fake, d_real = net(
                        z, y_fake, score=True, real=real, real_y=y, grad_G=False,
                        augment=self._augment(g),
                    )  # fmt: skip
                    loss_real, loss_fake = d_loss_fn(d_fake.float(), d_real.float())
                    loss = loss_real + loss_fake
                if c.r1_gamma > 0:
                    r1 = r1_penalty(d_real.float(), real, c.r1_gamma)
                    log("r1", r1, 1.0 / (accum * c.d_steps))
                    loss = loss + r1
                (loss / accum).backward()
                weight = 1.0 / (accum * c.d_steps)
                log("d_loss_real", loss_real, weight)
                log("d_loss_fake", loss_fake, weight)
                log("d_real", d_real.float().mean(), weight)
                log("d_fake", d_fake.float().mean(), weight)
            if c.d_ortho > 0:
                add_ortho_gradient(ortho_parameters(model.D), c.d_ortho)
            opt_d.step()

        model.D.requires_grad_(False)
        model.G.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        for g, n, device in draws:  # continue each micro-batch's stream: fresh, reproducible
            z, y_fake = self._latents(model, n, g, device)
            with ctx.autocast():
                d_fake = net(z, y_fake, score=True, augment=self._augment(g))
                g_loss = g_loss_fn(d_fake.float())
            (g_loss / accum).backward()
            log("g_loss", g_loss, 1.0 / accum)
        if c.g_ortho > 0:
            add_ortho_gradient(ortho_parameters(model.G, c.ortho_exclude), c.g_ortho)
        opt_g.step()
        model.D.requires_grad_(True)

        logs["d_loss"] = logs["d_loss_real"] + logs["d_loss_fake"]
        logs["loss"] = logs["d_loss"] + logs["g_loss"]
        return logs

    # -- sampling ---------------------------------------------------------------------------
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
        if not (math.isfinite(truncation) and truncation > 0):
            raise GenzooError(f"truncation={truncation} must be a positive number, e.g. 0.5")
        z = truncated_normal(y.shape[0], net.dim_z, generators, truncation).to(y.device)
        with eval_mode(net):
            return net(z, y, truncation=truncation)


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
