"""`kl-vae:PATH_OR_HUB_ID`: a diffusers `AutoencoderKL` (e.g. the SD-VAE used by DiT and SiT).

encode(x) = (mean + std * noise) * scale, one sample of the VAE posterior (DiT's
`latent_dist.sample().mul_(0.18215)`), and decode(z) = vae.decode(z / scale).sample.
The stride is 2 ** (len(block_out_channels) - 1) (8 for the SD-VAE); channels = latent_channels.

The source is a local folder written by `save_pretrained` (or a pipeline folder with a `vae/`
sub-folder), or a Hub id such as `stabilityai/sd-vae-ft-ema`, which is read from the local
Hugging Face cache first and fetched only when the environment allows it (HF_HUB_OFFLINE unset).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from genzoo.errors import GenzooError
from genzoo.tokenizers.base import Generators, Tokenizer, gaussian_noise

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# A VAE is small: plain loading, which also needs no `accelerate` (and prints no advice about it).
LOAD_OPTIONS = {"low_cpu_mem_usage": False}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_autoencoder_kl(source: str):
    """The `AutoencoderKL` named by a local folder or a Hub id; GenzooError when unavailable."""
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise GenzooError(f"kl-vae:{source}: is a file; pass the folder holding config.json")
        if (path / "config.json").exists():
            subfolder = None
        elif (path / "vae" / "config.json").exists():
            subfolder = "vae"  # a full diffusers pipeline folder
        else:
            raise GenzooError(
                f"kl-vae:{source}: no config.json in this folder; pass a folder written by "
                "diffusers' AutoencoderKL.save_pretrained (config.json + weights)"
            )
        try:
            return AutoencoderKL.from_pretrained(path, subfolder=subfolder, **LOAD_OPTIONS)
        except Exception as exc:  # diffusers raises several types for bad folders
            raise GenzooError(
                f"kl-vae:{source}: cannot load an AutoencoderKL from this folder ({exc})"
            ) from exc

    if not HUB_ID.fullmatch(source):
        raise GenzooError(
            f"kl-vae:{source}: no such folder, and it is not a Hugging Face Hub id (owner/name); "
            "pass the path of a downloaded VAE folder"
        )
    try:
        return AutoencoderKL.from_pretrained(source, local_files_only=True, **LOAD_OPTIONS)
    except Exception as cached_error:
        if _offline():
            failure: Exception = cached_error
        else:
            try:
                return AutoencoderKL.from_pretrained(source, **LOAD_OPTIONS)
            except Exception as exc:
                failure = exc
    raise GenzooError(
        f"kl-vae:{source}: cannot fetch this VAE from the Hugging Face Hub ({failure}). On a "
        f"machine with network access run `huggingface-cli download {source} --local-dir DIR`, "
        "copy DIR here and pass kl-vae:DIR"
    ) from failure


@dataclass
class KLVAEConfig:
    kind: ClassVar[str] = "kl-vae"

    source: str = ""  # a diffusers VAE folder or a Hub id (e.g. stabilityai/sd-vae-ft-mse)
    scale: float = 0.18215  # latents are multiplied by this (0.18215 for the SD-VAE)


class KLVAETokenizer(Tokenizer):
    Config = KLVAEConfig

    @classmethod
    def from_config(cls, cfg: KLVAEConfig) -> KLVAETokenizer:
        if not cfg.source:
            raise GenzooError(
                "tokenizer 'kl-vae' needs a source: kl-vae:PATH (a diffusers VAE folder) or "
                "kl-vae:OWNER/NAME (a Hub id such as stabilityai/sd-vae-ft-ema)"
            )
        return cls(cfg.source, cfg.scale)

    def __init__(self, source: str, scale: float = 0.18215) -> None:
        super().__init__()
        self.vae = load_autoencoder_kl(source)
        config = self.vae.config
        self.spec = f"kl-vae:{source}"
        self.stride = 2 ** (len(config.block_out_channels) - 1)
        self.channels = int(config.latent_channels)
        self.scale = float(scale)
        self.freeze()

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        posterior = self.vae.encode(x.to(self._dtype)).latent_dist
        noise = gaussian_noise(posterior.mean.shape, generator, posterior.mean.device, self._dtype)
        return (posterior.mean + posterior.std * noise) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self._dtype) / self.scale).sample
