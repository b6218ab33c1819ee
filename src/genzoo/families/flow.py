"""Flow matching / stochastic interpolants (SiT conventions: t=0 noise, t=1 data).

Training regresses the network onto the path velocity u_t = α̇_t x1 + σ̇_t x0 at x_t = α_t x1 + σ_t x0
(mean squared error over all dimensions, then over the batch). The network sees t ∈ [0, 1] as a
float tensor (N,). Sampling integrates dx/dt = v(x, t) from noise at t = 0 to data at t = 1 with
Euler or Heun on SiT's grid, or runs SiT's Euler–Maruyama SDE sampler.

Randomness in `loss`: the noise x0 is drawn first, then t, as SiT's `Transport.sample` does
(noise as `randn_like(x)`, t as `rand(N)` from the global CPU RNG when no generator is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.base import NoiseFamily
from genzoo.families.common import eval_mode, mean_flat, normal_like, uniform_draw
from genzoo.families.interpolants import DIFFUSION_FORMS, build_interpolant
from genzoo.sampling import ClassifierFreeGuidance, check_options, check_sampler
from genzoo.sampling.noise import Generators, step_noise
from genzoo.sampling.ode import euler, heun
from genzoo.sampling.sde import euler_maruyama

TIME_DISTRIBUTIONS = ("uniform", "logit-normal")
LAST_STEPS = {"none": None, "mean": "Mean", "tweedie": "Tweedie", "euler": "Euler"}
SDE_OPTIONS = ("diffusion_form", "diffusion_norm", "last_step", "last_step_size", "sample_eps")
SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {
    "euler": (),
    "heun": (),
    "euler-maruyama": SDE_OPTIONS,
}


@dataclass
class FlowConfig:
    kind: ClassVar[str] = "flow"
    path: str = "linear"  # "linear" | "gvp"
    predict: str = "velocity"
    time_dist: str = "uniform"  # training t: "uniform" on [0, 1) | "logit-normal" (sigmoid(N(0,1)))


class Flow(NoiseFamily):
    """An interpolant between Gaussian noise and data, with a velocity-predicting network."""

    family = kind = "flow"
    Config = FlowConfig
    learns_sigma = False
    time_scale = 1.0  # t in [0, 1]
    sample_options = {
        "sampler": "heun",
        "steps": 50,
        **NoiseFamily.common_options,
        "diffusion_form": "sigma",  # euler-maruyama
        "diffusion_norm": 1.0,
        "last_step": "Mean",
        "last_step_size": 0.04,
        "sample_eps": 0.0,
    }

    def __init__(self, cfg: FlowConfig) -> None:
        if cfg.predict != "velocity":
            raise GenzooError(f"flow.predict={cfg.predict!r}: only 'velocity' is supported")
        if cfg.time_dist not in TIME_DISTRIBUTIONS:
            raise GenzooError(
                f"flow.time_dist={cfg.time_dist!r}: choose one of {', '.join(TIME_DISTRIBUTIONS)}"
            )
        self.cfg = cfg
        self.path = build_interpolant(cfg.path)

    @staticmethod
    def noise_level(t: Tensor) -> Tensor:
        """Flow time -> noise level in [0, 1], 1 = pure noise (for guidance intervals)."""
        return 1 - t

    @staticmethod
    def velocity_output(out: Tensor, x: Tensor) -> Tensor:
        """The velocity in a network output: all of it, or the first half of a 2C output."""
        c = x.shape[1]
        if (
            out.shape[0] != x.shape[0]
            or out.shape[2:] != x.shape[2:]
            or out.shape[1]
            not in (
                c,
                2 * c,
            )
        ):
            raise GenzooError(
                f"the network returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                f"a velocity network must return {c} channels (or {2 * c} with a sigma half, "
                "which is ignored)"
            )
        return out[:, :c]  # official SiT checkpoints carry an unused sigma half

    @staticmethod
    def _expand(t: Tensor, x: Tensor) -> Tensor:
        return t.view(-1, *([1] * (x.ndim - 1)))

    # -- training ---------------------------------------------------------------------------
    def loss(
        self, net: Any, x: Tensor, y: Tensor, generator: torch.Generator | None = None, **_: Any
    ) -> dict[str, Tensor]:
        """Mean over the batch of mean_flat((v_θ(x_t, t) − u_t)²)."""
        x0 = normal_like(x, generator)
        if self.cfg.time_dist == "uniform":
            t = uniform_draw((x.shape[0],), generator)
        elif generator is None:
            t = torch.sigmoid(torch.randn((x.shape[0],)))
        else:
            t = torch.sigmoid(
                torch.randn((x.shape[0],), generator=generator, device=generator.device)
            )
        t = t.to(x)
        x_t, u_t = self.path.interpolate(x0, x, self._expand(t, x))
        velocity = self.velocity_output(net(x_t, t, y), x)
        return {"loss": mean_flat((velocity - u_t) ** 2).mean()}

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        net: Any,
        y: Tensor,
        *,
        noise: Tensor,
        sampler: str,
        steps: int,
        cfg: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        cfg_channels: int | None = None,
        null_label: int | None,
        generator: Generators = None,
        progress: bool = False,
        **options: Any,
    ) -> Tensor:
        """Generate data (t = 1) from `noise` (N, C, H, W) at t = 0 for labels y (N,).

        sampler: "euler" | "heun": ODE on torch.linspace(0, 1, steps) (steps − 1 steps; heun makes
        two network calls per step). "euler-maruyama": SiT's SDE sampler, options
        diffusion_form="sigma", diffusion_norm=1.0, last_step="Mean" (None | "Mean" | "Tweedie" |
        "Euler"), last_step_size=0.04, sample_eps=0.0 (start time, needed > 0 for "SBDM").
        generator: one generator, one per sample, or None for the global RNG drawn exactly as
            SiT's SDE loop draws it (see `genzoo.sampling.noise`). The ODE samplers draw nothing.
        """
        check_sampler(self.family, sampler)
        check_options(sampler, options, SAMPLER_OPTIONS[sampler])
        steps = int(steps)
        if steps < 2:
            raise GenzooError(f"steps={steps}: the {sampler} sampler needs at least 2 time points")
        guidance = ClassifierFreeGuidance(cfg, cfg_interval, cfg_channels)

        def predictor(x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
            return self.velocity_output(net(x, t, labels), x)

        guided = guidance.wrap(predictor, null_label, noise_level=self.noise_level)
        n = noise.shape[0]

        def times(t: Tensor | float) -> Tensor:  # a scalar time for the whole batch, as SiT
            return torch.ones(n).to(noise.device) * t

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return guided(x, times(t), y)

        with eval_mode(net):
            if sampler in ("euler", "heun"):
                grid = torch.linspace(0, 1, steps)
                solve = euler if sampler == "euler" else heun
                return solve(velocity, noise, grid, progress=progress)
            return self._sample_sde(
                guided, y, noise, steps, guidance.doubles_batch, generator, progress, **options
            )

    def _sample_sde(
        self,
        guided: Any,
        y: Tensor,
        noise: Tensor,
        steps: int,
        doubled: bool,
        generator: Generators,
        progress: bool,
        diffusion_form: str = "sigma",
        diffusion_norm: float = 1.0,
        last_step: str | None = "Mean",
        last_step_size: float = 0.04,
        sample_eps: float = 0.0,
    ) -> Tensor:
        form = "SBDM" if diffusion_form.lower() == "sbdm" else diffusion_form
        if form not in DIFFUSION_FORMS:
            raise GenzooError(
                f"diffusion_form={diffusion_form!r}: choose one of {', '.join(DIFFUSION_FORMS)}"
            )
        key = "none" if last_step is None else str(last_step).lower()
        if key not in LAST_STEPS:
            raise GenzooError(
                f"last_step={last_step!r}: choose one of None, 'Mean', 'Tweedie', 'Euler'"
            )
        last = LAST_STEPS[key]
        if last is None:
            last_step_size = 0.0
        if form == "SBDM" and sample_eps <= 0:
            raise GenzooError(
                "diffusion_form='SBDM' has w(t) = (1 - t)/t, infinite at t = 0: "
                "pass sample_eps > 0 (e.g. 1e-3) to start the SDE there"
            )
        # SiT's time interval: [eps, ...] for SBDM, and the last step covers the final gap.
        t0 = sample_eps if form == "SBDM" else 0.0
        t1 = 1 - sample_eps if last_step_size == 0 else 1 - last_step_size
        grid = torch.linspace(t0, t1, steps)
        n = noise.shape[0]
        path = self.path

        def times(t: Tensor | float) -> Tensor:
            return torch.ones(n).to(noise) * t

        def w(t: Tensor) -> Tensor:
            return path.diffusion(self._expand(t, noise), form, diffusion_norm)

        def drift(x: Tensor, t: Tensor | float) -> Tensor:
            tt = times(t)
            v = guided(x, tt, y)
            return v + w(tt) * path.score_from_velocity(v, x, self._expand(tt, x))

        def draw(x: Tensor) -> Tensor:
            return step_noise(x, generator, batch_factor=2 if doubled else 1, global_on_cpu=True)

        x = euler_maruyama(drift, lambda t: w(times(t)), noise, grid, noise=draw, progress=progress)
        if last is None:
            return x
        tt = times(t1)
        if last == "Mean":
            return x + drift(x, t1) * last_step_size
        v = guided(x, tt, y)
        if last == "Euler":
            return x + v * last_step_size
        # Tweedie: E[x1 | x_t] = (x + σ² ∇log p) / α, with α, σ at the scalar time t1.
        alpha = path.alpha(tt)[0][0]
        sigma = path.sigma(tt)[0][0]
        return x / alpha + (sigma**2) / alpha * path.score_from_velocity(v, x, self._expand(tt, x))
