"""`genzoo sample`: a run or an official checkpoint → one ADM npz (and a grid), torchrun too."""

from __future__ import annotations

import torch

from genzoo.config import SampleConfig
from genzoo.errors import GenzooError
from genzoo.generate import make_labels, sample_to_npz
from genzoo.train.distributed import init_distributed, shutdown


def open_pipeline(cfg: SampleConfig, device: torch.device):
    from genzoo.pipeline import load
    from genzoo.zoo.load_official import load_official

    if bool(cfg.run) == bool(cfg.official):
        raise GenzooError("give exactly one of --run DIR or --official dit|sit --weights FILE")
    if cfg.run:
        return load(cfg.run, device=str(device))
    if not cfg.weights:
        raise GenzooError(f"--official {cfg.official} needs --weights FILE")
    kwargs = {"input_size": cfg.image_size // 8}
    if cfg.official_preset:
        kwargs["preset"] = cfg.official_preset
    return load_official(cfg.official, cfg.weights, vae=cfg.vae, device=str(device), **kwargs)


def run_sample(cfg: SampleConfig) -> None:
    d = init_distributed(cfg.device or None)
    if cfg.tf32 and d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        pipe = open_pipeline(cfg, d.device)
        labels = make_labels(cfg.num or None, pipe.num_classes, cfg.per_class or None, cfg.seed)
        options = {}
        if cfg.sampler == "ddim":
            options["eta"] = cfg.eta
        if cfg.cfg_interval and len(cfg.cfg_interval) != 2:
            raise GenzooError(f"--cfg-interval needs lo,hi; got {cfg.cfg_interval}")
        path = sample_to_npz(
            pipe,
            cfg.out,
            labels,
            d=d,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            grid=cfg.grid or None,
            quiet=cfg.quiet,
            sampler=cfg.sampler or None,
            steps=cfg.steps or None,
            cfg=cfg.cfg,
            cfg_interval=tuple(cfg.cfg_interval) or None,
            **({"cfg_channels": cfg.cfg_channels} if cfg.cfg_channels >= 0 else {}),
            **options,
        )
        if path is not None and not cfg.quiet:
            print(
                f"wrote {path} ({len(labels)} images)" + (f", grid {cfg.grid}" if cfg.grid else "")
            )
    finally:
        shutdown(d)
