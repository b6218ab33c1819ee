"""Objectives of a per-token head (genzoo.nn.token_head): how it is trained and sampled.

Two objectives share one interface, so a masked or autoregressive model picks one by name:

* `HeadDiffusion` (MAR's "Diffusion Loss"): a 1000-step cosine-schedule DDPM predicting eps
  with learned-range variance, trained with the hybrid loss mse(eps) + vb, and sampled by
  ancestral DDPM on a respaced process, with a temperature on the per-step noise only (the
  starting noise x_T is not scaled). The whole process is genzoo's `GaussianDiffusion`, so
  every coefficient is the one DiT's code (and MAR's copy of it) computes.
* `HeadFlow`: the linear flow x_t = t·x + (1 − t)·ε (t = 0 noise, t = 1 data), trained by
  velocity regression and sampled with Euler steps; the temperature scales the starting noise.

Training: `per_token_loss(predict, target, t=None, noise=None, generator=None)` where
`predict(x_t, t)` runs the head on the given rows (the caller decides how the conditions are
repeated). With `t`/`noise` None and no generator, the draws come from torch's global RNG in
MAR's order: t first (`randint(0, 1000, (N,))` on the target's device), then the noise
(`randn_like(target)`).

Sampling: `sample(head, z, temperature=, cfg=, steps=, noise=)`. With a guidance scale `cfg`
(None: no guidance), z holds the conditional rows first and then the null rows (2n rows) and the
head's guided forward runs on the doubled batch, as MAR runs it whenever its cfg is not 1.
`noise` is None (torch's global RNG, drawn as MAR draws it: randn(n, C) on the CPU for x_T,
doubled under guidance, then `randn_like(x)` of the whole (doubled) batch per step) or a table
(n, T+1, C): column 0 is the starting noise of each row, column j that of its j-th step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.common import eval_mode, mean_flat, normal_like, uniform_draw
from genzoo.families.diffusion import DiffusionConfig, GaussianDiffusion
from genzoo.families.diffusion_schedule import DiffusionSchedule
from genzoo.families.interpolants import build_interpolant
from genzoo.sampling.ddpm import ddpm_sample
from genzoo.sampling.ode import euler

HEAD_OBJECTIVES = ("diffusion", "flow")
Predict = Callable[[Tensor, Tensor], Tensor]  # (x_t (N, C), t (N,)) -> head output (N, ·)


def masked_mean(per_token: Tensor, mask: Tensor | None) -> Tensor:
    """The mean of per-token losses, weighted by `mask` when given (MAR: sum(l·m) / sum(m))."""
    if mask is None:
        return per_token.mean()
    mask = mask.reshape(-1).to(per_token.dtype)
    if mask.shape != per_token.shape:
        raise GenzooError(
            f"head loss: mask has {mask.numel()} entries for {per_token.numel()} token rows"
        )
    return (per_token * mask).sum() / mask.sum()


def _check_table(noise: Tensor, rows: int, columns: int, channels: int) -> Tensor:
    if noise.shape != (rows, columns, channels):
        raise GenzooError(
            f"head noise table has shape {tuple(noise.shape)}; expected ({rows}, {columns}, "
            f"{channels}): one row per sampled token, the starting noise then one per step"
        )
    return noise


class HeadDiffusion:
    """MAR's per-token DDPM: cosine betas over 1000 steps, eps prediction, learned variance."""

    kind = "diffusion"

    def __init__(self, sampling_steps: int | str = "100", diffusion_steps: int = 1000):
        self.process = GaussianDiffusion(
            DiffusionConfig(
                noise_schedule="cosine",
                diffusion_steps=diffusion_steps,
                predict="eps",
                learn_sigma=True,
            )  # fmt: skip
        )
        self.num_timesteps = self.process.num_timesteps
        self.default_steps = sampling_steps
        self.schedule_for(sampling_steps, "num_sampling_steps")

    @staticmethod
    def output_channels(token_channels: int) -> int:
        return 2 * token_channels  # [eps, variance values]

    def schedule_for(self, steps: int | str | None, name: str = "head_steps") -> DiffusionSchedule:
        """The respaced process of `steps` (None: the default); GenzooError naming `name`."""
        steps = self.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int | str):
            raise GenzooError(f"{name}={steps!r}: expected a step count such as 100 or '100'")
        try:
            return self.process.spaced(str(steps))
        except GenzooError as e:
            raise GenzooError(
                f"{name}={steps!r} cannot respace the head's {self.num_timesteps}-step process "
                f"({e}); use a count from 1 to {self.num_timesteps}"
            ) from None

    def num_steps(self, steps: int | str | None = None) -> int:
        """T: the number of sampling steps (a noise table has T + 1 columns)."""
        return self.schedule_for(steps).num_timesteps

    # -- training ---------------------------------------------------------------------------
    def per_token_loss(
        self,
        predict: Predict,
        target: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(mse + vb per row (N,), logged terms) for clean tokens `target` (N, C)."""
        n, process = target.shape[0], self.process
        if t is None:
            if generator is None:
                t = torch.randint(0, self.num_timesteps, (n,), device=target.device)
            else:
                g = generator
                t = torch.randint(0, self.num_timesteps, (n,), generator=g, device=g.device)
        t = t.to(target.device)
        noise = normal_like(target, generator) if noise is None else noise.to(target)
        x_t = process.q_sample(target, t, noise)
        eps, var_values = process.split_output(predict(x_t, t), target)
        mse = mean_flat((noise - eps) ** 2)
        # the variational term trains the variance only: the mean prediction is detached
        vb = process.vb_bits(target, x_t, t, eps.detach(), var_values)
        return mse + vb, {"mse": mse.mean().detach(), "vb": vb.mean().detach()}

    def loss(self, predict: Predict, target: Tensor, mask: Tensor | None = None, **draws):
        """The per-token loss averaged with `mask` as weights (all rows when None)."""
        per_token, terms = self.per_token_loss(predict, target, **draws)
        return masked_mean(per_token, mask), terms

    # -- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        head,
        z: Tensor,
        *,
        temperature: float = 1.0,
        cfg: float | None = None,
        steps: int | str | None = None,
        noise: Tensor | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Tokens (n, C) for conditions z (n, D), or (2n, D) = [cond; null] with a `cfg`."""
        schedule = self.schedule_for(steps)
        guided = cfg is not None
        n, c = z.shape[0] // (2 if guided else 1), head.in_channels
        original = torch.from_numpy(schedule.timestep_map).to(z.device)
        if noise is None:  # MAR's draws from the global RNG
            x = torch.randn(n, c).to(z.device)

            def step_noise(x: Tensor) -> Tensor:
                return torch.randn_like(x) * temperature
        else:
            table = _check_table(noise, n, schedule.num_timesteps + 1, c).to(z)
            x, column = table[:, 0], iter(range(1, schedule.num_timesteps + 1))

            def step_noise(x: Tensor) -> Tensor:
                draw = table[:, next(column)]
                return (torch.cat([draw, draw]) if guided else draw) * temperature

        x = torch.cat([x, x]) if guided else x
        process = self.process

        def denoise(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            rows = original[t]  # the head sees the original index, whatever the respacing
            out = head.forward_with_cfg(x, rows, z, cfg) if guided else head(x, rows, z)
            eps, var_values = process.split_output(out, x)
            x0 = process.x0_from_prediction(schedule, x, t, eps)
            return x0, process.log_variance(schedule, t, var_values, x.ndim)

        with eval_mode(head):
            x = ddpm_sample(denoise, schedule, x, noise=step_noise, progress=progress)
        return x[:n]


class HeadFlow:
    """A per-token flow head: linear path, velocity target, Euler sampling on linspace(0, 1)."""

    kind = "flow"

    def __init__(self, sampling_steps: int | str = "100", path: str = "linear"):
        self.path = build_interpolant(path)
        self.default_steps = sampling_steps
        self.num_steps(sampling_steps, "num_sampling_steps")

    @staticmethod
    def output_channels(token_channels: int) -> int:
        return token_channels

    def num_steps(self, steps: int | str | None = None, name: str = "head_steps") -> int:
        steps = self.default_steps if steps is None else steps
        try:
            count = int(str(steps).strip())
        except ValueError:
            count = 0
        if isinstance(steps, bool) or count < 1:
            raise GenzooError(f"{name}={steps!r}: a flow head needs an Euler step count >= 1")
        return count

    def per_token_loss(
        self,
        predict: Predict,
        target: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(mean squared velocity error per row (N,), logged terms): noise drawn, then t."""
        x0 = normal_like(target, generator) if noise is None else noise.to(target)
        t = uniform_draw((target.shape[0],), generator) if t is None else t
        t = t.to(target)
        x_t, velocity = self.path.interpolate(x0, target, t[:, None])
        predicted = predict(x_t, t)[:, : target.shape[1]]
        mse = mean_flat((predicted - velocity) ** 2)
        return mse, {"mse": mse.mean().detach()}

    def loss(self, predict: Predict, target: Tensor, mask: Tensor | None = None, **draws):
        per_token, terms = self.per_token_loss(predict, target, **draws)
        return masked_mean(per_token, mask), terms

    @torch.no_grad()
    def sample(self, head, z: Tensor, *, temperature: float = 1.0, cfg: float | None = None,
               steps: int | str | None = None, noise: Tensor | None = None,
               progress: bool = False) -> Tensor:  # fmt: skip
        """Tokens (n, C): Euler from temperature·noise at t = 0 (column 0 of a noise table)."""
        count = self.num_steps(steps)
        guided = cfg is not None
        n, c = z.shape[0] // (2 if guided else 1), head.in_channels
        if noise is None:
            x = torch.randn(n, c).to(z.device)
        else:
            x = _check_table(noise, n, count + 1, c).to(z)[:, 0]
        x = x * temperature
        x = torch.cat([x, x]) if guided else x

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            times = torch.full((x.shape[0],), float(t), device=x.device)
            out = head.forward_with_cfg(x, times, z, cfg) if guided else head(x, times, z)
            return out[:, :c]

        with eval_mode(head):
            x = euler(velocity, x, torch.linspace(0, 1, count + 1), progress=progress)
        return x[:n]


def head_objective(kind: str, sampling_steps: int | str = "100") -> HeadDiffusion | HeadFlow:
    """The objective named `kind` ("diffusion" or "flow")."""
    if kind == "diffusion":
        return HeadDiffusion(sampling_steps)
    if kind == "flow":
        return HeadFlow(sampling_steps)
    raise GenzooError(f"head objective {kind!r}: choose one of {', '.join(HEAD_OBJECTIVES)}")
