"""Presets of the masked family: the released MaskGIT-style generators of 1d-tokenizer at their
published sizes, and a tiny one for tests and the CPU demo.

    maskgit-titok-l32    ImageBert, 32 tokens, 768 wide, 24 layers, 16 heads, MLP 3072
    maskgit-titok-b64    ImageBert, 64 tokens, same sizes
    maskgit-titok-s128   UViTBert, 128 tokens, 1024 wide, 20 layers, 16 heads, MLP 4096
    maskgit-tiny         ImageBert, 64 wide, 2 layers, 4 heads (CPU)

The codebook, token count and classes come from the tokenizer and the data (`--data tokens:DIR`
or `--tokenizer vq:RUN` / `maskgit-vqgan:FILE`). The family follows the official recipe:
per-sample arccos masking, label smoothing 0.1, unmasked positions weighted 0.1, label
dropout 0.1.
"""

from __future__ import annotations

from genzoo.backbones.maskgit import MASKGIT_GENERATORS, MaskGITConfig
from genzoo.config import RunConfig
from genzoo.families.masked import MaskedConfig

TINY_MASKGIT = dict(model_type="ViT", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, dropout=0.0, attn_drop=0.0)  # fmt: skip


def _maskgit(key: str) -> RunConfig:
    size = key.removeprefix("maskgit-")
    fields = TINY_MASKGIT if size == "tiny" else MASKGIT_GENERATORS[size]
    family = MaskedConfig(label_smoothing=0.1, unmasked_weight=0.1)
    cfg = RunConfig(preset=key, model=MaskGITConfig(**fields), family=family)
    if size == "tiny":
        cfg.train.lr = 1e-3
    return cfg


BUILDERS = {f"maskgit-{s}": _maskgit for s in [*MASKGIT_GENERATORS, "tiny"]}
PRESETS = list(BUILDERS)


def preset(key: str) -> RunConfig:
    return BUILDERS[key](key)
