"""Assemble a generator from a RunConfig: tokenizer + family + backbone, derived sizes filled."""

from __future__ import annotations

from genzoo.config import RunConfig, tokenizer_section
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


def resolve(cfg: RunConfig, dataset, tokenizer, family=None) -> RunConfig:
    """Fill (in place) the model fields that follow from the data, tokenizer and family."""
    from genzoo.backbones import BACKBONES
    from genzoo.families import build_family

    family = family if family is not None else build_family(cfg)
    backbone = BACKBONES.get(BACKBONES.kind_of(cfg.model))
    backbone.resolve(
        cfg.model,
        res=cfg.data.res,
        tokenizer=tokenizer,
        num_classes=dataset.num_classes,
        family=family,
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
    """The training dataset and the tokenizer; a cache of latents or token ids names its own
    tokenizer, which then replaces the default `pixels` (and must agree with any other)."""
    from genzoo.data import build_dataset
    from genzoo.tokenizers import TOKENIZERS, build_tokenizer

    dataset = build_dataset(
        cfg.data.spec, cfg.data.res, train=True, seed=cfg.data.seed, skip_bad=cfg.data.skip_bad
    )
    if getattr(dataset, "is_latent", False):
        meta = dataset.meta
        cached = RunConfig.from_dict(
            {"tokenizer": tokenizer_section(meta["tokenizer"], meta.get("scale"))}
        ).tokenizer
        unset = (TOKENIZERS.default_config("pixels"), TOKENIZERS.default_config(cached.kind))
        if cfg.tokenizer not in unset and cfg.tokenizer != cached:
            raise GenzooError(
                f"--data {cfg.data.spec} holds the output of tokenizer {meta['tokenizer']!r} but "
                f"the run's tokenizer is {cfg.tokenizer!r}; drop --tokenizer or make them agree"
            )
        if int(meta["res"]) != cfg.data.res:
            raise GenzooError(
                f"--data {cfg.data.spec} was encoded at resolution {meta['res']}, "
                f"not --res {cfg.data.res}; pass --res {meta['res']}"
            )
        cfg.tokenizer = cached
        tokenizer = build_tokenizer(cfg.tokenizer)
        expected = tuple(tokenizer.latent_shape(cfg.data.res))
        if tuple(dataset.latent_shape) != expected:
            raise GenzooError(
                f"--data {cfg.data.spec} holds items of shape {tuple(dataset.latent_shape)}, but "
                f"tokenizer {meta['tokenizer']!r} makes {expected} at resolution "
                f"{cfg.data.res}; re-encode the data with this tokenizer"
            )
    else:
        tokenizer = build_tokenizer(cfg.tokenizer)
    return dataset, tokenizer


def build_model(cfg: RunConfig):
    from genzoo.backbones import build_backbone

    return build_backbone(cfg.model)
