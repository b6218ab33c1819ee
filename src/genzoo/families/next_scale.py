"""Next-scale prediction (VAR, Tian et al. 2024): train and sample a pyramid of token maps.

Training: the tokenizer turns the K id maps into the transformer's teacher-forcing input (f̂
after each scale, area-averaged to the next scale's side); the loss is the cross-entropy of all
L = Σ p_k² tokens, each weighted 1/L, so scale k counts p_k²/L (the official trainer's weights).

Sampling, scale by scale with a KV cache: the transformer gives the logits of all p_k² tokens
of scale k at once; classifier-free guidance ramps linearly over the scales,
    guided = (1 + t)·cond − t·uncond,   t = cfg · k/(K − 1),
from no guidance at the first scale to an effective 1 + cfg at the last (cfg = 0: none); then
top-k, then VAR's top-p, then one categorical draw per token. The drawn codes are added to f̂,
which gives the next scale's input. `more_smooth` replaces the codes fed forward (not the ids)
by a Gumbel-softmax mixture of codebook rows, for pictures only.

Randomness: per-sample generators give sample i its draws from generators[i] alone; a single
generator, or None (torch's global RNG), reproduces the official draw order: per scale one
`torch.multinomial` over the (B·p_k², V) matrix, then (with more_smooth) one exponential draw
of shape (B, p_k², V).

The family needs the tokenizer (codebook, φ convolutions, scales) to turn drawn ids into the
next input: pass it to the constructor (`NextScale(cfg, tokenizer)`, or `from_config(cfg,
tokenizer=...)`) or set `family.tokenizer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.families.base import Family
from genzoo.families.common import eval_mode
from genzoo.sampling.noise import Generators
from genzoo.sampling.progress import steps
from genzoo.sampling.tokens import check_token_options, filter_top_k


@dataclass
class NextScaleConfig:
    kind: ClassVar[str] = "next-scale"

    label_smooth: float = 0.0  # the official trainer's `ls`


def filter_top_p_ascending(logits: Tensor, top_p: float) -> Tensor:
    """VAR's nucleus filter: sort ascending, drop every token whose cumulative probability is
    <= 1 − top_p, except the most likely one; top_p <= 0 keeps everything. (It differs from
    the descending form at the boundary, so it is kept here as the official code has it.)"""
    if top_p <= 0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    drop_sorted = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
    drop_sorted[..., -1:] = False
    return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), -math.inf)


def guide_ramped(logits: Tensor, batch: int, cfg: float, scale: int, num_scales: int) -> Tensor:
    """(1 + t)·cond − t·uncond with t = cfg·k/(K − 1), in the official operation order."""
    t = cfg * (scale / (num_scales - 1))
    return (1 + t) * logits[:batch] - t * logits[batch:]


def _on(x: Tensor, g: torch.Generator | None) -> Tensor:
    return x if g is None else x.to(g.device)


def multinomial_with_replacement(probs: Tensor, g: torch.Generator | None) -> Tensor:
    """One id per row of probs (N, V), as the official VAR sampler draws it: with
    replacement=True, whose random stream differs from the default replacement=False."""
    return torch.multinomial(_on(probs, g), 1, replacement=True, generator=g)[:, 0]


def draw_ids(probs: Tensor, generators: Generators) -> Tensor:
    """Ids (B, l) from probs (B, l, V): one multinomial call over all B·l rows (None or one
    generator, the official draw), or sample i's rows from generators[i]."""
    b, l, v = probs.shape
    if generators is None or isinstance(generators, torch.Generator):
        return multinomial_with_replacement(probs.reshape(-1, v), generators).view(b, l)
    rows = [multinomial_with_replacement(p, g).to(probs.device) for p, g in zip(probs, generators)]
    return torch.stack(rows)


def gumbel_mixture(logits: Tensor, codebook: Tensor, tau: float, generators: Generators) -> Tensor:
    """Gumbel-softmax weights (not hardened) over the codebook, times its rows: (B, l, Cv).
    The Gumbel noise is −log(Exp(1)), drawn like `F.gumbel_softmax` (or per sample)."""
    if generators is None or isinstance(generators, torch.Generator):
        e = torch.empty_like(_on(logits, generators)).exponential_(generator=generators)
    else:
        e = torch.stack([torch.empty_like(_on(x, g)).exponential_(generator=g).to(logits.device)
                         for x, g in zip(logits, generators)])  # fmt: skip
    gumbels = -e.to(logits.device).log()
    soft = ((logits + gumbels) / tau).softmax(dim=-1)
    return soft @ codebook.unsqueeze(0)


class NextScale(Family):
    kind = "next-scale"
    Config = NextScaleConfig
    # cfg is VAR's guidance strength: 0 = none, 1.5 = an effective 2.5 at the last scale
    sample_options: ClassVar[dict[str, Any]] = {
        "cfg": 1.5,
        "top_k": 0,
        "top_p": 0.0,
        "more_smooth": False,
    }

    @classmethod
    def from_config(cls, cfg: NextScaleConfig, tokenizer=None, **_: Any) -> NextScale:
        return cls(cfg, tokenizer)

    def __init__(self, cfg: NextScaleConfig | None = None, tokenizer=None) -> None:
        super().__init__(cfg or NextScaleConfig())
        self.tokenizer = tokenizer

    def _tokenizer(self):
        tok = self.tokenizer
        if tok is None or not hasattr(tok, "var_input"):
            raise GenzooError(
                "the next-scale family needs the multi-scale VQ tokenizer (msvq) to build the "
                "transformer's inputs; pass it as NextScale(cfg, tokenizer) or set "
                "family.tokenizer"
            )
        return tok

    # -- training ---------------------------------------------------------------------------
    def loss(
        self,
        net: Any,
        z: Sequence[Tensor] | Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        step: int = 0,
        total_steps: int = 1,
    ) -> dict[str, Tensor]:
        """z: the K per-scale id maps (a list of (B, p_k²), or (B, L) concatenated). Returns the
        weighted cross-entropy ("loss"), token accuracy, and the last scale's loss ("loss_last").
        Label dropout is the trainer's; the drop-path draws come from `generator`."""
        tok = self._tokenizer()
        ids = tok.split_scales(z)
        target = torch.cat(ids, dim=1)
        logits = net(y, tok.var_input(ids), generator=generator)  # drop-path draws
        b, length, vocab = logits.shape
        ce = F.cross_entropy(
            logits.reshape(-1, vocab),
            target.reshape(-1),
            reduction="none",
            label_smoothing=self.cfg.label_smooth,
        ).view(b, length)
        weights = torch.full((1, length), 1 / length, device=ce.device)
        last = ids[-1].shape[1]
        return {
            "loss": ce.mul(weights).sum(dim=-1).mean(),
            "acc": (logits.argmax(dim=-1) == target).float().mean().detach(),
            "loss_last": ce[:, -last:].mean().detach(),
        }

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        net: Any,
        y: Tensor,
        *,
        generators: Generators,
        null_label: int | None,
        progress: bool = False,
        **options: Any,
    ) -> list[Tensor]:
        """The K per-scale id maps (B, p_k²) for labels y (B,), options as `sample_options`."""
        return self.sample_with_fhat(
            net, y, generators=generators, null_label=null_label, progress=progress, **options
        )[0]

    @torch.no_grad()
    def sample_with_fhat(
        self,
        net: Any,
        y: Tensor,
        *,
        generators: Generators,
        null_label: int | None,
        progress: bool = False,
        cfg: float = 1.5,
        top_k: int = 0,
        top_p: float = 0.0,
        more_smooth: bool = False,
    ) -> tuple[list[Tensor], Tensor]:
        """(ids per scale, the tokenizer's f̂ built from the codes fed forward); decoding f̂
        gives the official sampler's image (equal to decoding the ids unless more_smooth)."""
        check_token_options(1.0, top_k, top_p)
        if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg):
            raise GenzooError(f"cfg={cfg!r}: expected a finite number (0 = no guidance)")
        if null_label is None:
            raise GenzooError("next-scale sampling needs null_label (the network's null class)")
        tok = self._tokenizer()
        model = getattr(net, "module", net)  # DDP: the cache lives on the wrapped module
        y = torch.as_tensor(y, dtype=torch.long, device=tok.quant_conv.weight.device).view(-1)
        batch, num_scales, codebook = y.shape[0], tok.num_scales, tok.quantize.embedding.weight
        if not isinstance(generators, (torch.Generator, type(None))) and len(generators) != batch:
            raise GenzooError(f"got {len(generators)} generators for {batch} samples")
        labels = torch.cat([y, torch.full_like(y, null_label)])
        f_hat, x_next, ids = tok.empty_fhat(batch), None, []
        with eval_mode(model):
            model.setup_cache(2 * batch)
            try:
                for k in steps(range(num_scales), progress, "next-scale"):
                    logits = guide_ramped(
                        model.decode(x_next, labels, k), batch, cfg, k, num_scales
                    )
                    logits = filter_top_p_ascending(filter_top_k(logits, top_k), top_p)
                    idx = draw_ids(logits.softmax(dim=-1), generators).to(y.device)
                    ids.append(idx)
                    if more_smooth:  # temperature and sharpening as in the official sampler
                        ratio = k / (num_scales - 1)
                        tau = max(0.27 * (1 - ratio * 0.95), 0.005)
                        h = gumbel_mixture(logits.mul(1 + ratio), codebook, tau, generators)
                    else:
                        h = tok.quantize.embedding(idx)
                    p = tok.patch_nums[k]
                    h = h.transpose(1, 2).reshape(batch, tok.channels, p, p)
                    nxt = tok.next_input(k, f_hat, h)
                    x_next = nxt.view(batch, tok.channels, -1).transpose(1, 2)
            finally:
                model.clear_cache()
        return ids, f_hat
