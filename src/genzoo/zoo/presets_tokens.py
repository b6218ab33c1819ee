"""Presets of the token and adversarial families: the tokenizers they train on, LlamaGen, RAR,
VAR and BigGAN at their published sizes, and a tiny one of each for tests and the CPU demo.

A generator preset on tokens needs the trained tokenizer: pass it with `--tokenizer vq:RUN` (or
train from a token cache, `--data tokens:DIR`, which names its tokenizer).
"""

from __future__ import annotations

from genzoo.backbones.biggan import PRESETS as BIGGAN_PRESETS
from genzoo.backbones.biggan import biggan_preset
from genzoo.backbones.gpt import LLAMAGEN_SIZES, GPTConfig
from genzoo.backbones.rar import RAR_SIZES, RARConfig
from genzoo.backbones.var import VAR_SIZES, var_preset
from genzoo.config import RunConfig
from genzoo.families.autoregressive import ARConfig
from genzoo.families.gan import GANConfig
from genzoo.families.next_scale import NextScaleConfig
from genzoo.families.vqgan import VQGANConfig
from genzoo.tokenizers.vq import VQTokenizerConfig
from genzoo.tokenizers.vq_model import PRESETS as VQ_MULTS
from genzoo.tokenizers.vq_model import VQConfig

# A VQ small enough to train on CPU: stride 4 (8×8 codes at 32 px), 256 codes.
TINY_VQ = dict(
    codebook_size=256, codebook_embed_dim=8, encoder_ch_mult=(1, 2, 2),
    decoder_ch_mult=(1, 2, 2), z_channels=32, ch=32,
)  # fmt: skip
TINY_GPT = dict(dim=128, n_layer=4, n_head=4, multiple_of=32, token_dropout_p=0.0,
                resid_dropout_p=0.0, ffn_dropout_p=0.0)  # fmt: skip


def _vq(key: str) -> RunConfig:
    if key == "vq16-tiny":
        model = VQConfig(**TINY_VQ)
    else:
        mult = VQ_MULTS["VQ-16" if key == "vq16" else "VQ-8"]
        model = VQConfig(encoder_ch_mult=mult, decoder_ch_mult=mult)
    cfg = RunConfig(preset=key, model=model, family=VQGANConfig())
    # LlamaGen's tokenizer recipe: Adam(0.9, 0.95), lr 1e-4, no weight decay, clip 1
    cfg.train.lr, cfg.train.betas, cfg.train.ema_decay = 1e-4, (0.9, 0.95), 0.999
    if key == "vq16-tiny":
        cfg.family.disc_start, cfg.family.perceptual_weight = 200, 0.1
        cfg.train.lr = 1e-3
    return cfg


def _llamagen(key: str) -> RunConfig:
    size = key.removeprefix("llamagen-")
    fields = TINY_GPT if size == "tiny" else LLAMAGEN_SIZES[size.upper()]
    cfg = RunConfig(preset=key, model=GPTConfig(**fields), family=ARConfig())
    cfg.tokenizer = VQTokenizerConfig()
    # LlamaGen: AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.05, clip 1
    cfg.train.lr, cfg.train.betas, cfg.train.weight_decay = 1e-4, (0.9, 0.95), 0.05
    if size == "tiny":
        cfg.train.lr, cfg.train.weight_decay = 1e-3, 0.0
    return cfg


def _rar(key: str) -> RunConfig:
    size = key.removeprefix("rar-").upper()
    model = RARConfig(**RAR_SIZES[size])
    # RAR: random order with probability 1 until 1/4 of training, annealed to 0 at 3/4
    family = ARConfig(order="random", anneal_start=0.25, anneal_end=0.75)
    cfg = RunConfig(preset=key, model=model, family=family, tokenizer=VQTokenizerConfig())
    cfg.train.lr, cfg.train.betas, cfg.train.weight_decay = 4e-4, (0.9, 0.96), 0.03
    return cfg


# VAR's multi-scale VQ-VAE as the spec's tiny test model: 64 px, 4 scales (L = 30), 64 codes.
TINY_MSVQ = dict(ch=32, z_channels=8, vocab_size=64, v_patch_nums=(1, 2, 3, 4))
TINY_VAR = dict(depth=2, embed_dim=64, num_heads=2)


def _msvq(key: str) -> RunConfig:
    """VAR's VQ-VAE (the released `vae_ch160v4096z32` architecture, or the tiny one) trained by
    the vqgan family; the official repository has no recipe, so LlamaGen's VQ one is used."""
    from genzoo.tokenizers.msvq import MSVQConfig

    model = MSVQConfig(**TINY_MSVQ) if key == "msvq-tiny" else MSVQConfig()
    cfg = RunConfig(preset=key, model=model, family=VQGANConfig())
    cfg.data.res = 16 * model.v_patch_nums[-1]
    cfg.train.lr, cfg.train.betas, cfg.train.ema_decay = 1e-4, (0.9, 0.95), 0.999
    if key == "msvq-tiny":
        cfg.family.disc_start, cfg.family.perceptual_weight = 200, 0.1
        cfg.train.lr = 1e-3
    return cfg


def _var(key: str) -> RunConfig:
    from genzoo.backbones.var import VARConfig
    from genzoo.tokenizers.msvq import MSVQConfig

    if key == "var-tiny":
        model, tokenizer = VARConfig(**TINY_VAR), MSVQConfig(**TINY_MSVQ)
    else:
        model = var_preset(key.removeprefix("var-"))
        tokenizer = MSVQConfig(v_patch_nums=model.patch_nums)  # d36: the 512 px schedule
    cfg = RunConfig(preset=key, model=model, family=NextScaleConfig(), tokenizer=tokenizer)
    cfg.data.res = 16 * tokenizer.v_patch_nums[-1]
    # the official trainer: AdamW, betas (0.9, 0.95), weight decay 0.05
    cfg.train.lr, cfg.train.betas, cfg.train.weight_decay = 1e-4, (0.9, 0.95), 0.05
    if key == "var-tiny":
        cfg.train.lr, cfg.train.weight_decay = 1e-3, 0.0
    return cfg


def _biggan(key: str) -> RunConfig:
    cfg = RunConfig(preset=key, model=biggan_preset(key), family=GANConfig())
    # one micro-batch per D update: train.batch_size counts the real images of all d_steps
    cfg.train.ema_decay, cfg.train.grad_clip = 0.9999, 0.0
    cfg.train.grad_accum = cfg.family.d_steps
    if key == "biggan-tiny":
        cfg.family.ema_start = 0
    return cfg


BUILDERS = {
    **{k: _vq for k in ("vq16", "vq8", "vq16-tiny")},
    **{f"llamagen-{s.lower()}": _llamagen for s in [*LLAMAGEN_SIZES, "tiny"]},
    **{f"rar-{s.lower()}": _rar for s in RAR_SIZES},
    **{f"var-{s}": _var for s in [*VAR_SIZES, "tiny"]},
    **{k: _msvq for k in ("msvq", "msvq-tiny")},
    **{k: _biggan for k in BIGGAN_PRESETS},
}
PRESETS = list(BUILDERS)


def preset(key: str) -> RunConfig:
    return BUILDERS[key](key)
