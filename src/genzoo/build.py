"""Assemble a generator from a RunConfig: tokenizer + family + backbone, derived sizes filled."""

from __future__ import annotations

from genzoo.config import RunConfig
from genzoo.errors import GenzooError

# Fields that change what is trained; changing any of them on an existing run is refused.
# Everything else (steps, logging cadence, eval settings, quiet, workers) may change on resume.
RESUMABLE_FIELDS = {
    "train.steps",
    "train.quiet",
    "train.log_every",
    "train.ckpt_every",
    "train.keep_ckpts",
    "train.grid_every",
    "train.grid_cfg",
    "train.grid_steps",
    "train.eval_every",
    "train.eval_num",
    "train.eval_ref",
    "train.eval_metrics",
    "train.compile",
    "data.workers",
    "data.skip_bad",
}


def resolve(cfg: RunConfig, dataset, tokenizer) -> RunConfig:
    """Fill (in place) the fields that follow from the data and tokenizer; check sizes fit."""
    m = cfg.model
    res = cfg.data.res
    stride = tokenizer.stride
    if res % (m.patch_size * stride):
        raise GenzooError(
            f"resolution {res} is not divisible by patch size {m.patch_size} × tokenizer stride "
            f"{stride} = {m.patch_size * stride}; pick --res as a multiple of "
            f"{m.patch_size * stride} or another preset/patch size"
        )
    m.input_size = res // stride
    m.in_channels = tokenizer.channels
    m.num_classes = dataset.num_classes
    m.learn_sigma = cfg.family == "diffusion" and cfg.diffusion.learn_sigma
    if m.time_cond == "tdln":  # TD-LN reads time in [0, 1]; diffusion feeds integer indices
        m.tdln_time_scale = (
            1.0 / cfg.diffusion.diffusion_steps if cfg.family == "diffusion" else 1.0
        )
    return cfg


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def incompatible_fields(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = flat(old.to_dict()), flat(new.to_dict())
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k in RESUMABLE_FIELDS:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, list | tuple) and isinstance(vb, list | tuple):
            va, vb = list(va), list(vb)
        if va != vb:
            diffs.append(f"{k}: run has {va!r}, command asks for {vb!r}")
    return diffs


def build_data_and_tokenizer(cfg: RunConfig):
    from genzoo.data import build_dataset
    from genzoo.tokenizers import build_tokenizer

    dataset = build_dataset(
        cfg.data.spec, cfg.data.res, train=True, seed=cfg.data.seed, skip_bad=cfg.data.skip_bad
    )
    if getattr(dataset, "is_latent", False):
        meta = dataset.meta
        if cfg.tokenizer.spec not in ("pixels", meta["tokenizer"]):
            raise GenzooError(
                f"--data {cfg.data.spec} holds latents of tokenizer {meta['tokenizer']!r} but "
                f"--tokenizer is {cfg.tokenizer.spec!r}; drop --tokenizer or make them agree"
            )
        cfg.tokenizer.spec = meta["tokenizer"]
        cfg.tokenizer.scale = float(meta.get("scale", cfg.tokenizer.scale))
        if int(meta["res"]) != cfg.data.res:
            raise GenzooError(
                f"--data {cfg.data.spec} was encoded at resolution {meta['res']}, "
                f"not --res {cfg.data.res}; pass --res {meta['res']}"
            )
    tokenizer = build_tokenizer(cfg.tokenizer.spec, scale=cfg.tokenizer.scale)
    return dataset, tokenizer


def build_model(cfg: RunConfig):
    from genzoo.backbones import build_backbone

    return build_backbone(cfg.model)
