"""`genzoo.load_official`: published DiT / SiT weights as a Pipeline sampling like the originals."""

from __future__ import annotations

import torch

from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families import build_family
from genzoo.pipeline import Pipeline
from genzoo.zoo.official import OFFICIAL_KINDS, build_official

# Official DiT and SiT guide only the first 3 latent channels (their forward_with_cfg).
OFFICIAL_CFG_CHANNELS = 3


def load_official(
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
    sigma; SiT: t in [0, 1], and the flow family keeps the first C channels).
    """
    kind = kind.lower()
    if kind not in OFFICIAL_KINDS:
        raise GenzooError(f"unknown official kind {kind!r}; choose one of {OFFICIAL_KINDS}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, mcfg = build_official(kind, weights, **kwargs)
    cfg = RunConfig(preset=f"official-{kind}", family="diffusion" if kind == "dit" else "flow")
    cfg.model = mcfg
    # The official DiT process: linear betas, 1000 steps, epsilon, learned-range variance.
    cfg.diffusion.noise_schedule, cfg.diffusion.diffusion_steps = "linear", 1000
    cfg.diffusion.predict, cfg.diffusion.learn_sigma = "eps", mcfg.learn_sigma
    cfg.flow.path = "linear"
    tokenizer = None
    if vae:
        from genzoo.tokenizers import build_tokenizer

        cfg.tokenizer.spec, cfg.tokenizer.scale = f"kl-vae:{vae}", vae_scale
        tokenizer = build_tokenizer(cfg.tokenizer.spec, scale=vae_scale).to(dev)
    return Pipeline(
        model.to(dev).eval(),
        build_family(cfg),
        tokenizer,
        cfg,
        dev,
        cfg_channels=OFFICIAL_CFG_CHANNELS,
    )
