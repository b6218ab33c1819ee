"""Tokenizers: image <-> latent codecs. Build one from a spec string with `build_tokenizer`.

Specs: "pixels" (identity) and "kl-vae:PATH_OR_HUB_ID" (a diffusers AutoencoderKL).
"""

from __future__ import annotations

from genzoo.errors import GenzooError
from genzoo.tokenizers.base import Tokenizer, gaussian_noise

KNOWN_SPECS = ("pixels", "kl-vae:PATH_OR_HUB_ID")

__all__ = ["KNOWN_SPECS", "Tokenizer", "build_tokenizer", "gaussian_noise"]


def build_tokenizer(spec: str, scale: float = 0.18215) -> Tokenizer:
    """The tokenizer named by `spec`; `scale` multiplies kl-vae latents (0.18215 for SD-VAE)."""
    kind, _, argument = spec.partition(":")
    if kind == "pixels" and not argument:
        from genzoo.tokenizers.pixels import PixelTokenizer

        return PixelTokenizer()
    if kind == "kl-vae":
        if not argument:
            raise GenzooError(
                "tokenizer 'kl-vae' needs a source: kl-vae:PATH (a diffusers VAE folder) or "
                "kl-vae:OWNER/NAME (a Hub id such as stabilityai/sd-vae-ft-ema)"
            )
        from genzoo.tokenizers.kl_vae import KLVAETokenizer

        return KLVAETokenizer(argument, scale)
    raise GenzooError(f"unknown tokenizer {spec!r}; known tokenizers: {', '.join(KNOWN_SPECS)}")
