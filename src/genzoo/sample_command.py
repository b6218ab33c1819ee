"""`genzoo sample`: a run or an official checkpoint → one ADM npz (and a grid), torchrun too."""

from __future__ import annotations

import torch

from genzoo.config import SampleConfig
from genzoo.errors import GenzooError
from genzoo.generate import make_labels, sample_to_npz
from genzoo.train.distributed import init_distributed, shutdown


def open_pipeline(cfg: SampleConfig, device: torch.device):
    from genzoo.pipeline import load
    from genzoo.zoo.load_official import open_official

    if bool(cfg.run) == bool(cfg.official):
        raise GenzooError("give exactly one of --run DIR or --official KIND --weights FILE")
    if cfg.run:
        return load(cfg.run, device=str(device))
    if not cfg.weights:
        raise GenzooError(f"--official {cfg.official} needs --weights FILE")
    return open_official(cfg, str(device))


def run_sample(cfg: SampleConfig) -> None:
    d = init_distributed(cfg.device or None)
    if cfg.tf32 and d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        pipe = open_pipeline(cfg, d.device)
        options = pipe.options(**cfg.options)  # names checked, strings typed by the family
        interval = options.get("cfg_interval")
        if isinstance(interval, tuple) and len(interval) not in (0, 2):
            raise GenzooError(f"--cfg-interval needs lo,hi; got {interval}")
        labels = make_labels(cfg.num or None, pipe.num_classes, cfg.per_class or None, cfg.seed)
        path = sample_to_npz(
            pipe,
            cfg.out,
            labels,
            d=d,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            grid=cfg.grid or None,
            quiet=cfg.quiet,
            **options,
        )
        if path is not None and not cfg.quiet:
            print(
                f"wrote {path} ({len(labels)} images)" + (f", grid {cfg.grid}" if cfg.grid else "")
            )
    finally:
        shutdown(d)
