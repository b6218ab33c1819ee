"""The one training loop: every family, one process or many (`torchrun`), CPU or GPU.

Per step: `accum` micro-batches → tokenizer.encode (unless latents are cached) → label dropout →
family.loss(net) → backward (gradients all-reduced by DDP on the last micro-batch) → clip →
AdamW → EMA. Every random draw of a micro-batch comes from a generator seeded by (seed, step,
micro-batch index), so a resumed run repeats an uninterrupted one bit for bit, and the update does
not depend on the number of processes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from genzoo.build import build_data_and_tokenizer, build_model, incompatible_fields, resolve
from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families import build_family
from genzoo.train import checkpoint as ck
from genzoo.train.distributed import Dist, all_reduce_mean, barrier, init_distributed
from genzoo.train.ema import ema_decay_at, make_ema, update_ema
from genzoo.train.loader import micro_batches, seed_for
from genzoo.train.logger import RunLogger
from genzoo.train.progress import Progress
from genzoo.train.schedule import check_lr_schedule, lr_at
from genzoo.train.step import StepContext, ordinary_step

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"


def prepare_run_dir(cfg: RunConfig, out: Path, d: Dist) -> bool:
    """Create or validate the run directory. Returns True when resuming an existing run."""
    cfg_file = out / CONFIG_FILE
    if cfg_file.is_file():
        old = RunConfig.load(cfg_file)
        diffs = incompatible_fields(old, cfg)
        if diffs:
            raise GenzooError(
                f"{out} holds a run with a different configuration, so it cannot be resumed:\n  "
                + "\n  ".join(diffs)
                + "\nUse a new --out directory, or repeat the run's original settings "
                "(only --steps and logging/eval settings may change)."
            )
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenzooError(
            f"--out {out} exists and is not a genzoo run (no {CONFIG_FILE}); "
            "choose a new directory or an existing run directory to resume"
        )
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    return False


def _precision(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.train.precision
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if p == "bf16":
        return torch.bfloat16
    if p == "fp32":
        return None
    raise GenzooError(f"train.precision={p!r}: choose auto, fp32 or bf16")


def drop_labels(y: torch.Tensor, p: float, null: int, g: torch.Generator) -> torch.Tensor:
    """Classifier-free-guidance label dropout, drawn from the micro-batch generator."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape, generator=g, device=g.device) < p
    return torch.where(drop.to(y.device), torch.full_like(y, null), y)


def train(cfg: RunConfig, out: str | Path, *, device: str | None = None) -> Path:
    out = Path(out)
    d = init_distributed(device)
    t = cfg.train
    if t.batch_size % (d.world * t.grad_accum):
        raise GenzooError(
            f"--batch-size {t.batch_size} must be divisible by processes ({d.world}) × "
            f"grad_accum ({t.grad_accum})"
        )
    check_lr_schedule(t.lr_schedule)
    dataset, tokenizer = build_data_and_tokenizer(cfg)
    family = build_family(cfg, tokenizer)
    cfg = resolve(cfg, dataset, tokenizer, family)
    resuming = prepare_run_dir(cfg, out, d)
    barrier(d)
    if d.is_main:
        cfg.save(out / CONFIG_FILE)
        names = getattr(dataset, "class_names", None)
        if names:
            (out / CLASSES_FILE).write_text(json.dumps(list(names)) + "\n")

    torch.manual_seed(seed_for(t.seed, 0x1D17))  # initial weights depend on the seed alone
    model = build_model(cfg).to(d.device)
    model.drop_labels_in_forward = False  # drop_labels() below does it, from seeded generators
    aux = {k: m.to(d.device) for k, m in family.auxiliary(cfg).items()}
    ema = make_ema(model)
    tokenizer = tokenizer.to(d.device)
    net, wrapped_aux = wrap_for_training(model, ema, aux, d, cfg.train, family)
    optimizers = family.make_optimizers(model, aux, t)
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])

    start = 0
    ckpt = ck.latest_checkpoint(out) if resuming else None
    if ckpt is not None:
        start = ck.restore(ckpt, model, ema, optimizers, aux)
    if d.is_main:
        ck.clean_partial(out)
    if start >= t.steps:
        if d.is_main and not t.quiet:
            print(f"{out}: already at step {start} ≥ --steps {t.steps}; nothing to do")
        return out

    if t.compile:
        net = torch.compile(net)
    amp = _precision(cfg, d.device)
    null = getattr(cfg.model, "num_classes", 0)
    dropout = getattr(cfg.model, "class_dropout_prob", 0.0)
    is_latent = getattr(dataset, "is_latent", False)
    batches = micro_batches(
        dataset,
        batch_size=t.batch_size,
        world=d.world,
        rank=d.rank,
        accum=t.grad_accum,
        seed=t.seed,
        hflip=cfg.data.hflip,
        start_step=start,
        workers=cfg.data.workers,
    )
    logger = RunLogger(out, enabled=d.is_main)
    progress = Progress(t.steps, start, enabled=d.is_main and not t.quiet)
    hooks = _Hooks(cfg, out, d, ema, family, tokenizer, dataset)
    model.train()
    for m in aux.values():
        m.train()
    step = start
    last_log, imgs_since = time.perf_counter(), 0
    step_start = last_log
    own_step = family.train_step is not None

    def micro_batch(a: int, step_now: int):
        x, y = next(batches)
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        g = torch.Generator(d.device).manual_seed(seed_for(t.seed, step_now, a * d.world + d.rank))
        with torch.no_grad():
            z = x if is_latent else tokenizer.encode(_to_float(x), generator=g)
        if torch.is_tensor(z) and z.is_floating_point():  # a list: per-scale token ids
            z = z.float()
        return z, drop_labels(y, dropout, null, g), g

    try:
        while step < t.steps:
            for opt in optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, group["initial_lr"], t.warmup, t.steps, t.lr_schedule)
            ctx = StepContext(
                model=model, net=net, optimizers=optimizers, aux=wrapped_aux, step=step,
                total_steps=t.steps, accum=t.grad_accum, distributed=d.enabled,
                grad_clip=t.grad_clip, amp_dtype=amp, device=d.device,
                _batches=lambda a, s=step: micro_batch(a, s),
            )  # fmt: skip
            totals = family.train_step(ctx) if own_step else ordinary_step(family, ctx)
            loss = all_reduce_mean(torch.tensor(totals["loss"], device=d.device), d).item()
            if not math.isfinite(loss):
                last = ck.latest_checkpoint(out)
                raise GenzooError(
                    f"loss became {loss} at step {step + 1}; stopped without saving. The last "
                    f"good checkpoint is {last.path if last else '(none yet)'}. Lower --set "
                    "train.lr or enable train.grad_clip, then re-run to resume from it."
                )
            if not own_step:
                optimizers["model"].step()
            decay = family.ema_decay(step, ema_decay_at(step, t.ema_decay, t.ema_warmup))
            update_ema(ema, model, decay)
            step += 1
            imgs_since += t.batch_size
            now = time.perf_counter()
            progress.update(step, loss, t.batch_size / max(now - step_start, 1e-9))
            step_start = now
            if step % t.log_every == 0 or step == t.steps:
                now = time.perf_counter()
                scalars = dict(totals)
                scalars["loss"] = loss
                scalars["img_per_s"] = imgs_since / max(now - last_log, 1e-9)
                scalars["lr"] = next(iter(optimizers.values())).param_groups[0]["lr"]
                logger.log(step, scalars)
                last_log, imgs_since = now, 0
            if step % t.ckpt_every == 0 or step == t.steps:
                ck.save_checkpoint(
                    out, step, model, ema, optimizers, {"position": step * t.batch_size},
                    t.keep_ckpts, aux=aux, is_main=d.is_main,
                )  # fmt: skip
                barrier(d)
            hooks.after_step(step, logger)
    finally:
        progress.close()
        logger.close()
    return out


def wrap_for_training(model, ema, aux, d: Dist, t, family) -> tuple[torch.nn.Module, dict]:
    """DDP (or FSDP2 with `train.fsdp`) around the model and the family's own modules. Under
    FSDP the EMA copy is sharded too, so its update stays local to each rank's shards."""
    if not d.enabled:
        return model, dict(aux)
    if t.fsdp:
        from genzoo.train.fsdp import shard_model

        shard_model(ema, d)
        return shard_model(model, d), {k: shard_model(m, d) for k, m in aux.items()}

    def ddp(m):
        return DDP(
            m,
            device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=family.find_unused_parameters,
        )

    return ddp(model), {k: ddp(m) for k, m in aux.items()}


def _to_float(x: torch.Tensor) -> torch.Tensor:
    from genzoo.data.transforms import to_float

    return to_float(x)


class _Hooks:
    """Periodic sample grids and evaluations of the EMA model (rank 0 only)."""

    def __init__(self, cfg, out, d, ema, family, tokenizer, dataset):
        self.cfg, self.out, self.d = cfg, out, d
        self.ema, self.family, self.tokenizer, self.dataset = ema, family, tokenizer, dataset

    def _pipeline(self, ema):
        from genzoo.pipeline import Pipeline

        names = getattr(self.dataset, "class_names", None)
        return Pipeline(ema, self.family, self.tokenizer, self.cfg, self.d.device, names)

    def _gathered_ema(self):
        """The EMA network on rank 0; a sharded one is gathered first (every rank calls)."""
        if not self.cfg.train.fsdp or not self.d.enabled:
            return self.ema
        state = ck.full_state_dict(self.ema)
        if not self.d.is_main:
            return None
        plain = build_model(self.cfg).to(self.d.device)
        plain.load_state_dict(state)
        return plain.eval()

    def after_step(self, step: int, logger: RunLogger) -> None:
        t = self.cfg.train
        final = step == t.steps
        grid_due = (t.grid_every and step % t.grid_every == 0) or final
        eval_due = t.eval_every and (step % t.eval_every == 0 or final)
        if not (grid_due or eval_due):
            return
        ema = self._gathered_ema()
        if self.d.is_main and grid_due:
            path = self.family.save_training_grid(
                self._pipeline(ema), self.out / "samples" / f"grid-{step:07d}.png", t, self.dataset
            )
            if final:
                (self.out / "grid.png").write_bytes(Path(path).read_bytes())
        if eval_due:
            if self.d.is_main:
                scalars = self.family.evaluate_during_training(self._pipeline(ema), t, self.dataset)
                logger.log(step, scalars)
            barrier(self.d)
