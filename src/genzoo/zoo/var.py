"""Official VAR checkpoints (FoundationVision/VAR): the multi-scale VQ-VAE and the transformers.

    tok = load_var_vqvae("vae_ch160v4096z32.pth")                 # -> MultiScaleVQTokenizer
    var = load_var("var_d16.pth", "vae_ch160v4096z32.pth")         # or the tokenizer object
    ids = var.sample_tokens([207, 360], cfg=1.5, top_k=900, top_p=0.96)  # (B, L) int64
    images = var.sample([207, 360], cfg=4, top_k=900, top_p=0.95, generator=g)  # [0, 1]

Both files are plain state dicts loaded strictly into genzoo modules with the official layout.
Constructor arguments use the official names; those not given are read from the tensor shapes.
The VQ-VAE's per-scale usage buffer (a training statistic whose first axis is the number of
scales) is replaced when its scale count differs, as the official loader does, so one file
serves any scale schedule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from genzoo.backbones.var import VAR, VARConfig
from genzoo.config import RunConfig
from genzoo.errors import GenzooError
from genzoo.families.next_scale import NextScale, NextScaleConfig
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.pipeline import Pipeline
from genzoo.tokenizers.msvq import (
    PATCH_NUMS_256,
    PATCH_NUMS_512,
    PATCH_NUMS_1024,
    MSVQConfig,
    MultiScaleVQTokenizer,
)
from genzoo.zoo.kinds import describe_kind, guess_kind
from genzoo.zoo.official import read_state_dict, where_of

VQVAE_ARGS = (
    "vocab_size", "z_channels", "ch", "beta", "using_znorm", "quant_conv_ks", "quant_resi",
    "share_quant_resi", "default_qresi_counts", "v_patch_nums",
)  # fmt: skip
VAR_ARGS = (
    "num_classes", "depth", "embed_dim", "num_heads", "mlp_ratio", "drop_path_rate", "norm_eps",
    "shared_aln", "cond_drop_rate", "attn_l2_norm", "patch_nums",
)  # fmt: skip
# Accepted for compatibility; they change nothing at inference (dropout, fused kernels).
INERT_ARGS = (
    "dropout", "test_mode", "drop_rate", "attn_drop_rate", "flash_if_available",
    "fused_if_available",
)  # fmt: skip
USAGE_BUFFER = "quantize.ema_vocab_hit_SV"
KNOWN_SCHEDULES = {
    sum(p * p for p in s): s for s in (PATCH_NUMS_256, PATCH_NUMS_512, PATCH_NUMS_1024)
}


def _not_this_kind(weights: Any, state: Mapping, what: str, key: str) -> GenzooError:
    kind = guess_kind(state)
    looks = f"it looks like {describe_kind(kind)}" if kind else f"it has no {key!r}"
    return GenzooError(f"{where_of(weights)} does not hold {what}: {looks}")


def _check_names(kwargs: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(kwargs) - set(allowed) - set(INERT_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown official {what} argument(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(allowed)}"
        )


def _unwrap(weights: Any) -> Any:
    """A training checkpoint held in memory ({"trainer": {"var_wo_ddp": ...}}) -> its weights."""
    trainer = weights.get("trainer") if isinstance(weights, Mapping) else None
    if isinstance(trainer, Mapping) and isinstance(trainer.get("var_wo_ddp"), Mapping):
        return trainer["var_wo_ddp"]
    return weights


def _load_strict(module: nn.Module, state: dict, weights: Any, built: str, hint: str) -> None:
    expected = shapes_of(module.state_dict())
    problems = state_dict_problems(expected, shapes_of(state))
    if problems:
        raise GenzooError(
            f"the weights in {where_of(weights)} do not fit {built}:\n  "
            + "\n  ".join(problems)
            + f"\n{hint}"
        )
    copy = isinstance(weights, Mapping)  # never alias tensors the caller still holds
    state = {
        k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=copy)
        for k, v in state.items()
    }
    module.load_state_dict(state, strict=True, assign=True)


# -- the multi-scale VQ-VAE ---------------------------------------------------------------------


def infer_vqvae_args(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments visible in the tensor shapes (not the scale schedule)."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}
    if "encoder.conv_in.weight" in shape:
        found["ch"] = shape["encoder.conv_in.weight"][0]
    if "quantize.embedding.weight" in shape:
        found["vocab_size"], found["z_channels"] = shape["quantize.embedding.weight"]
    if "quant_conv.weight" in shape:
        found["quant_conv_ks"] = shape["quant_conv.weight"][-1]
    phis = {m.group(1) for k in shape if (m := re.match(r"quantize\.quant_resi\.(.+)\.weight$", k))}
    if "qresi" in phis:
        found["share_quant_resi"] = 1
    elif shared := [p for p in phis if p.startswith("qresi_ls.")]:
        found["share_quant_resi"] = len(shared)
    elif phis:
        found.update(share_quant_resi=0, default_qresi_counts=len(phis))
    elif "quantize.embedding.weight" in shape:
        found["quant_resi"] = 0.0  # no φ convolutions: identity refinement
    return found


def load_var_vqvae(weights, *, device=None, **kwargs: Any) -> MultiScaleVQTokenizer:
    """The official VQ-VAE (`vae_ch160v4096z32.pth`, a `.safetensors`, or a state dict) as a
    frozen `msvq` tokenizer on `device` (default: CUDA when available). kwargs: the official
    `VQVAE` constructor names; the scale schedule `v_patch_nums` defaults to the 256 px one,
    the rest is read from the file."""
    _check_names(kwargs, VQVAE_ARGS, "VQVAE")
    state = read_state_dict(weights)
    if "quantize.embedding.weight" not in state:
        raise _not_this_kind(weights, state, "VAR's VQ-VAE", "quantize.embedding.weight")
    inferred = infer_vqvae_args(state)
    args = {**inferred, **{k: v for k, v in kwargs.items() if k in VQVAE_ARGS}}
    nums = tuple(args.setdefault("v_patch_nums", PATCH_NUMS_256))
    if args.get("default_qresi_counts") == len(nums):
        args["default_qresi_counts"] = 0  # one φ per scale, the official default count
    source = "" if isinstance(weights, Mapping) else str(weights)
    cfg = MSVQConfig(source=source, **args)
    with torch.device("meta"):
        tokenizer = MultiScaleVQTokenizer(cfg)
    usage = state.get(USAGE_BUFFER)
    if usage is not None and usage.ndim == 2 and usage.shape[0] != len(nums):
        state = {**state, USAGE_BUFFER: torch.zeros(len(nums), usage.shape[1])}
    built = f"the official VQVAE({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    hint = f"The file's shapes suggest {inferred}; pass those arguments or none."
    _load_strict(tokenizer, dict(state), weights, built, hint)
    return tokenizer.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


# -- the VAR transformer --------------------------------------------------------------------------


def infer_var_args(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The `VAR` constructor arguments visible in the tensor shapes. The head count shows only
    with attn_l2_norm (one temperature per head); otherwise the depth rule (heads = depth) is
    used when the width is 64·depth. The scales are read from L when it is a known schedule."""
    shape = shapes_of(state)
    found: dict[str, Any] = {}
    blocks = {int(m.group(1)) for k in shape if (m := re.match(r"blocks\.(\d+)\.", k))}
    if blocks:
        found["depth"] = max(blocks) + 1
    if "pos_1LC" in shape:
        _, length, found["embed_dim"] = shape["pos_1LC"]
        if length in KNOWN_SCHEDULES:
            found["patch_nums"] = KNOWN_SCHEDULES[length]
    if "class_emb.weight" in shape:
        found["num_classes"] = shape["class_emb.weight"][0] - 1
    found["shared_aln"] = "shared_ada_lin.1.weight" in shape
    found["attn_l2_norm"] = "blocks.0.attn.scale_mul_1H11" in shape
    if found["attn_l2_norm"]:
        found["num_heads"] = shape["blocks.0.attn.scale_mul_1H11"][1]
    elif found.get("embed_dim") == 64 * found.get("depth", 0):
        found["num_heads"] = found["depth"]
    if "blocks.0.ffn.fc1.weight" in shape and found.get("embed_dim"):
        found["mlp_ratio"] = shape["blocks.0.ffn.fc1.weight"][0] / found["embed_dim"]
    return found


class VARTokenModel(nn.Module):
    """`model(tokens, y)`: teacher-forced logits (B, L, V) from the K id maps concatenated
    (B, L) (or their list) and labels y (B,), with y = num_classes the null class. Called as
    `model(label, x_input)` with a float (B, L − p_0², Cv) input it is the official forward.
    The tokenizer is kept outside the module tree, as the official model keeps its VQ-VAE.
    It samples as the transformer does (its KV cache and scale-by-scale `decode`)."""

    def __init__(self, var: VAR, tokenizer: MultiScaleVQTokenizer):
        super().__init__()
        self.var = var
        self._tokenizer = (tokenizer,)

    def forward(self, tokens_or_label, y_or_input) -> torch.Tensor:
        if isinstance(y_or_input, torch.Tensor) and y_or_input.is_floating_point():
            return self.var(tokens_or_label, y_or_input)
        tokenizer = self._tokenizer[0]
        y = torch.as_tensor(y_or_input, dtype=torch.long, device=self.var.pos_1LC.device)
        return self.var(y.view(-1), tokenizer.var_input(tokens_or_label))

    def setup_cache(self, batch_size: int, *args: Any, **kwargs: Any) -> None:
        self.var.setup_cache(batch_size, *args, **kwargs)

    def clear_cache(self) -> None:
        self.var.clear_cache()

    def decode(self, x_scale, y, scale: int) -> torch.Tensor:
        return self.var.decode(x_scale, y, scale)


# The README's FID protocol (cfg 1.5, top-k 900, top-p 0.96; 50 images per class): the options
# the Pipeline's uint8 `sample` (and `genzoo sample --official var`) applies unless told otherwise.
PUBLISHED_PROTOCOL = {"cfg": 1.5, "top_k": 900, "top_p": 0.96}


class OfficialVAR(Pipeline):
    """A loaded VAR: `model` (token logits), `var` (the official-layout transformer),
    `tokenizer`, `config`, `device`, and the official sampler as `sample_tokens` / `sample`.

    `sample(y, cfg, top_k, top_p, more_smooth, generator)` is the official
    `autoregressive_infer_cfg`: float images (B, 3, H, W) in [0, 1]. Given `seed=` or `indices=`
    it is the Pipeline's instead: uint8 NHWC images, sample i drawn from (seed, i) alone, with
    PUBLISHED_PROTOCOL's options unless given (what `genzoo sample` and `save_grid` call)."""

    def __init__(self, var: VAR, tokenizer: MultiScaleVQTokenizer, device: torch.device):
        var, tokenizer = var.to(device).eval(), tokenizer.to(device).eval()
        run = RunConfig(preset="official-var", model=var.cfg, family=NextScaleConfig())
        run.tokenizer, run.data.res = tokenizer.cfg, tokenizer.stride * tokenizer.patch_nums[-1]
        model = VARTokenModel(var, tokenizer)
        family = NextScale(tokenizer=tokenizer)
        super().__init__(model, family, tokenizer, run, device, default_options=PUBLISHED_PROTOCOL)
        self.var = var
        self.config: VARConfig = var.cfg

    def labels(self, y, batch_size: int | None, generator: torch.Generator | None) -> torch.Tensor:
        """Official label rules: an int is one class for all (negative: the null class); None
        draws classes uniformly with the sampler's generator (or the global RNG)."""
        n = self.num_classes
        if y is None and not isinstance(generator, (torch.Generator, type(None))):
            raise GenzooError("y=None draws the labels from one generator; pass y with a list")
        if y is None or isinstance(y, int):
            if batch_size is None:
                raise GenzooError("with y=None or an int label, pass batch_size=B")
            if y is None:
                uniform = torch.full((1, n), 1.0 / n, device=self.device)
                where = uniform if generator is None else uniform.to(generator.device)
                drawn = torch.multinomial(where, batch_size, replacement=True, generator=generator)
                return drawn.reshape(batch_size).to(self.device)
            return torch.full((batch_size,), n if y < 0 else y, device=self.device)
        y = torch.as_tensor(y, dtype=torch.long, device=self.device).reshape(-1)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > n):
            raise GenzooError(f"labels must lie in [0, {n}] ({n} = null class); got {y.tolist()}")
        return y

    def _run(self, y, cfg, top_k, top_p, more_smooth, generator, batch_size):
        labels = self.labels(y, batch_size, generator)
        return self.family.sample_with_fhat(
            self.var, labels, generators=generator, null_label=self.num_classes,
            cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth,
        )  # fmt: skip

    def sample_tokens(
        self, y, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
        generator: torch.Generator | None = None, batch_size: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """The ids of `autoregressive_infer_cfg` (B, L) int64, K maps concatenated coarse to
        fine. generator: every draw's source (the official g_seed=S is a new generator seeded
        with S on the model's device); None: the global RNG, in the official order."""
        ids, _ = self._run(y, cfg, top_k, top_p, more_smooth, generator, batch_size)
        return torch.cat(ids, dim=1)

    def sample(
        self, y, cfg: float | None = None, top_k: int | None = None, top_p: float | None = None,
        more_smooth: bool = False, generator: torch.Generator | None = None,
        batch_size: int | None = None, *, seed: int | None = None, indices=None,
        progress: bool = False,
    ) -> torch.Tensor | np.ndarray:  # fmt: skip
        """Images (B, 3, H, W) in [0, 1], as `autoregressive_infer_cfg` returns them (defaults
        cfg 1.5, top_k 0, top_p 0); with `seed` or `indices`, the Pipeline's uint8 samples."""
        given = {"cfg": cfg, "top_k": top_k, "top_p": top_p}
        if seed is not None or indices is not None:
            if generator is not None:
                raise GenzooError("pass a generator (official draws) or seed=, not both")
            options = {k: v for k, v in given.items() if v is not None}
            return Pipeline.sample(
                self, y, seed=seed or 0, indices=indices, batch_size=batch_size or 64,
                progress=progress, more_smooth=more_smooth, **options,
            )  # fmt: skip
        official = {"cfg": 1.5, "top_k": 0, "top_p": 0.0}
        options = {k: official[k] if v is None else v for k, v in given.items()}
        _, f_hat = self._run(y, more_smooth=more_smooth, generator=generator,
                             batch_size=batch_size, **options)  # fmt: skip
        with torch.no_grad():
            return self.tokenizer.fhat_to_img(f_hat).add_(1).mul_(0.5)


def load_var(weights, vae, *, device=None, vae_kwargs: Mapping[str, Any] | None = None, **kwargs):
    """An official VAR transformer (`var_d16.pth` … `var_d36.pth`, a `.safetensors`, a state
    dict, or an in-memory training checkpoint) with its VQ-VAE, in eval mode on `device`
    (default: CUDA when available). `vae`: a tokenizer from `load_var_vqvae` or the VQ-VAE
    weights (built with `vae_kwargs` and the transformer's scales). kwargs: the official `VAR`
    constructor names; those not given are read from the shapes."""
    _check_names(kwargs, VAR_ARGS, "VAR")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = read_state_dict(_unwrap(weights))
    if "pos_1LC" not in state:
        raise _not_this_kind(weights, state, "a VAR transformer", "pos_1LC")
    inferred = infer_var_args(state)
    args = {**inferred, **{k: v for k, v in kwargs.items() if k in VAR_ARGS}}
    if isinstance(vae, MultiScaleVQTokenizer):
        args.setdefault("patch_nums", vae.patch_nums)
    if "patch_nums" not in args:
        raise GenzooError(
            f"the scales of {where_of(weights)} (L = {tuple(state['pos_1LC'].shape)[1]} tokens) "
            "are not a published schedule; pass patch_nums=(...)"
        )
    if "num_heads" not in args:
        raise GenzooError("num_heads cannot be read from these weights; pass num_heads=...")
    if isinstance(vae, MultiScaleVQTokenizer):
        tokenizer = vae
    else:
        vae_args = {"v_patch_nums": args["patch_nums"], **(vae_kwargs or {})}
        tokenizer = load_var_vqvae(vae, device="cpu", **vae_args)
    if tuple(tokenizer.patch_nums) != tuple(args["patch_nums"]):
        raise GenzooError(
            f"the tokenizer's scales {tokenizer.patch_nums} differ from the transformer's "
            f"{tuple(args['patch_nums'])}; load the VQ-VAE with v_patch_nums equal to them"
        )
    args.setdefault("drop_path_rate", 0.0)  # inactive in eval; keeps the config honest
    cfg = VARConfig(**args, vocab_size=tokenizer.vocab_size, z_channels=tokenizer.channels)
    with torch.device("meta"):
        var = VAR(cfg)
    built = f"the official VAR({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    hint = (
        f"The file's shapes suggest {inferred}, for a tokenizer with V={tokenizer.vocab_size} "
        f"and Cv={tokenizer.channels}; pass matching arguments or none."
    )
    _load_strict(var, state, weights, built, hint)
    return OfficialVAR(var, tokenizer, dev)


def var_from_cli(c, device: str) -> OfficialVAR:
    """`genzoo sample --official var --weights var_d16.pth --vae vae_ch160v4096z32.pth`: the
    scales are read from the transformer; sampling follows PUBLISHED_PROTOCOL unless --cfg,
    --top-k or --top-p say otherwise (pass --per-class 50 for the published 50,000 images)."""
    from genzoo.config import SampleConfig

    vae = c.vq or (c.vae if c.vae != SampleConfig().vae else "")
    if not vae:
        raise GenzooError(
            "--official var needs --vae FILE: the multi-scale VQ-VAE that decodes its tokens "
            "(vae_ch160v4096z32.pth)"
        )
    return load_var(c.weights, vae, device=device)
