"""Official RAR generators (bytedance/1d-tokenizer): load released weights, sample like `generate`.

pipe = load_rar("rar_xl.bin")                  # a plain state dict (.bin), .safetensors or a dict
ids = pipe.sample_tokens(y)                    # (B, 256) ids for the MaskGIT-VQGAN decoder
pipe = load_rar("rar_xl.bin", vq="maskgit-vqgan-imagenet-f16-256.bin")
images = pipe.sample([1, 2], seed=0)           # uint8 images; sample i from (seed, i) alone

The official sampler draws from torch's global RNG: first B uniforms (its label-shifting helper
draws a label-dropout mask even at probability 0), then one `torch.multinomial` per step. With
`generator=None` the same draws happen in the same order, so `torch.manual_seed(s)` right before
the call gives the official ids on CPU. Per-sample generators give row i its own stream (one
uniform, then one draw per step), so a row does not depend on the rest of the batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from genzoo.backbones.rar import RAR, RAR_SIZES, TIMESTEP_EXTRA_ROWS, RARConfig
from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.autoregressive import ARConfig, Autoregressive
from genzoo.families.common import eval_mode
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.pipeline import Pipeline
from genzoo.sampling.noise import Generators
from genzoo.sampling.tokens import (
    cfg_scale_at,
    check_cfg_options,
    check_token_options,
    draw_tokens,
    guide_logits,
    token_probs,
)
from genzoo.zoo.kinds import refuse_other_kind
from genzoo.zoo.official import read_state_dict, where_of

# Constructor fields of the official class; forward_view stays "official" for its weights.
OFFICIAL_ARGS = tuple(f.name for f in fields(RARConfig) if f.name != "forward_view")
# The published FID settings (README_RAR.md): guidance_scale, guidance_scale_pow, temperature.
PUBLISHED_SAMPLING = {
    "B": dict(cfg=16.0, cfg_pow=2.75, temperature=1.0),
    "L": dict(cfg=15.5, cfg_pow=2.5, temperature=1.02),
    "XL": dict(cfg=6.9, cfg_pow=1.5, temperature=1.02),
    "XXL": dict(cfg=8.0, cfg_pow=1.2, temperature=1.02),
}
README_DEMO_SAMPLING = dict(cfg=4.0, cfg_pow=0.0, temperature=1.0)  # constant guidance 4


def rar_config(size: str, **overrides: Any) -> RARConfig:
    """The config of a published size ("B", "L", "XL", "XXL"; "RAR-XL" also accepted)."""
    key = size.upper().removeprefix("RAR-").removeprefix("RAR_")
    if key not in RAR_SIZES:
        raise GenzooError(f"unknown RAR size {size!r}; choose one of {', '.join(RAR_SIZES)}")
    return RARConfig(**{**RAR_SIZES[key], **overrides})


def published_size(cfg: RARConfig) -> str | None:
    """The size name ("B" … "XXL") of a released generator (1024 codes, 256 tokens, 1000
    classes), else None."""
    released = (cfg.codebook_size, cfg.image_seq_len, cfg.condition_num_classes)
    if released != (1024, 256, 1000):
        return None
    return next(
        (n for n, s in RAR_SIZES.items() if all(getattr(cfg, k) == v for k, v in s.items())), None
    )


def infer_rar_config(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The constructor arguments these tensor shapes imply (all of them are visible)."""
    shape = shapes_of(state)
    found: dict[str, int] = {}
    if len(shape.get("cls_token", ())) == 3:
        found["hidden_size"] = shape["cls_token"][2]
    if len(shape.get("lm_head.weight", ())) == 2:
        found["codebook_size"] = shape["lm_head.weight"][0]
    table = shape.get("embeddings.weight", ())
    if len(table) == 2 and "codebook_size" in found:
        found["condition_num_classes"] = table[0] - found["codebook_size"] - 2
    steps = shape.get("timesteps_embeddings", ())
    if len(steps) == 3:
        found["image_seq_len"] = steps[1] - TIMESTEP_EXTRA_ROWS
    blocks = {int(m.group(1)) for k in shape if (m := re.match(r"blocks\.(\d+)\.", k))}
    if blocks:
        found["num_hidden_layers"] = max(blocks) + 1
    q_norm = shape.get("blocks.0.attn.q_norm.weight", ())
    if len(q_norm) == 1 and found.get("hidden_size", 0) % max(q_norm[0], 1) == 0:
        found["num_attention_heads"] = found["hidden_size"] // q_norm[0]
    fc1 = shape.get("blocks.0.mlp.fc1.weight", ())
    if len(fc1) == 2:
        found["intermediate_size"] = fc1[0]
    return {k: found[k] for k in OFFICIAL_ARGS if k in found and found[k] > 0}


def build_rar(weights: str | Path | Mapping[str, Any], **kwargs: Any) -> tuple[RAR, RARConfig]:
    """The official RAR network with these weights (strict), on CPU in float32, eval mode.

    Constructor arguments not given are read from the tensor shapes; those given must fit them.
    """
    unknown = sorted(set(kwargs) - set(OFFICIAL_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown RAR argument(s) {', '.join(unknown)}; accepted: {', '.join(OFFICIAL_ARGS)}"
        )
    where = where_of(weights)
    state = read_state_dict(weights)
    inferred = infer_rar_config(state)
    cfg = RARConfig(**{**inferred, **kwargs})
    with torch.device("meta"):  # shapes only: the file's tensors become the parameters
        model = RAR(cfg)
    problems = state_dict_problems(shapes_of(model.state_dict()), shapes_of(state))
    if problems:
        refuse_other_kind(state, "rar", where, "RAR weights")
        built = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in OFFICIAL_ARGS[:7])
        looks = ", ".join(f"{k}={v!r}" for k, v in inferred.items()) or "no RAR layout"
        raise GenzooError(
            f"the weights in {where} do not fit the official RAR({built}):\n  "
            + "\n  ".join(problems)
            + f"\nThe weights look like {looks}; pass these arguments, or none to infer them."
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    state = {k: v.to(torch.float32, copy=copy) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), cfg


def _check_generators(generator: Generators, batch: int) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    gens = list(generator)
    if len(gens) != batch or not all(isinstance(g, torch.Generator) for g in gens):
        raise GenzooError(
            f"sample_tokens: got {len(gens)} generators for {batch} labels; pass one "
            "torch.Generator per sample (or a single generator, or None for torch's global RNG)"
        )


def _label_shift_draw(n: int, device: torch.device, generator: Generators) -> None:
    """The official label shift draws a label-dropout mask even at probability 0: keep it."""
    if generator is None or isinstance(generator, torch.Generator):
        torch.rand(n, device=device if generator is None else generator.device, generator=generator)
    else:
        for g in generator:
            torch.rand(1, device=g.device, generator=g)


@torch.no_grad()
def sample_rar_tokens(
    model: RAR,
    y: torch.Tensor,
    *,
    cfg: float,
    cfg_pow: float,
    temperature: float,
    kv_cache: bool = True,
    generator: Generators = None,
) -> torch.Tensor:
    """The official `generate` loop: (B, L) raster ids for labels y (B,) long, model in eval.

    Unless cfg == 0 (one conditional pass), step s feeds [conditional; null] (2B rows) and
    guides as u + (c − u)·g_s with the power-cosine scale g_s = 1 + (cfg − 1)·(1 −
    cos(π·(s/L)^cfg_pow))/2; then the last position's logits / temperature → softmax → one
    `torch.multinomial` per row (genzoo.sampling.tokens, in the official operation order).
    """
    n, steps = y.shape[0], model.cfg.image_seq_len
    _label_shift_draw(n, y.device, generator)
    guided = cfg != 0  # the official test: cfg = 1 still runs the doubled batch
    labels = torch.cat([y, torch.full_like(y, model.null_label)]) if guided else y
    ids = torch.zeros(n, 0, dtype=torch.long, device=y.device)
    if kv_cache:
        model.setup_cache(labels.shape[0])
    try:
        for step in range(steps):
            fed = torch.cat([ids, ids]) if guided else ids
            if not kv_cache:
                logits = model(fed, labels)[:, -1]
            elif step == 0:
                logits = model.decode(None, labels, 0)
            else:
                logits = model.decode(fed[:, -1:], labels, model.prefix_len + step - 1)
            if guided:
                scale = cfg_scale_at(step, steps, cfg, "power-cosine", cfg_pow)
                logits = guide_logits(logits[:n], logits[n:], scale)
            probs = token_probs(logits, temperature)
            ids = torch.cat([ids, draw_tokens(probs, generator)[:, None]], dim=1)
    finally:
        model.clear_cache()
    return ids


class OfficialRARSampling(Autoregressive):
    """The `ar` family whose sampler is the official RAR loop (`sample_rar_tokens`): what a
    RARPipeline's `sample` runs, with the official option names."""

    sample_options: dict[str, Any] = dict(README_DEMO_SAMPLING)

    def sample(self, net, y, *, generators, null_label, progress=False, **options):
        merged = {**self.sample_options, **self.check_options(options)}
        check_cfg_options(merged["cfg"], "power-cosine", merged["cfg_pow"], -1)
        check_token_options(merged["temperature"], 0, 1.0)
        with eval_mode(net):
            ids = sample_rar_tokens(net, y, generator=generators, **merged)
        side = math.isqrt(ids.shape[1])
        return ids.reshape(len(y), side, side)


class RARPipeline(Pipeline):
    """An official RAR generator: `model` (eval; model(tokens, y, orders) -> (B, L+1, V)),
    its `config`, the `device`, `sample_tokens`, and (with a MaskGIT-VQGAN `tokenizer`) the
    genzoo `sample`, whose defaults are `sampling_defaults()`."""

    def __init__(self, model: RAR, config: RARConfig, device: torch.device, tokenizer=None):
        side = math.isqrt(config.image_seq_len)
        if side * side != config.image_seq_len:
            raise GenzooError(f"image_seq_len={config.image_seq_len} is not a square token grid")
        run = RunConfig(preset="official-rar", model=config, family=ARConfig())
        if tokenizer is not None:
            from genzoo.tokenizers.maskgit_vqgan import MaskGITVQGANTokenizerConfig

            if tokenizer.vocab_size != config.codebook_size:
                raise GenzooError(
                    f"the tokenizer {tokenizer.spec} has {tokenizer.vocab_size} codes; this RAR "
                    f"predicts {config.codebook_size}. Pass the MaskGIT-VQGAN it was trained on"
                )
            run.tokenizer = MaskGITVQGANTokenizerConfig(source=tokenizer.spec.partition(":")[2])
        run.data.res = side * (tokenizer.stride if tokenizer is not None else 16)
        family = OfficialRARSampling(ARConfig())
        super().__init__(model, family, tokenizer, run, device, latent_shape=(side, side))
        self.config = config
        self.default_options = self.sampling_defaults()

    def sampling_defaults(self) -> dict[str, float]:
        """The published FID settings for a released size, else the README demo's."""
        size = published_size(self.config)
        return dict(PUBLISHED_SAMPLING[size] if size else README_DEMO_SAMPLING)

    def sample_tokens(
        self,
        y,
        cfg: float | None = None,
        cfg_pow: float | None = None,
        temperature: float | None = None,
        kv_cache: bool = True,
        generator: Generators = None,
    ) -> torch.Tensor:
        """(B, L) long ids for labels y (class ids, or the null class K) in raster order.

        cfg = guidance_scale, cfg_pow = guidance_scale_pow, temperature = randomize_temperature
        (None: `sampling_defaults()`). generator: None (torch's global RNG, the official draw
        order), one torch.Generator (the same order from it) or one generator per sample.
        kv_cache=False recomputes every step (same ids).
        """
        options = self.sampling_defaults()
        for name, value in (("cfg", cfg), ("cfg_pow", cfg_pow), ("temperature", temperature)):
            if value is not None:
                options[name] = float(value)
        check_cfg_options(options["cfg"], "power-cosine", options["cfg_pow"], -1)
        check_token_options(options["temperature"], 0, 1.0)
        k = self.config.condition_num_classes
        y = torch.as_tensor(y, dtype=torch.long, device=self.device).reshape(-1)
        if y.numel() == 0 or y.min() < 0 or y.max() > k:
            raise GenzooError(
                f"sample_tokens: labels must be a non-empty list of ints in [0, {k}] ({k} = the "
                f"null class); got {y.tolist()}"
            )
        _check_generators(generator, y.shape[0])
        with eval_mode(self.model):  # no dropout: it would draw from the RNG too
            return sample_rar_tokens(
                self.model, y, kv_cache=kv_cache, generator=generator, **options
            )


def load_rar(
    weights: str | Path | Mapping[str, Any],
    device: str | torch.device | None = None,
    vq: str | None = None,
    **kwargs,
) -> RARPipeline:
    """Load official RAR weights (`rar_{b,l,xl,xxl}.bin`, a .safetensors file or a state dict).

    kwargs: the official constructor fields (codebook_size, image_seq_len,
    condition_num_classes, hidden_size, num_hidden_layers, num_attention_heads,
    intermediate_size, ...); anything not given is read from the tensor shapes.
    vq: the MaskGIT-VQGAN weights (`maskgit-vqgan-imagenet-f16-256.bin`) that decode the ids.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = build_rar(weights, **kwargs)
    tokenizer = None
    if vq:
        from genzoo.tokenizers import build_tokenizer
        from genzoo.tokenizers.maskgit_vqgan import MaskGITVQGANTokenizerConfig

        tokenizer = build_tokenizer(MaskGITVQGANTokenizerConfig(source=str(vq))).to(dev)
    return RARPipeline(model.to(dev), cfg, dev, tokenizer)


def rar_from_cli(c, device: str) -> RARPipeline:
    """`genzoo sample --official rar --weights rar_xl.bin --vq maskgit-vqgan-…bin`."""
    if not c.vq:
        raise GenzooError("--official rar needs --vq FILE (the MaskGIT-VQGAN that decodes its ids)")
    return load_rar(c.weights, device=device, vq=c.vq)
