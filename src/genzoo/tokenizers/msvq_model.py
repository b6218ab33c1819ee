"""Training VAR's multi-scale VQ-VAE: backbone `msvq`, trained by the `vqgan` family like the VQ.

The official repository ships the VQ-VAE's forward but no training code. `MSVQModel` is the
tokenizer's network (same keys, so a trained run's weights are a `vae_ch160v4096z32.pth`-style
file) with that forward: the residual quantisation of `encode`, done with gradients, and

    codebook = 1/K Σ_k mean(f̂_k − sg[f])²,   commit = β/K Σ_k mean(sg[f̂_k] − f)²,

f̂_k being the accumulated codes after scale k (the official `VectorQuantizer2` loss, split into
its two halves); the decoder sees f̂ with the straight-through estimator, f + sg[f̂ − f].
The ids of a scale are the nearest codebook rows of the remaining residual, as in `encode`.

    genzoo train --preset msvq-tiny --data shapes --out runs/msvq        # the tokenizer
    genzoo train --preset var-tiny --tokenizer msvq:runs/msvq --data shapes --out runs/var
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import GenzooError
from genzoo.tokenizers.msvq import MSVQConfig, MultiScaleVQTokenizer

ARCHITECTURE = tuple(f.name for f in dataclasses.fields(MSVQConfig) if f.name != "source")


class MSVQModel(MultiScaleVQTokenizer):
    """The multi-scale VQ-VAE as a trainable model: `forward(x)` → (reconstruction, losses)."""

    Config = MSVQConfig

    @staticmethod
    def resolve(cfg: MSVQConfig, *, res: int, tokenizer, num_classes: int, family) -> None:
        """It trains on images (tokenizer `pixels`) whose side is 16 × the last scale."""
        if getattr(tokenizer, "stride", 1) != 1 or getattr(tokenizer, "discrete", False):
            raise GenzooError(
                f"model.kind=msvq trains on images, but the run's tokenizer is {tokenizer.spec!r}; "
                "set tokenizer=pixels"
            )
        nums = tuple(cfg.v_patch_nums)
        if res != 16 * nums[-1]:
            raise GenzooError(
                f"model.v_patch_nums={nums} ends at a {nums[-1]}×{nums[-1]} token map, which codes "
                f"{16 * nums[-1]}-pixel images, not --res {res}: use --res {16 * nums[-1]} or a "
                f"schedule ending at {res // 16}"
            )

    @classmethod
    def from_config(cls, cfg: MSVQConfig) -> MSVQModel:
        """A freshly initialised model, or with `source` the weights to start from."""
        model = cls(cfg)
        if cfg.source:
            from genzoo.zoo.var import load_var_vqvae

            args = {name: getattr(cfg, name) for name in ARCHITECTURE}
            start = load_var_vqvae(cfg.source, device="cpu", **args)
            model.load_state_dict(start.state_dict())
        return model

    def __init__(self, cfg: MSVQConfig):
        super().__init__(cfg)
        self.requires_grad_(True)  # the tokenizer base freezes itself

    def train(self, mode: bool = True) -> MSVQModel:
        return nn.Module.train(self, mode)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output weight (for the adaptive adversarial weight)."""
        return self.decoder.conv_out.weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f = self.quant_conv(self.encoder(x))
        f_sg = f.detach()
        rest, f_hat = f_sg.clone(), torch.zeros_like(f_sg)
        codebook, commit, used = f.new_zeros(()), f.new_zeros(()), []
        for k in range(self.num_scales):
            idx = self.nearest_codes(rest, k)
            h = self.scale_contribution(self.code_map(idx, k), k, contiguous=True)
            f_hat = f_hat + h
            rest.sub_(h.detach())
            codebook = codebook + F.mse_loss(f_hat, f_sg)
            commit = commit + F.mse_loss(f_hat.detach(), f)
            used.append(idx.flatten())
        x_hat = self.decoder(self.post_quant_conv(f_hat.detach() - f_sg + f))
        usage = torch.unique(torch.cat(used)).numel() / self.vocab_size
        return x_hat, {
            "codebook": codebook / self.num_scales,
            "commit": self.cfg.beta * commit / self.num_scales,
            "entropy": f.new_zeros(()),
            "usage": f.new_tensor(usage),  # fraction of the codebook this batch used
        }


def tokenizer_from_run(cfg: MSVQConfig) -> MultiScaleVQTokenizer:
    """The frozen tokenizer of a run that trained an `msvq` model (its newest EMA weights).

    The section's architecture must be the run's; its scale schedule may differ (the codebook
    and φ convolutions serve any schedule, as the official loader allows)."""
    from genzoo.config import RunConfig
    from genzoo.train.checkpoint import latest_checkpoint
    from genzoo.zoo.official import read_state_dict
    from genzoo.zoo.var import load_var_vqvae

    run = Path(cfg.source).expanduser()
    if not (run / "config.json").is_file():
        raise GenzooError(f"msvq:{run}: not a genzoo run directory (no config.json)")
    trained = RunConfig.load(run / "config.json").model
    if not isinstance(trained, MSVQConfig):
        raise GenzooError(
            f"msvq:{run}: this run trained a {type(trained).__name__}, not a multi-scale VQ-VAE; "
            "pass a run of model.kind=msvq"
        )
    differ = [
        f"tokenizer.{name}={getattr(cfg, name)!r} but the run has {getattr(trained, name)!r}"
        for name in ARCHITECTURE
        if name != "v_patch_nums" and getattr(cfg, name) != getattr(trained, name)
    ]
    if differ:
        raise GenzooError(
            f"msvq:{run} does not fit the run's tokenizer section: "
            + "; ".join(differ)
            + ". Set those fields as the tokenizer run has them (--set tokenizer.NAME=VALUE)"
        )
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise GenzooError(f"msvq:{run}: the run has no checkpoint yet; train it first")
    state = read_state_dict(ckpt.path / "ema.safetensors")
    tokenizer = load_var_vqvae(
        state, device="cpu", **{name: getattr(cfg, name) for name in ARCHITECTURE}
    )
    tokenizer.cfg = dataclasses.replace(tokenizer.cfg, source=cfg.source)
    tokenizer.spec = f"msvq:{cfg.source}"
    return tokenizer
