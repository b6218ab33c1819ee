"""Tokenizers: image <-> latents or token ids. `TOKENIZERS` maps each `tokenizer.kind` to its class.

Spec strings name one with its source: "pixels" (identity), "kl-vae:PATH_OR_HUB_ID" (a diffusers
AutoencoderKL), "vq:RUN_OR_FILE" (a trained VQ tokenizer).
"""

from __future__ import annotations

from genzoo.errors import GenzooError
from genzoo.registry import Registry
from genzoo.tokenizers.base import Tokenizer, gaussian_noise

TOKENIZERS = Registry(
    "tokenizer",
    {
        "pixels": "genzoo.tokenizers.pixels:PixelTokenizer",
        "kl-vae": "genzoo.tokenizers.kl_vae:KLVAETokenizer",
        "vq": "genzoo.tokenizers.vq:VQTokenizer",
        "msvq": "genzoo.tokenizers.msvq:MultiScaleVQTokenizer",
        "maskgit-vqgan": "genzoo.tokenizers.maskgit_vqgan:MaskGITVQGANTokenizer",
        "mar-kl16": "genzoo.tokenizers.mar_vae:MARVAETokenizer",
    },
)
KNOWN_SPECS = (
    "pixels", "kl-vae:PATH_OR_HUB_ID", "vq:RUN_OR_FILE", "msvq:FILE", "maskgit-vqgan:FILE",
    "mar-kl16:FILE",
)  # fmt: skip

__all__ = ["KNOWN_SPECS", "TOKENIZERS", "Tokenizer", "build_tokenizer", "gaussian_noise"]


def tokenizer_config(spec: str, scale: float | None = None):
    """The tokenizer config section named by a spec string such as "kl-vae:PATH"."""
    from genzoo.config import _from_dict, tokenizer_section

    section = tokenizer_section(spec, scale)
    kind = section.pop("kind")
    if kind not in TOKENIZERS:
        raise GenzooError(f"unknown tokenizer {spec!r}; known tokenizers: {', '.join(KNOWN_SPECS)}")
    cls = TOKENIZERS.config_class(kind)
    if section.get("source") and "source" not in cls.__dataclass_fields__:
        raise GenzooError(f"tokenizer {kind!r} takes no source; got {spec!r}")
    return _from_dict(cls, section, "tokenizer.")


def build_tokenizer(spec, scale: float | None = None) -> Tokenizer:
    """The tokenizer of a config section, or of a spec string ("kl-vae:PATH", scale optional)."""
    cfg = tokenizer_config(spec, scale) if isinstance(spec, str) else spec
    return TOKENIZERS.build(cfg)
