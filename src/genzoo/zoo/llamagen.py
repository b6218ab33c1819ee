"""Official LlamaGen class-conditional GPT checkpoints: strict loading and official sampling.

The released files (Hugging Face `FoundationVision/LlamaGen`, e.g. `c2i_B_256.pt`) hold float32
weights under "model" (DDP saves) or as the flat state dict itself (FSDP saves: XXL, 3B); the
official loader also accepts "module" and "state_dict" entries, and so does genzoo. The
official loader is non-strict, which silently skips the two kinds of extra tensors a file may
carry: the KV-cache buffers of a model saved after sampling (`layers.{i}.attention.kv_cache.
k_cache` / `v_cache`) and a stray `freqs_cis`. genzoo ignores exactly those and refuses any
other difference between the file and the model built from the given `ModelArgs`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from genzoo.backbones.gpt import GPT, LLAMAGEN_SIZES, GPTConfig, swiglu_hidden
from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.autoregressive import ARConfig, Autoregressive, generate_tokens
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.pipeline import Pipeline
from genzoo.tokenizers.vq import VQTokenizerConfig
from genzoo.zoo.kinds import refuse_other_kind
from genzoo.zoo.official import read_state_dict, where_of

MODEL_ARGS = tuple(f.name for f in dataclasses.fields(GPTConfig))
# the official loader's order of container entries
CONTAINER_ENTRIES = ("model", "module", "state_dict")
IGNORED_KEYS = re.compile(r"layers\.\d+\.attention\.kv_cache\.(k_cache|v_cache)|freqs_cis")


def read_llamagen_state(weights: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The GPT weights in a `.pt` (under "model", "module" or "state_dict", or flat), a
    `.safetensors` file, or an in-memory dict, without the ignored extra buffers."""
    obj = read_state_dict(weights, entries=CONTAINER_ENTRIES)
    return {k: v for k, v in obj.items() if not IGNORED_KEYS.fullmatch(k)}


def llamagen_config(**model_args: Any) -> GPTConfig:
    """GPTConfig from official `ModelArgs` names; fields not given take the official defaults."""
    unknown = sorted(set(model_args) - set(MODEL_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown LlamaGen argument(s) {', '.join(unknown)}; accepted (the official ModelArgs "
            f"names): {', '.join(MODEL_ARGS)}"
        )
    return GPTConfig(**model_args)


def shapes_say(state: Mapping[str, torch.Tensor]) -> str:
    """What the tensor shapes of a LlamaGen file tell about its ModelArgs, as a hint."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}
    if len(shape.get("tok_embeddings.weight", ())) == 2:
        found["vocab_size"], found["dim"] = shape["tok_embeddings.weight"]
    layers = {int(m.group(1)) for k in shape if (m := re.match(r"layers\.(\d+)\.", k))}
    if layers:
        found["n_layer"] = max(layers) + 1
    table = shape.get("cls_embedding.embedding_table.weight")
    if table and len(table) == 2:
        found["num_classes"] = (
            f"{table[0] - 1} (+ the null row; {table[0]} if class_dropout_prob=0)"
        )
    heads = {v["dim"]: v["n_head"] for v in LLAMAGEN_SIZES.values()}
    if found.get("dim") in heads:
        found["n_head"] = f"{heads[found['dim']]} (published size)"
    w1 = shape.get("layers.0.feed_forward.w1.weight")
    if w1:
        found["SwiGLU width"] = w1[0]
    if not found:
        return ""
    return " The file's shapes say: " + ", ".join(f"{k}={v}" for k, v in found.items()) + "."


def load_llamagen(
    weights: str | Path | Mapping[str, Any],
    device: str | torch.device | None = None,
    **model_args: Any,
) -> tuple[GPT, GPTConfig]:
    """An official LlamaGen GPT with its weights (strict loading, float32), in eval mode.

    `model_args`: the official ModelArgs fields (dim, n_layer, n_head, vocab_size, block_size,
    num_classes, …); those not given take the official defaults (dim 4096, 32 layers, …), so
    pass at least the size, e.g. `**LLAMAGEN_SIZES["B"]` and block_size=(image_size/16)².
    """
    cfg = llamagen_config(**model_args)
    state = read_llamagen_state(weights)
    where = where_of(weights)
    with torch.device("meta"):  # shapes only: the file's tensors become the parameters
        model = GPT(cfg)
    problems = state_dict_problems(shapes_of(model.state_dict()), shapes_of(state))
    if problems:
        refuse_other_kind(state, "llamagen", where, "LlamaGen GPT weights")
        built = ", ".join(
            f"{k}={getattr(cfg, k)!r}"
            for k in ("dim", "n_layer", "n_head", "vocab_size", "num_classes", "multiple_of")
        )
        raise GenzooError(
            f"the weights in {where} do not fit the LlamaGen GPT({built}, SwiGLU width "
            f"{swiglu_hidden(cfg)}):\n  " + "\n  ".join(problems) + "\n" + shapes_say(state)
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    state = {k: v.to(torch.float32, copy=copy) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(dev).eval(), cfg


class LlamaGenPipeline(Pipeline):
    """A loaded LlamaGen GPT with the official sampler, and (with a VQ) a genzoo Pipeline.

    `model(tokens, y)` -> float32 logits (B, T, V) (teacher forcing, see genzoo.backbones.gpt);
    `sample_tokens(y, ...)` -> token ids (B, block_size) in raster order; `sample(labels, ...)`
    -> uint8 images decoded by the VQ, sample i drawn from (seed, i) alone.
    """

    def __init__(self, model: GPT, config: GPTConfig, device: torch.device, tokenizer=None):
        grid = math.isqrt(config.block_size)
        run = RunConfig(preset="official-llamagen", model=config, family=ARConfig())
        if tokenizer is not None:
            run.tokenizer = VQTokenizerConfig(source=tokenizer.spec.partition(":")[2])
        run.data.res = grid * (tokenizer.stride if tokenizer is not None else 16)
        super().__init__(
            model, Autoregressive(ARConfig()), tokenizer, run, device, latent_shape=(grid, grid)
        )
        self.config = config

    @classmethod
    def from_weights(
        cls,
        weights: str | Path | Mapping[str, Any],
        device: str | torch.device | None = None,
        vq: str | None = None,
        **model_args: Any,
    ) -> LlamaGenPipeline:
        model, cfg = load_llamagen(weights, device=device, **model_args)
        dev = model.output.weight.device
        tokenizer = None
        if vq:
            from genzoo.tokenizers import build_tokenizer

            tokenizer = build_tokenizer(VQTokenizerConfig(source=str(vq))).to(dev)
        return cls(model, cfg, dev, tokenizer)

    def _labels(self, y: torch.Tensor | Sequence[int]) -> torch.Tensor:
        labels = torch.as_tensor(y, device=self.device)
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise GenzooError(f"y must be a 1-D sequence of integer class labels, got {labels!r}")
        k = self.config.num_classes
        if labels.numel() and bool(((labels < 0) | (labels >= k)).any()):
            raise GenzooError(
                f"labels {labels.tolist()[:8]} are outside [0, {k}); sample_tokens takes real "
                "class labels only (the null half for guidance is built internally)"
            )
        return labels.long()

    def sample_tokens(
        self,
        y: torch.Tensor | Sequence[int],
        cfg: float = 1.0,
        cfg_interval: int = -1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """LlamaGen's `generate` for class labels y (B,): ids (B, block_size) long.

        cfg > 1 guides as u + (c − u)·cfg on the doubled batch [y; null]; cfg_interval = k >= 0
        guides only tokens 0 … k+1; then temperature, top-k (0 = off), top-p (0 or 1 = off).
        generator=None draws one `torch.multinomial` per token from the global RNG, exactly as
        the official loop, so `torch.manual_seed(s)` just before reproduces its tokens on CPU;
        a generator draws from it instead; a list gives sample i its own generator.
        """
        labels = self._labels(y)
        return generate_tokens(
            self.model,
            labels,
            null_label=self.model.null_label,
            generators=generator,
            cfg=cfg,
            cfg_interval=cfg_interval,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )


def load_llamagen_pipeline(
    weights: str | Path | Mapping[str, Any],
    *,
    device: str | torch.device | None = None,
    vq: str | None = None,
    **model_args,
) -> LlamaGenPipeline:
    """`genzoo.load_official("llamagen", weights, device=None, vq=None, **ModelArgs)`; `vq` is
    the VQ weights file (vq_ds16_c2i.pt) that decodes the ids into images."""
    return LlamaGenPipeline.from_weights(weights, device=device, vq=vq, **model_args)


def llamagen_from_cli(c, device: str) -> LlamaGenPipeline:
    """`genzoo sample --official llamagen --weights GPT.pt --vq vq_ds16_c2i.pt --image-size R`:
    the token grid follows the image size (16× downsampling)."""
    if not c.vq:
        raise GenzooError("--official llamagen needs --vq FILE (the VQ that decodes its tokens)")
    grid = c.image_size // 16
    return load_llamagen_pipeline(c.weights, device=device, vq=c.vq, block_size=grid * grid)
