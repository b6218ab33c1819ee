"""A discrete tokenizer over a LlamaGen-layout VQ model, and the loader of official VQ weights.

    tok = load_official_vq("vq_ds16_c2i.pt")            # VQ-16, official defaults
    ids = tok.encode(x)                                  # (N, H/16, W/16) long, raster order
    images = tok.decode(ids)                             # raw decoder output, nominally [-1, 1]

`decode` also takes quantized latents (N, codebook_embed_dim, h, w), decoded as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems
from genzoo.tokenizers.base import Generators, Tokenizer
from genzoo.tokenizers.vq_model import PRESETS, VQConfig, VQModel, check_vq_config
from genzoo.zoo.official import read_state_dict, where_of

# The official tokenizer `ModelArgs` fields, plus the base width genzoo makes configurable.
OFFICIAL_VQ_ARGS = (
    "codebook_size",
    "codebook_embed_dim",
    "codebook_l2_norm",
    "codebook_show_usage",
    "commit_loss_beta",
    "entropy_loss_ratio",
    "encoder_ch_mult",
    "decoder_ch_mult",
    "z_channels",
    "dropout_p",
    "ch",
)
CODEBOOK_KEY = "quantize.embedding.weight"
USAGE_KEY = "quantize.codebook_used"  # training statistics: loaded when present, else zeros


@dataclass
class VQTokenizerConfig:
    kind: ClassVar[str] = "vq"
    # a genzoo run directory trained with the vqgan family, or a VQ weights file (.pt,
    # .safetensors) in the LlamaGen layout, whose sizes are read from its tensor shapes
    source: str = ""
    ema: bool = True  # for a run directory: its EMA weights (else the training weights)


class VQTokenizer(Tokenizer):
    """Frozen VQ tokenizer: images ↔ code ids (N, h, w) from a `VQModel`."""

    Config = VQTokenizerConfig
    discrete = True
    scale = 1.0

    @classmethod
    def from_config(cls, cfg: VQTokenizerConfig) -> VQTokenizer:
        if not cfg.source:
            raise GenzooError(
                "tokenizer 'vq' needs a source: vq:RUN_DIR (a run of the vqgan family) or "
                "vq:FILE (VQ weights in the LlamaGen layout, e.g. vq_ds16_c2i.pt)"
            )
        path = Path(cfg.source).expanduser()
        if path.is_dir():
            model = _model_from_run(path, cfg.ema)
        else:
            state = read_state_dict(path)
            model = build_vq_model(VQConfig(**infer_vq_config(state)), state, str(path))
        return cls(model, spec=f"vq:{cfg.source}")

    def __init__(self, model: VQModel, spec: str = "vq") -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.stride = model.cfg.stride
        self.channels = model.cfg.codebook_embed_dim
        self.vocab_size = model.cfg.codebook_size
        self.freeze()

    def latent_shape(self, res: int) -> tuple[int, int]:
        """(h, w) of the id grid of a res × res image."""
        _, h, w = super().latent_shape(res)
        return (h, w)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images, float NCHW in [-1, 1] → ids (N, H/stride, W/stride), long. No randomness."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise GenzooError(
                f"tokenizer {self.spec}: encode expects images (N, 3, H, W), got shape "
                f"{tuple(x.shape)}"
            )
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise GenzooError(
                f"tokenizer {self.spec}: image size {x.shape[2]}×{x.shape[3]} is not a multiple "
                f"of the stride {self.stride}; resize or crop to a multiple of {self.stride}"
            )
        return self.model.encode(x.to(self._dtype)).ids

    @torch.no_grad()
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Images → quantized latents (N, codebook_embed_dim, h, w), the codes of `encode`."""
        return self.model.quantize.lookup(self.encode(x))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Ids (N, h, w) or quantized latents (N, C, h, w) → images (N, 3, H, W), not clamped."""
        if not z.is_floating_point():
            self.check_ids(z)
            return self.model.decode_ids(z.long())
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise GenzooError(
                f"tokenizer {self.spec}: float latents must be (N, {self.channels}, h, w), got "
                f"shape {tuple(z.shape)}; pass integer ids (N, h, w) or quantized latents"
            )
        # contiguous: a channels-last view would pick other conv kernels (other rounding)
        return self.model.decode(z.to(self._dtype).contiguous())

    def check_ids(self, ids: torch.Tensor) -> None:
        if ids.ndim != 3:
            raise GenzooError(
                f"tokenizer {self.spec}: ids must be (N, h, w), got shape {tuple(ids.shape)}"
            )
        if ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise GenzooError(
                f"tokenizer {self.spec}: code id {bad} is outside the codebook [0, "
                f"{self.vocab_size}); ids must come from this tokenizer's codebook (size "
                f"{self.vocab_size})"
            )

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype


# -- official weights -------------------------------------------------------------------------


def official_vq_config(**kwargs: Any) -> VQConfig:
    """A VQConfig from the official `ModelArgs` names (missing ones take the official defaults).

    `dropout` is accepted for `dropout_p`; `preset="VQ-16"` or `"VQ-8"` sets both ch_mults.
    """
    args = dict(kwargs)
    if "dropout" in args:
        if "dropout_p" in args:
            raise GenzooError("give dropout_p or dropout (the same setting), not both")
        args["dropout_p"] = args.pop("dropout")
    preset = args.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise GenzooError(f"unknown VQ preset {preset!r}; choose one of {', '.join(PRESETS)}")
        args.setdefault("encoder_ch_mult", PRESETS[preset])
        args.setdefault("decoder_ch_mult", PRESETS[preset])
    unknown = sorted(set(args) - set(OFFICIAL_VQ_ARGS))
    if unknown:
        raise GenzooError(
            f"unknown VQ argument(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(OFFICIAL_VQ_ARGS)} (or preset='VQ-16' / 'VQ-8')"
        )
    cfg = VQConfig(**args)
    check_vq_config(cfg)
    return cfg


def infer_vq_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The VQ arguments visible in the tensor shapes (widths, levels, codebook, usage buffer);
    the others (codebook_l2_norm, losses, dropout) keep their defaults."""
    shape = {k: tuple(v.shape) for k, v in state.items()}
    found: dict[str, Any] = {}
    if len(shape.get("encoder.conv_in.weight", ())) == 4:
        found["ch"] = shape["encoder.conv_in.weight"][0]
    if len(shape.get("encoder.conv_out.weight", ())) == 4:
        found["z_channels"] = shape["encoder.conv_out.weight"][0]
    if len(shape.get(CODEBOOK_KEY, ())) == 2:
        found["codebook_size"], found["codebook_embed_dim"] = shape[CODEBOOK_KEY]
    if "ch" in found:
        for part in ("encoder", "decoder"):
            pattern = re.compile(rf"{part}\.conv_blocks\.(\d+)\.res\.0\.conv1\.weight")
            widths = {int(m.group(1)): shape[k][0] for k in shape if (m := pattern.fullmatch(k))}
            if widths and sorted(widths) == list(range(len(widths))):
                mult = [widths[i] // found["ch"] for i in sorted(widths)]
                # the decoder's conv_blocks run from the deepest level to the shallowest
                found[f"{part}_ch_mult"] = tuple(mult if part == "encoder" else mult[::-1])
    found["codebook_show_usage"] = USAGE_KEY in shape
    return found


def _model_from_run(run: Path, ema: bool) -> VQModel:
    """The VQ model of a genzoo run directory (its config and latest checkpoint)."""
    from genzoo.config import RunConfig
    from genzoo.train.checkpoint import latest_checkpoint

    if not (run / "config.json").is_file():
        raise GenzooError(f"vq:{run}: not a genzoo run directory (no config.json)")
    model_cfg = RunConfig.load(run / "config.json").model
    if not isinstance(model_cfg, VQConfig):
        raise GenzooError(
            f"vq:{run}: this run trained a {type(model_cfg).__name__}, not a VQ model; pass a "
            "run of the vqgan family"
        )
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise GenzooError(f"vq:{run}: the run has no checkpoint yet; train it first")
    weights = ckpt.path / ("ema.safetensors" if ema else "model.safetensors")
    return build_vq_model(model_cfg, read_state_dict(weights), str(weights))


def _codebook_problem(cfg: VQConfig, state: Mapping[str, torch.Tensor]) -> str | None:
    """Which codebook setting disagrees with the file, worded for the user, or None."""
    if CODEBOOK_KEY not in state:
        return None
    size, dim = tuple(state[CODEBOOK_KEY].shape)
    problems = []
    if size != cfg.codebook_size:
        problems.append(
            f"codebook_size: the file has {size} codes but the config says "
            f"{cfg.codebook_size}; pass codebook_size={size}"
        )
    if dim != cfg.codebook_embed_dim:
        problems.append(
            f"codebook_embed_dim: the file's codes have {dim} dimensions but the config says "
            f"{cfg.codebook_embed_dim}; pass codebook_embed_dim={dim}"
        )
    return "; ".join(problems) or None


def build_vq_model(
    cfg: VQConfig, state: Mapping[str, torch.Tensor], where: str = "the given state dict"
) -> VQModel:
    """A VQModel holding `state` (official layout, strict; `quantize.codebook_used` optional)."""
    if codebook := _codebook_problem(cfg, state):
        raise GenzooError(f"the VQ weights in {where} do not fit the config: {codebook}")
    with torch.device("meta"):  # shapes only, and no draw from the global RNG
        model = VQModel(cfg)
    expected = shapes_of(model.state_dict())
    found = {k: v for k, v in shapes_of(state).items() if k != USAGE_KEY or k in expected}
    problems = state_dict_problems(expected, found, optional=(USAGE_KEY,))
    if problems:
        built = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in OFFICIAL_VQ_ARGS)
        seen = infer_vq_config(state)
        seen.pop("codebook_show_usage", None)
        hint = ", ".join(f"{k}={v!r}" for k, v in seen.items() if getattr(cfg, k) != v)
        raise GenzooError(
            f"the weights in {where} do not fit the VQ model VQModel({built}):\n  "
            + "\n  ".join(problems)
            + (f"\nThe file's shapes suggest {hint}." if hint else "")
            + "\nVQ-16 has encoder_ch_mult=decoder_ch_mult=(1, 1, 2, 2, 4), VQ-8 (1, 2, 2, 4)."
        )
    tensors = {k: state[k].to("cpu", torch.float32, copy=True) for k in found}
    if USAGE_KEY in expected and USAGE_KEY not in tensors:
        tensors[USAGE_KEY] = torch.zeros(expected[USAGE_KEY])
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def load_official_vq(
    weights: str | Path | Mapping[str, Any], device: str | torch.device | None = None, **kwargs: Any
) -> VQTokenizer:
    """The `llamagen-vq` official loader: LlamaGen VQ weights as a frozen `VQTokenizer`.

    `weights`: a `.pt` holding the state dict under "model" (as released; "ema" is preferred when
    present, as the VQ demo does), a flat `.pt`, a `.safetensors` file, or a state dict.
    `kwargs`: the official VQ `ModelArgs` (codebook_size, codebook_embed_dim, codebook_l2_norm,
    codebook_show_usage, commit_loss_beta, entropy_loss_ratio, encoder_ch_mult, decoder_ch_mult,
    z_channels, dropout_p) plus `ch` (base width, 128); the defaults are VQ-16's.
    `device`: default CUDA when available, else CPU.
    """
    cfg = official_vq_config(**kwargs)  # argument names first, before reading a large file
    state = read_state_dict(weights)
    where = where_of(weights)
    model = build_vq_model(cfg, state, where)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return VQTokenizer(model, spec="llamagen-vq").to(dev)
