"""`genzoo.load_official` / `genzoo.load_official_tokenizer`: published weights that sample like
the originals. One loader per official model, named by kind; each lives in its own zoo file."""

from __future__ import annotations

import importlib

import torch

from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.diffusion import DiffusionConfig
from genzoo.families.flow import FlowConfig
from genzoo.pipeline import Pipeline
from genzoo.zoo.official import OFFICIAL_KINDS, build_official

# Official DiT and SiT guide only the first 3 latent channels (their forward_with_cfg).
OFFICIAL_CFG_CHANNELS = 3

# kind -> "module:function(weights, *, device=None, **kwargs) -> Pipeline"
OFFICIAL_LOADERS: dict[str, str] = {
    "dit": "genzoo.zoo.load_official:load_dit_or_sit",
    "sit": "genzoo.zoo.load_official:load_dit_or_sit",
    "llamagen": "genzoo.zoo.llamagen:load_llamagen_pipeline",
    "rar": "genzoo.zoo.rar:load_rar",
    "biggan": "genzoo.zoo.biggan:load_biggan",
    "biggan-deep": "genzoo.zoo.biggan:load_biggan_deep",
    "var": "genzoo.zoo.var:load_var",
    "maskgit": "genzoo.zoo.maskgit:load_maskgit",
    "mar": "genzoo.zoo.mar:load_mar",
}
# kind -> "module:function(sample_config, device) -> Pipeline": what `genzoo sample --official`
# passes to the loader (the image size, a VAE or VQ decoder, a preset name)
OFFICIAL_FROM_CLI: dict[str, str] = {
    "dit": "genzoo.zoo.load_official:dit_or_sit_from_cli",
    "sit": "genzoo.zoo.load_official:dit_or_sit_from_cli",
    "llamagen": "genzoo.zoo.llamagen:llamagen_from_cli",
    "biggan": "genzoo.zoo.biggan_pipeline:biggan_from_cli",
    "biggan-deep": "genzoo.zoo.biggan_pipeline:biggan_deep_from_cli",
    "var": "genzoo.zoo.var:var_from_cli",
    "maskgit": "genzoo.zoo.maskgit:maskgit_from_cli",
    "rar": "genzoo.zoo.rar:rar_from_cli",
    "mar": "genzoo.zoo.mar:mar_from_cli",
}
# kind -> "module:function(weights, *, device=None, **kwargs) -> Tokenizer"
OFFICIAL_TOKENIZERS: dict[str, str] = {
    "llamagen-vq": "genzoo.tokenizers.vq:load_official_vq",
    "var-vqvae": "genzoo.zoo.var:load_var_vqvae",
    "maskgit-vqgan": "genzoo.tokenizers.maskgit_vqgan:load_maskgit_vqgan",
    "mar-kl16": "genzoo.tokenizers.mar_vae:load_official_mar_vae",
}


def _resolve(table: dict[str, str], kind: str, what: str):
    key = kind.lower()
    if key not in table:
        known = ", ".join(table)
        raise GenzooError(f"unknown official {what} kind {kind!r}; choose one of: {known}")
    module, _, name = table[key].partition(":")
    return key, getattr(importlib.import_module(module), name)


def load_official(kind: str, weights, *, device: str | None = None, **kwargs):
    """Published weights of model `kind` (see OFFICIAL_LOADERS) as a pipeline.

    `weights`: the released file (.pt / .pth / .bin / .safetensors) or a state dict in memory;
    `kwargs`: the official constructor arguments (names as in the official code), plus
    loader-specific ones (`vae=` for latent diffusion models, `vq=` for token models).
    """
    key, loader = _resolve(OFFICIAL_LOADERS, kind, "model")
    if key in OFFICIAL_KINDS:
        return loader(key, weights, device=device, **kwargs)
    return loader(weights, device=device, **kwargs)


def load_official_tokenizer(kind: str, weights, *, device: str | None = None, **kwargs):
    """A published tokenizer (e.g. "llamagen-vq") with the official constructor arguments."""
    _, loader = _resolve(OFFICIAL_TOKENIZERS, kind, "tokenizer")
    return loader(weights, device=device, **kwargs)


def open_official(sample_cfg, device: str):
    """The pipeline `genzoo sample --official KIND --weights FILE …` samples from."""
    _, opener = _resolve(OFFICIAL_FROM_CLI, sample_cfg.official, "model")
    return opener(sample_cfg, device)


def dit_or_sit_from_cli(c, device: str) -> Pipeline:
    kwargs = {"input_size": c.image_size // 8}
    if c.official_preset:
        kwargs["preset"] = c.official_preset
    return load_official(c.official, c.weights, vae=c.vae, device=device, **kwargs)


def load_dit_or_sit(
    kind: str,
    weights,
    *,
    vae: str | None = None,
    vae_scale: float = 0.18215,
    device: str | None = None,
    **kwargs,
) -> Pipeline:
    """Load official DiT ("dit") or SiT ("sit") weights.

    `weights`: a `.pt` (plain state dict, or a training checkpoint with "model"/"ema"; "ema" is
    preferred as the official loader does), a `.safetensors` file, or a state dict in memory.
    `kwargs`: the official constructor arguments (input_size, patch_size, in_channels,
    hidden_size, depth, num_heads, mlp_ratio, class_dropout_prob, num_classes, learn_sigma) or
    `preset="DiT-XL/2"` with `input_size`; anything not given is inferred from the weights.
    `vae`: an SD-VAE folder or hub id to decode latents into images (optional for
    `sample_latents`). The returned pipeline is in eval mode; `pipeline.model(x, t, y)` is the
    official forward (DiT: t is the integer diffusion index, output 2C channels with learned
    sigma; SiT: t in [0, 1], output C channels as the official SiT forward).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, mcfg = build_official(kind, weights, **kwargs)
    if kind == "sit":
        model.returned_channels = mcfg.in_channels
        family = FlowConfig(path="linear")
    else:  # the official DiT process: linear betas, 1000 steps, eps, learned-range variance
        family = DiffusionConfig(
            noise_schedule="linear", diffusion_steps=1000, predict="eps",
            learn_sigma=mcfg.learn_sigma,
        )  # fmt: skip
    cfg = RunConfig(preset=f"official-{kind}", model=mcfg, family=family)
    tokenizer, stride = None, 8
    if vae:
        from genzoo.tokenizers import build_tokenizer
        from genzoo.tokenizers.kl_vae import KLVAEConfig

        cfg.tokenizer = KLVAEConfig(source=vae, scale=vae_scale)
        tokenizer = build_tokenizer(cfg.tokenizer).to(dev)
        stride = tokenizer.stride
    cfg.data.res = mcfg.input_size * stride
    from genzoo.families import build_family

    return Pipeline(
        model.to(dev).eval(),
        build_family(cfg),
        tokenizer,
        cfg,
        dev,
        default_options={"cfg_channels": OFFICIAL_CFG_CHANNELS},
        latent_shape=(mcfg.in_channels, mcfg.input_size, mcfg.input_size),
    )
