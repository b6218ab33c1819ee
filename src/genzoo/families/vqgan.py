"""The `vqgan` family: trains a VQ-style tokenizer (LlamaGen's `VQModel`, VAR's multi-scale
`MSVQModel`) as VQGAN does, with the loop that trains every other family. A reconstruction
family: it generates nothing from labels.

Each step alternates two updates, as LlamaGen's `vq_train.py`:

1. VQ model: minimise  w1·L1 + w2·L2 + w_p·LPIPS + λ·factor·G_adv + w_c·(codebook + commit +
   entropy), G_adv = −mean D(x̂) (hinge) through a discriminator held fixed;
2. discriminator: minimise  factor·½(mean relu(1 − D(x)) + mean relu(1 + D(sg[x̂]))) on the same
   reconstructions, made before the VQ update.

factor is 0 before `disc_start` (official step count from 1) and 1 after; then neither the
adversarial term nor the discriminator update runs, which changes no weight (their gradients are
zero in the official code). λ = disc_weight, times the adaptive weight when `disc_adaptive`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from genzoo.errors import GenzooError
from genzoo.families.base import Family
from genzoo.tokenizers.vq_losses import (
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_disc_weight,
    disc_factor,
    disc_loss_fn,
    gen_loss_fn,
    reconstruction_losses,
)


@dataclass
class VQGANConfig:
    """Loss weights and the adversary; defaults are LlamaGen's `vq_train.py` ones."""

    kind: ClassVar[str] = "vqgan"
    l1_weight: float = 0.0  # LlamaGen uses L2 alone (reconstruction_loss="l2")
    l2_weight: float = 1.0
    perceptual_weight: float = 1.0
    codebook_weight: float = 1.0  # scales codebook + commit + entropy (LlamaGen: 1)
    disc_weight: float = 0.5
    disc_start: int = 20000
    disc_adaptive: bool = False  # taming's adaptive weight; LlamaGen keeps it off
    disc_loss: str = "hinge"  # "hinge" | "vanilla"
    gen_loss: str = "hinge"  # "hinge" | "non-saturating"
    disc_dim: int = 64
    disc_layers: int = 3
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.95)
    disc_weight_decay: float = 0.0
    vgg_path: str = ""  # torchvision vgg16 weights for LPIPS; empty = random trunk (tests only)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters without gradients for a while (gradients still flow to the inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside a DDP / compile wrapper."""
    while True:
        inner = getattr(module, "_orig_mod", None)
        if inner is None and isinstance(module, nn.parallel.DistributedDataParallel):
            inner = module.module
        if inner is None:
            return module
        module = inner


def no_sync_unless(sync: bool, module: nn.Module):
    """DDP's gradient sync only on the last micro-batch of a step (forward and backward)."""
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def check_vq_style(model: nn.Module) -> None:
    """The models this family trains: forward(x) → (reconstruction, losses with codebook,
    commit and entropy terms), and `last_layer`, the decoder's output weight."""
    if not hasattr(model, "last_layer"):
        raise GenzooError(
            f"the vqgan family trains a VQ-style tokenizer model, got {type(model).__name__}; "
            "set model.kind=vq (LlamaGen's VQ) or model.kind=msvq (VAR's multi-scale VQ-VAE)"
        )


class VQGANTraining(Family):
    kind = "vqgan"
    Config = VQGANConfig
    sample_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__(cfg)
        self.disc_loss = disc_loss_fn(cfg.disc_loss)
        self.gen_loss = gen_loss_fn(cfg.gen_loss)
        self._perceptual: PerceptualLoss | None = None  # built on first use (a VGG16)
        self.disc: PatchDiscriminator | None = None  # set by `auxiliary`, for `loss`

    # -- trainer hooks ----------------------------------------------------------------------
    def auxiliary(self, run_cfg: Any) -> dict[str, nn.Module]:
        self.disc = PatchDiscriminator(3, self.cfg.disc_dim, self.cfg.disc_layers)
        return {"disc": self.disc}

    def make_optimizers(
        self, model: nn.Module, aux: dict[str, nn.Module], train_cfg: Any
    ) -> dict[str, torch.optim.Optimizer]:
        if "disc" not in aux:
            raise GenzooError("the vqgan family needs its discriminator: aux['disc'] is missing")
        optimizers = super().make_optimizers(model, aux, train_cfg)
        optimizers["disc"] = torch.optim.AdamW(
            unwrapped(aux["disc"]).parameters(),
            lr=self.cfg.disc_lr,
            betas=tuple(self.cfg.disc_betas),
            weight_decay=self.cfg.disc_weight_decay,
        )
        return optimizers

    def sample(self, net, y, *, generators, null_label, progress=False, **options):
        raise GenzooError(
            "the vqgan family trains a tokenizer and does not generate images from labels; use "
            "the trained VQ as a tokenizer (reconstruct images, or train a generator on its ids)"
        )

    def save_training_grid(self, pipe: Any, path: Any, train_cfg: Any, dataset: Any) -> Any:
        """Eight training images (top row) above their reconstructions by the EMA model."""
        from genzoo.data.transforms import to_float, to_uint8
        from genzoo.pipeline import write_grid
        from genzoo.tokenizers.rfid import reconstruct

        images = torch.stack([dataset.get(i)[0] for i in range(min(8, len(dataset)))])
        x_hat = reconstruct(pipe.model, to_float(images).to(pipe.device))
        rows = torch.cat([images, to_uint8(x_hat).cpu()]).permute(0, 2, 3, 1).numpy()
        return write_grid(path, rows, rows=2)

    def evaluate_during_training(self, pipe: Any, train_cfg: Any, dataset: Any) -> dict:
        """`--eval-every`: rFID of the EMA model on `train.eval_num` held-out images (Inception
        pool features, weights found as `genzoo eval` finds them) and its codebook usage there."""
        from genzoo.families.vq_evaluation import held_out_reconstruction_metrics

        return held_out_reconstruction_metrics(pipe, train_cfg)

    @property
    def perceptual(self) -> PerceptualLoss:
        if self._perceptual is None:
            self._perceptual = PerceptualLoss(self.cfg.vgg_path)
        return self._perceptual

    # -- losses -----------------------------------------------------------------------------
    def generator_terms(
        self,
        net: nn.Module,
        x: torch.Tensor,
        disc: nn.Module | None,
        step: int,
        *,
        adaptive: bool = False,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The VQ model's loss terms on images x (and the reconstruction)."""
        c = self.cfg
        x_hat, vq = net(x)
        terms = {**reconstruction_losses(x, x_hat), **vq}
        if c.perceptual_weight:
            terms["perceptual"] = self.perceptual.to(x.device)(x, x_hat)
        else:
            terms["perceptual"] = x.new_zeros(())
        rec = c.l1_weight * terms["rec_l1"] + c.l2_weight * terms["rec_l2"]
        rec = rec + c.perceptual_weight * terms["perceptual"]
        loss = rec + c.codebook_weight * (terms["codebook"] + terms["commit"] + terms["entropy"])
        factor = disc_factor(step, c.disc_start) * c.disc_weight
        terms["g_adv"] = x.new_zeros(())
        if disc is not None and factor > 0:
            with frozen(disc):
                terms["g_adv"] = self.gen_loss(disc(x_hat))
            weight = torch.ones((), device=x.device)
            if adaptive and torch.is_grad_enabled():
                last = unwrapped(net).last_layer
                weight = adaptive_disc_weight(rec, terms["g_adv"], last)
                terms["disc_weight"] = weight
            loss = loss + weight * factor * terms["g_adv"]
        terms["loss"] = loss
        return terms, x_hat

    def loss(self, net, z, y, *, generator=None, step: int = 0, total_steps: int = 1) -> dict:
        """The VQ model's loss on images z (evaluation; a fixed adversarial weight)."""
        terms, _ = self.generator_terms(net, z, self.disc, step)
        return terms

    # -- one alternating step ---------------------------------------------------------------
    def train_step(self, ctx: Any) -> dict[str, float]:
        check_vq_style(ctx.model)
        c = self.cfg
        opt_model, opt_disc = ctx.optimizers["model"], ctx.optimizers["disc"]
        disc = ctx.aux["disc"]
        active = disc_factor(ctx.step, c.disc_start) * c.disc_weight > 0
        logged: dict[str, float] = {}

        def add(name: str, value: torch.Tensor | float) -> None:
            logged[name] = logged.get(name, 0.0) + float(value) / ctx.accum

        # 1. the VQ model, the discriminator held fixed
        opt_model.zero_grad(set_to_none=True)
        kept = []
        for a in range(ctx.accum):
            x, _, _ = ctx.next_batch()
            with no_sync_unless(a == ctx.accum - 1, ctx.net):
                with ctx.autocast():
                    terms, x_hat = self.generator_terms(
                        ctx.net, x, unwrapped(disc), ctx.step, adaptive=c.disc_adaptive
                    )
                (terms["loss"] / ctx.accum).backward()
            kept.append((x, x_hat.detach()))
            for name, value in terms.items():
                add(name, value.detach())
        norm = ctx.clip(ctx.model.parameters())
        if norm is not None:
            logged["grad_norm"] = float(norm)
        opt_model.step()

        # 2. the discriminator, on the reconstructions made before that update
        opt_disc.zero_grad(set_to_none=True)
        logged["d_loss"] = 0.0
        if active:
            for a, (x, x_hat) in enumerate(kept):
                with no_sync_unless(a == len(kept) - 1, disc):
                    with ctx.autocast():
                        logits_real, logits_fake = disc(x), disc(x_hat)
                        d_loss = self.disc_loss(logits_real, logits_fake)
                    (d_loss / len(kept)).backward()
                add("d_loss", d_loss.detach())
                add("logits_real", logits_real.detach().mean())
                add("logits_fake", logits_fake.detach().mean())
            norm = ctx.clip(unwrapped(disc).parameters())
            if norm is not None:
                logged["disc_grad_norm"] = float(norm)
            opt_disc.step()
        logged["disc_active"] = float(active)
        return logged
