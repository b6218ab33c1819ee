"""Presets of the continuous masked family: MAR-B/L/H and eMIGM-XS…H at 256 px on MAR's KL-16
VAE, and a tiny one of each on pixels for tests and the CPU demo.

The published models need the VAE's weights: pass `--tokenizer mar-kl16:PATH/kl16.ckpt` (or
train from a latent cache). eMIGM is the same family and backbone with its own switches: the
mask token tied to the null class, one exp-schedule mask fraction per batch, the stochastic
γ(s)/γ(t) reveal; its guidance window is a sampling option (`cfg_interval`, e.g. (0.1, 0.3)
for eMIGM-B with 16 steps).
"""

from __future__ import annotations

from genzoo.backbones.mar import MARConfig
from genzoo.config import RunConfig
from genzoo.families.masked_continuous import MaskedContinuousConfig
from genzoo.tokenizers.mar_vae import MARVAEConfig
from genzoo.tokenizers.pixels import PixelsConfig
from genzoo.zoo.mar import MAR_SIZES

# eMIGM at 256 (width, depth of encoder and of decoder, heads, head depth, head width).
EMIGM_SIZES = {
    "xs": (448, 10, 8, 3, 1024),
    "s": (512, 12, 8, 3, 1024),
    "b": (768, 12, 12, 6, 1024),
    "l": (1024, 16, 16, 8, 1280),
    "h": (1280, 20, 16, 12, 1536),
}
# Small enough for a CPU test: 4×4 patches of a 16×16 pixel image are 16 tokens of 48 values.
TINY_MAR = dict(
    patch_size=4, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2,
    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, buffer_size=4, diffloss_d=2,
    diffloss_w=32, attn_dropout=0.0, proj_dropout=0.0, num_sampling_steps="10",
    diffusion_batch_mul=2,
)  # fmt: skip
EMIGM_FAMILY = dict(train_law="batch", train_schedule="exp", rounding="round", min_masked=2,
                    schedule="exp", reveal="stochastic")  # fmt: skip


def _training(cfg: RunConfig) -> RunConfig:
    # MAR's recipe (main_mar.py): AdamW(0.9, 0.95), lr 1e-4 per 256 images at batch 2048,
    # weight decay 0.02, gradient clip 3, EMA 0.9999
    t = cfg.train
    t.batch_size, t.lr, t.betas, t.weight_decay = 2048, 8e-4, (0.9, 0.95), 0.02
    t.grad_clip, t.ema_decay = 3.0, 0.9999
    return cfg


def _tiny(cfg: RunConfig) -> RunConfig:
    cfg.tokenizer = PixelsConfig()
    cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size, cfg.train.grad_clip = (
        1e-3, 0.0, 8, 1.0,
    )  # fmt: skip
    return cfg


def _mar(key: str) -> RunConfig:
    size = key.removeprefix("mar-")
    model = MARConfig(**(TINY_MAR if size == "tiny" else MAR_SIZES[size.upper()]))
    cfg = RunConfig(preset=key, model=model, family=MaskedContinuousConfig(),
                    tokenizer=MARVAEConfig())  # fmt: skip
    return _tiny(_training(cfg)) if size == "tiny" else _training(cfg)


def _emigm(key: str) -> RunConfig:
    size = key.removeprefix("emigm-")
    if size == "tiny":
        model = MARConfig(**TINY_MAR, mask_token_is_null=True)
    else:
        width, depth, heads, head_depth, head_width = EMIGM_SIZES[size]
        model = MARConfig(
            encoder_embed_dim=width, encoder_depth=depth, encoder_num_heads=heads,
            decoder_embed_dim=width, decoder_depth=depth, decoder_num_heads=heads,
            diffloss_d=head_depth, diffloss_w=head_width, mask_token_is_null=True,
        )  # fmt: skip
    family = MaskedContinuousConfig(**EMIGM_FAMILY, t_min=0.2 if size == "h" else 0.0)
    cfg = RunConfig(preset=key, model=model, family=family, tokenizer=MARVAEConfig())
    return _tiny(_training(cfg)) if size == "tiny" else _training(cfg)


BUILDERS = {
    **{f"mar-{s}": _mar for s in ("b", "l", "h", "tiny")},
    **{f"emigm-{s}": _emigm for s in (*EMIGM_SIZES, "tiny")},
}
PRESETS = list(BUILDERS)


def preset(key: str) -> RunConfig:
    return BUILDERS[key](key)
