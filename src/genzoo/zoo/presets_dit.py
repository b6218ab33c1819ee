"""DiT / SiT presets: `dit-s2` … `dit-xl8`, `sit-s2` … `sit-xl8`, and tiny ones for tests/demo."""

from __future__ import annotations

from genzoo.backbones.dit import DiTConfig
from genzoo.config import RunConfig
from genzoo.families.diffusion import DiffusionConfig
from genzoo.families.flow import FlowConfig

# name: (depth, hidden, heads) — DiT paper Table 1; SiT uses the same sizes.
SIZES = {
    "s": (12, 384, 6),
    "b": (12, 768, 12),
    "l": (24, 1024, 16),
    "xl": (28, 1152, 16),
}
# name: (depth, hidden, heads, patch)
TINY = {
    "tiny": (2, 64, 2, 2),  # unit tests
    "demo": (4, 128, 4, 4),  # the embedded CPU demo: 64 tokens at 32×32, minutes on 2 cores
}


def _names() -> list[str]:
    out = []
    for fam in ("dit", "sit"):
        out += [f"{fam}-{s}{p}" for s in SIZES for p in (2, 4, 8)]
        out += [f"{fam}-{s}" for s in TINY]
    return out


PRESETS = _names()


def preset(key: str) -> RunConfig:
    fam, size = key.split("-", 1)
    m = DiTConfig()
    if size in TINY:
        m.depth, m.hidden_size, m.num_heads, m.patch_size = TINY[size]
    else:
        m.patch_size = int(size[-1])
        m.depth, m.hidden_size, m.num_heads = SIZES[size[:-1]]
    # SiT drops the sigma half of the output; a genzoo-trained SiT does not learn it at all.
    m.learn_sigma = fam == "dit"
    family = DiffusionConfig(learn_sigma=True) if fam == "dit" else FlowConfig()
    return RunConfig(preset=key, model=m, family=family)
