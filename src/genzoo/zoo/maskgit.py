"""Official MaskGIT-style generators of 1d-tokenizer (ImageBert, UViTBert): load released weights
and sample like their `generate`.

    pipe = load_maskgit("generator_titok_l32.bin", model_type="ViT", image_seq_len=32)
    logits = pipe.model(tokens, y)          # (B, L, V); masked positions hold id V
    ids = pipe.sample_tokens(y, steps=8, cfg=4.5, cfg_schedule="linear", temperature=9.5,
                             temperature_annealing=True)      # (B, L) long

`sample_tokens` with generator=None draws from torch's global RNG exactly as the official loop
(see genzoo.families.masked), so `torch.manual_seed(s)` right before gives the official ids on
CPU. With `vq=` (MaskGIT-VQGAN weights whose codebook the generator predicts) the pipeline also
decodes: `pipe.sample(labels, ...)` → uint8 images, sample i drawn from (seed, i) alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from genzoo.backbones.maskgit import MaskGIT, MaskGITConfig, check_maskgit_config
from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.masked import Masked, MaskedConfig, sample_discrete_tokens
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.pipeline import Pipeline
from genzoo.sampling.noise import Generators
from genzoo.zoo.kinds import refuse_other_kind
from genzoo.zoo.official import read_state_dict, where_of

# The official constructor fields (model_type and the genzoo-only ones apart).
OFFICIAL_ARGS = tuple(
    f.name for f in fields(MaskGITConfig) if f.name not in ("class_dropout_prob", "class_condition")
)
# Buffers older transformers releases saved (not parameters): dropped when loading.
LEGACY_KEYS = re.compile(r"model\.embeddings\.(position_ids|token_type_ids)")
# The official `generate` defaults.
GENERATE_DEFAULTS = dict(steps=8, cfg=3.0, cfg_schedule="constant", cfg_pow=3.0,
                         temperature=4.5, temperature_annealing=False)  # fmt: skip
# The published FID settings of the released generators (README_TiTok.md), by token count.
PUBLISHED_SAMPLING = {
    32: dict(steps=8, cfg=4.5, cfg_schedule="linear", temperature=9.5),
    64: dict(steps=8, cfg=3.0, cfg_schedule="linear", temperature=11.0),
    128: dict(steps=64, cfg=6.9, cfg_schedule="power-cosine", cfg_pow=3.0, temperature=2.8),
}


# Where each model type's sizes show: embedding table, position table, block-index pattern,
# layers per block index (UViT: in-block i has an out-block twin), head, first MLP layer.
SHAPE_KEYS = {
    "ViT": ("model.embeddings.word_embeddings.weight",
            "model.embeddings.position_embeddings.weight", r"model\.encoder\.layer\.(\d+)\.", 1,
            "model.lm_head.weight", "model.encoder.layer.0.intermediate.dense.weight"),
    "UViT": ("embeddings.weight", "pos_embed", r"in_blocks\.(\d+)\.", 2, "lm_head.weight",
             "in_blocks.0.mlp.fc1.weight"),
}  # fmt: skip


def infer_maskgit_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor fields these shapes show (all but the head count, which is not visible:
    the released generators all use 16, the default)."""
    shape = shapes_of(state)
    model_type = next(
        (t for t, (table, positions, *_) in SHAPE_KEYS.items()
         if len(shape.get(table, ())) == 2 and len(shape.get(positions, ())) >= 2),
        None,
    )  # fmt: skip
    if model_type is None:
        return {}
    table, positions, block, per_index, head, fc = SHAPE_KEYS[model_type]
    rows, hidden = shape[table]
    found = dict(model_type=model_type, hidden_size=hidden, image_seq_len=shape[positions][-2] - 1)
    blocks = {int(m.group(1)) for k in shape if (m := re.match(block, k))}
    if blocks:
        found["num_hidden_layers"] = per_index * (max(blocks) + 1)
    if len(shape.get(head, ())) == 2:
        found["codebook_size"] = shape[head][0]
        found["condition_num_classes"] = rows - found["codebook_size"] - 2
    if len(shape.get(fc, ())) == 2:
        found["intermediate_size"] = shape[fc][0]
    return found


def build_maskgit(
    weights: str | Path | Mapping[str, Any], **kwargs: Any
) -> tuple[MaskGIT, MaskGITConfig]:
    """The official generator with these weights (strict), float32 on CPU, in eval mode.

    kwargs: model_type and the official fields; those not given are read from the shapes.
    """
    unknown = sorted(set(kwargs) - set(OFFICIAL_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown MaskGIT argument(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(OFFICIAL_ARGS)}"
        )
    where = where_of(weights)
    state = {k: v for k, v in read_state_dict(weights).items() if not LEGACY_KEYS.fullmatch(k)}
    inferred = infer_maskgit_config(state)
    cfg = MaskGITConfig(**{**inferred, **kwargs})
    check_maskgit_config(cfg)
    with torch.device("meta"):  # shapes only: the file's tensors become the parameters
        model = MaskGIT(cfg)
    problems = state_dict_problems(shapes_of(model.state_dict()), shapes_of(state))
    if problems:
        refuse_other_kind(state, "maskgit", where, "MaskGIT generator weights")
        built = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in OFFICIAL_ARGS[:8])
        looks = ", ".join(f"{k}={v!r}" for k, v in inferred.items()) or "no MaskGIT layout"
        raise GenzooError(
            f"the weights in {where} do not fit the official generator({built}):\n  "
            + "\n  ".join(problems)
            + f"\nThe weights look like {looks}; pass these arguments, or none to infer them."
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    model.load_state_dict({k: v.to(torch.float32, copy=copy) for k, v in state.items()},
                          strict=True, assign=True)  # fmt: skip
    return model.eval(), cfg


def published_sampling(cfg: MaskGITConfig) -> dict[str, Any]:
    """The FID settings of a released generator (4096 codes, 1000 classes, L of 32, 64 or 128;
    softmax annealing on), else the official `generate` defaults."""
    released = cfg.codebook_size == 4096 and cfg.condition_num_classes == 1000
    if released and cfg.image_seq_len in PUBLISHED_SAMPLING:
        return {**GENERATE_DEFAULTS, **PUBLISHED_SAMPLING[cfg.image_seq_len],
                "temperature_annealing": True}  # fmt: skip
    return dict(GENERATE_DEFAULTS)


class MaskGITPipeline(Pipeline):
    """A loaded official generator: `model` (eval; model(tokens, y) -> (B, L, V)), its `config`,
    `sample_tokens`, and (with a tokenizer) the genzoo `sample`, whose defaults are
    `published_sampling(config)`."""

    def __init__(self, model: MaskGIT, config: MaskGITConfig, device: torch.device,
                 tokenizer=None):  # fmt: skip
        run = RunConfig(preset="official-maskgit", model=config, family=MaskedConfig())
        side = math.isqrt(config.image_seq_len)
        grid = (side, side) if side * side == config.image_seq_len else (config.image_seq_len,)
        if tokenizer is not None:
            from genzoo.tokenizers.maskgit_vqgan import MaskGITVQGANTokenizerConfig

            run.tokenizer = MaskGITVQGANTokenizerConfig(source=tokenizer.spec.partition(":")[2])
            if tokenizer.vocab_size != config.codebook_size or len(grid) != 2:
                raise GenzooError(
                    f"the tokenizer {tokenizer.spec} has {tokenizer.vocab_size} codes on a 2-D "
                    f"grid; the generator predicts {config.image_seq_len} tokens of "
                    f"{config.codebook_size} codes. Pass the tokenizer it was trained on"
                )
        run.data.res = grid[0] * (tokenizer.stride if tokenizer is not None else 16)
        super().__init__(model, Masked(MaskedConfig()), tokenizer, run, device,
                         default_options=published_sampling(config), latent_shape=grid)  # fmt: skip
        self.config = config

    def _labels(self, y) -> torch.Tensor:
        k = self.config.condition_num_classes
        y = torch.as_tensor(y, device=self.device)
        if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or not len(y):
            raise GenzooError(
                f"sample_tokens: y must be a non-empty 1-D list of class ids; got {y!r}"
            )
        if y.min() < 0 or y.max() > k:
            raise GenzooError(
                f"sample_tokens: labels must lie in [0, {k}] ({k} = the null class); got "
                f"{y.tolist()[:8]}"
            )
        return y.long()

    def sample_tokens(
        self,
        y: torch.Tensor | Sequence[int],
        steps: int | None = None,
        cfg: float | None = None,
        cfg_schedule: str | None = None,
        cfg_pow: float | None = None,
        temperature: float | None = None,
        temperature_annealing: bool | None = None,
        generator: Generators = None,
    ) -> torch.Tensor:
        """The official `generate` for labels y (B,): ids (B, L) long.

        steps = num_sample_steps, cfg = guidance_scale, cfg_schedule = guidance_decay
        ("constant", "linear", "power-cosine"), cfg_pow = guidance_scale_pow, temperature =
        randomize_temperature, temperature_annealing = softmax_temperature_annealing; None
        takes the official defaults (8, 3.0, constant, 3.0, 4.5, False). generator: None
        (torch's global RNG, the official draw order), one generator, or one per sample.
        """
        given = dict(
            steps=steps, cfg=cfg, cfg_schedule=cfg_schedule, cfg_pow=cfg_pow,
            temperature=temperature, temperature_annealing=temperature_annealing,
        )  # fmt: skip
        options = {**GENERATE_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        labels = self._labels(y)
        if isinstance(generator, Sequence) and len(generator) != len(labels):
            raise GenzooError(
                f"sample_tokens: got {len(generator)} generators for {len(labels)} labels; pass "
                "one torch.Generator per sample (or one, or None for the global RNG)"
            )
        return sample_discrete_tokens(
            self.model, labels, null_label=self.config.condition_num_classes,
            generators=generator, **self.family.sample_settings(options),
        )  # fmt: skip


def load_maskgit(
    weights: str | Path | Mapping[str, Any],
    device: str | torch.device | None = None,
    vq: str | None = None,
    **kwargs: Any,
) -> MaskGITPipeline:
    """`genzoo.load_official("maskgit", weights, model_type="ViT"|"UViT", **kw)`.

    weights: a released `.bin` (plain state dict), a `.safetensors` file (also the hub-mixin
    repos' weights) or a state dict. kw: codebook_size, image_seq_len, condition_num_classes,
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, dropout,
    attn_drop; what is not given is read from the shapes (heads: 16). vq: MaskGIT-VQGAN weights
    to decode the ids into images.
    """
    model, cfg = build_maskgit(weights, **kwargs)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = None
    if vq:
        from genzoo.tokenizers import build_tokenizer
        from genzoo.tokenizers.maskgit_vqgan import MaskGITVQGANTokenizerConfig

        tokenizer = build_tokenizer(MaskGITVQGANTokenizerConfig(source=str(vq))).to(dev)
    return MaskGITPipeline(model.to(dev), cfg, dev, tokenizer)


def maskgit_from_cli(c, device: str) -> MaskGITPipeline:
    """`genzoo sample --official maskgit --weights G --vq T`: sizes read from the weights."""
    if not c.vq:
        raise GenzooError(
            "--official maskgit needs --vq FILE (the MaskGIT-VQGAN weights that decode its tokens)"
        )
    return load_maskgit(c.weights, device=device, vq=c.vq)
