"""Official MAR checkpoints (LTH14/mar): strict loading and the official sampler.

pipe = genzoo.load_official("mar", "checkpoint-last.pth", vae="kl16.ckpt",
                            encoder_embed_dim=768, encoder_depth=12, ...)   # or inferred
z = pipe.model.condition(tokens, mask, y)              # per-token conditions (B, L, D)
latents = pipe.sample_tokens(y, num_iter=256, cfg=2.9)  # after np.random.seed + torch.manual_seed
images = pipe.sample([207, 360], seed=0)               # uint8, sample i from (seed, i) alone

A released `.pth` holds "model" and "model_ema"; the EMA weights are used, as the official
evaluation and demo use them. A plain state dict (or `.safetensors`) loads too. Constructor
arguments not given are read from the tensor shapes where they show (widths, depths, buffer
size, class count, head size); the head count comes from the published sizes (else the
official default 16); the rest take the official defaults.

`sample_tokens` reproduces `MAR.sample_tokens`: the orders are drawn first, one numpy shuffle
per sample, then torch's global RNG feeds the head (see genzoo.families.masked_continuous), so
seeding numpy and torch right before the call gives the official latents. With `orders` and a
per-token `noise` table it is deterministic.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from genzoo.backbones.mar import MAR, MARConfig
from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.masked_continuous import (
    MaskedContinuous,
    MaskedContinuousConfig,
    OfficialDraws,
    TableDraws,
    sample_continuous_tokens,
)
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.pipeline import Pipeline
from genzoo.tokenizers.mar_vae import (
    MARVAEConfig,
    MARVAETokenizer,
    infer_mar_vae_args,
    load_official_mar_vae,
)
from genzoo.zoo.kinds import refuse_other_kind
from genzoo.zoo.official import read_state_dict, where_of

# MAR's constructor arguments (norm_layer aside: every LayerNorm has eps 1e-6)
MAR_ARGS = tuple(
    f.name for f in dataclasses.fields(MARConfig) if f.name not in ("head", "mask_token_is_null")
)
# The published factories and the head sizes of the released models.
MAR_SIZES: dict[str, dict[str, int]] = {
    "B": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, decoder_embed_dim=768,
              decoder_depth=12, decoder_num_heads=12, diffloss_d=6, diffloss_w=1024),
    "L": dict(encoder_embed_dim=1024, encoder_depth=16, encoder_num_heads=16,
              decoder_embed_dim=1024, decoder_depth=16, decoder_num_heads=16, diffloss_d=8,
              diffloss_w=1280),
    "H": dict(encoder_embed_dim=1280, encoder_depth=20, encoder_num_heads=16,
              decoder_embed_dim=1280, decoder_depth=20, decoder_num_heads=16, diffloss_d=12,
              diffloss_w=1536),
}  # fmt: skip
# The protocol of the README's FIDs (2.31 / 1.78 / 1.55): EMA weights, 50 per class, seed 1.
PUBLISHED_SAMPLING = {
    size: dict(num_iter=256, cfg=cfg, cfg_schedule="linear", temperature=1.0, head_steps="100")
    for size, cfg in (("B", 2.9), ("L", 3.0), ("H", 3.2))
}
PUBLISHED_SAMPLING_NO_CFG = dict(num_iter=256, cfg=1.0, temperature=0.95, head_steps="100")
_HEADS = {768: 12, 1024: 16, 1280: 16}


def read_mar_state(weights: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a MAR file: its "model_ema" entry, else "model", else the file itself."""
    return read_state_dict(weights, entries=("model_ema", "model"))


def infer_mar_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments the tensor shapes show (and the head count of a published
    width)."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}

    def depth(prefix: str) -> int | None:
        ids = {int(m.group(1)) for k in shape if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return max(ids) + 1 if ids else None

    if len(shape.get("fake_latent", ())) == 2:
        found["encoder_embed_dim"] = shape["fake_latent"][1]
    if len(shape.get("class_emb.weight", ())) == 2:
        found["class_num"] = shape["class_emb.weight"][0]
    enc, diff = shape.get("encoder_pos_embed_learned"), shape.get("diffusion_pos_embed_learned")
    if enc and diff and len(enc) == 3 and len(diff) == 3:
        found["buffer_size"] = enc[1] - diff[1]
        found["decoder_embed_dim"] = diff[2]
    for part in ("encoder", "decoder"):
        if (n := depth(f"{part}_blocks")) is not None:
            found[f"{part}_depth"] = n
        dim = found.get(f"{part}_embed_dim")
        if dim in _HEADS:
            found[f"{part}_num_heads"] = _HEADS[dim]
        fc1 = shape.get(f"{part}_blocks.0.mlp.fc1.weight")
        if fc1 and dim:
            found["mlp_ratio"] = fc1[0] / dim
    if (n := depth("diffloss.net.res_blocks")) is not None:
        found["diffloss_d"] = n
    if len(shape.get("diffloss.net.input_proj.weight", ())) == 2:
        found["diffloss_w"] = shape["diffloss.net.input_proj.weight"][0]
    return found


def check_mar_args(kwargs: Mapping[str, Any]) -> None:
    unknown = sorted(set(kwargs) - set(MAR_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown MAR argument(s) {', '.join(unknown)}; accepted (the official constructor's "
            f"names): {', '.join(MAR_ARGS)}"
        )


def mar_config(state: Mapping[str, torch.Tensor], **kwargs: Any) -> MARConfig:
    """MARConfig from the given constructor arguments, the rest inferred or official defaults."""
    check_mar_args(kwargs)
    inferred = {k: v for k, v in infer_mar_config(state).items() if k not in kwargs}
    return MARConfig(**{**inferred, **kwargs})


def load_mar_model(
    weights: str | Path | Mapping[str, Any], device: str | torch.device | None = None, **kwargs: Any
) -> tuple[MAR, MARConfig]:
    """An official MAR network with its weights (strict loading, float32), in eval mode."""
    check_mar_args(kwargs)  # names first, before reading a large file
    state = read_mar_state(weights)
    where = where_of(weights)
    cfg = mar_config(state, **kwargs)
    with torch.device("meta"):  # shapes only: the file's tensors become the parameters
        model = MAR(cfg)
    problems = state_dict_problems(shapes_of(model.state_dict()), shapes_of(state))
    if problems:
        refuse_other_kind(state, "mar", where, "MAR weights")
        built = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in MAR_ARGS[:13])
        raise GenzooError(
            f"the weights in {where} do not fit MAR({built}, …):\n  "
            + "\n  ".join(problems)
            + "\nThe token count is (img_size/vae_stride/patch_size)² and the token size "
            "vae_embed_dim·patch_size²; pass the arguments the model was trained with."
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    model.load_state_dict(
        {k: v.to(torch.float32, copy=copy) for k, v in state.items()}, strict=True, assign=True
    )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(dev).eval(), cfg


class MARPipeline(Pipeline):
    """A loaded MAR with the official sampler, and (with the KL-16 VAE) a genzoo Pipeline."""

    def __init__(self, model: MAR, config: MARConfig, device: torch.device,
                 tokenizer: MARVAETokenizer | None = None):  # fmt: skip
        family = MaskedContinuousConfig()
        run = RunConfig(preset="official-mar", model=config, family=family)
        if tokenizer is not None:
            source = tokenizer.spec.partition(":")[2]
            run.tokenizer = MARVAEConfig(source=source, scale=tokenizer.scale)
        run.data.res = config.img_size
        side = config.grid_size * config.patch_size
        super().__init__(model, MaskedContinuous(family), tokenizer, run, device,
                         latent_shape=(config.vae_embed_dim, side, side))  # fmt: skip
        self.config = config

    def _labels(self, y, bsz: int | None) -> torch.Tensor:
        k = self.config.class_num
        if y is None:
            if isinstance(bsz, bool) or not isinstance(bsz, int) or bsz < 1:
                raise GenzooError(f"y=None samples unconditionally and needs bsz >= 1; got {bsz!r}")
            return torch.full((bsz,), k, dtype=torch.long, device=self.device)
        labels = torch.as_tensor(y, device=self.device)
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise GenzooError(f"y must be a 1-D sequence of integer class labels, got {labels!r}")
        if labels.numel() and bool(((labels < 0) | (labels >= k)).any()):
            raise GenzooError(
                f"labels {labels.tolist()[:8]} are outside [0, {k}); pass y=None (with bsz) for "
                "unconditional samples"
            )
        if bsz is not None and bsz != labels.numel():
            raise GenzooError(f"bsz={bsz} but {labels.numel()} labels were given")
        return labels.long()

    def sample_tokens(
        self,
        y: torch.Tensor | Sequence[int] | None,
        num_iter: int = 64,
        cfg: float = 1.0,
        cfg_schedule: str = "linear",
        temperature: float = 1.0,
        head_steps: int | str | None = None,
        orders: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        bsz: int | None = None,
    ) -> torch.Tensor:
        """MAR's `sample_tokens`: latents (B, c, H, W) in MAR's scaled latent space.

        y=None: unconditional (the null embedding), `bsz` samples. head_steps: the head's
        respacing (None: num_sampling_steps). orders (B, L) and noise (B, L, T+1, Ct) together
        make it deterministic (noise[b, n, 0] the starting noise of token n, noise[b, n, j] that
        of its j-th head step); without them numpy's and torch's global RNGs are drawn as the
        official sampler draws them.
        """
        labels = self._labels(y, bsz)
        if (orders is None) != (noise is None):
            raise GenzooError("pass orders and noise together (or neither, for the global RNGs)")
        draws = OfficialDraws() if orders is None else TableDraws(orders, noise)
        tokens = sample_continuous_tokens(
            self.model, labels, draws, num_iter=num_iter, cfg=cfg, cfg_schedule=cfg_schedule,
            temperature=temperature, head_steps=head_steps,
        )  # fmt: skip
        return self.model.unpatchify(tokens)


def load_mar(
    weights: str | Path | Mapping[str, Any],
    *,
    vae: str | Path | Mapping[str, Any] | MARVAETokenizer | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> MARPipeline:
    """`genzoo.load_official("mar", weights, vae=None, **MAR constructor arguments)`.

    `vae`: the KL-16 VAE that decodes the latents: kl16.ckpt (official arguments), or a tokenizer
    from `load_official_tokenizer("mar-kl16", ...)`; optional for `sample_tokens`.
    """
    model, cfg = load_mar_model(weights, device=device, **kwargs)
    dev = next(model.parameters()).device
    if vae is None or isinstance(vae, MARVAETokenizer):
        tokenizer = vae.to(dev) if vae is not None else None
    else:
        tokenizer = load_official_mar_vae(vae, device=dev)
    return MARPipeline(model, cfg, dev, tokenizer)


def mar_from_cli(c, device: str) -> MARPipeline:
    """`genzoo sample --official mar --weights checkpoint-last.pth --vae kl16.ckpt
    [--official-preset MAR-B] --image-size 256`: the latent grid follows the VAE (its stride
    and channels) and the image size; the patch size follows the token size in the weights."""
    vae_path = Path(c.vae).expanduser()
    if not vae_path.is_file():
        raise GenzooError(f"--official mar needs --vae FILE (MAR's kl16.ckpt); got {c.vae!r}")
    vae_state = read_state_dict(vae_path, entries=("model",))
    vae = load_official_mar_vae(vae_state, device=device, **infer_mar_vae_args(vae_state))
    kwargs: dict[str, Any] = dict(
        img_size=c.image_size, vae_stride=vae.stride, vae_embed_dim=vae.channels
    )
    if c.official_preset:
        size = c.official_preset.upper().removeprefix("MAR-").removeprefix("MAR_")
        if size not in MAR_SIZES:
            raise GenzooError(f"unknown MAR preset {c.official_preset!r}; choose MAR-B, -L or -H")
        kwargs.update(MAR_SIZES[size])
    state = read_mar_state(c.weights)
    token = shapes_of(state).get("z_proj.weight", (0, vae.channels))[1]
    kwargs["patch_size"] = max(1, round((token / vae.channels) ** 0.5))
    return load_mar(state, vae=vae, device=device, **kwargs)
