"""Shared building blocks of genzoo's backbones (one file per idea)."""

from genzoo.nn.attention import Attention
from genzoo.nn.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    sincos_pos_embed_2d,
    timestep_embedding,
)
from genzoo.nn.mlp import GeluMlp, SwiGLU, make_mlp
from genzoo.nn.modulation import adaln_modulation, modulate
from genzoo.nn.norms import RMSNorm, make_norm
from genzoo.nn.rope import AxialRoPE
from genzoo.nn.tdln import TimeDependentNorm, TimeDependentParameter

__all__ = [
    "Attention",
    "AxialRoPE",
    "GeluMlp",
    "LabelEmbedder",
    "PatchEmbed",
    "RMSNorm",
    "SwiGLU",
    "TimeDependentNorm",
    "TimeDependentParameter",
    "TimestepEmbedder",
    "adaln_modulation",
    "make_mlp",
    "make_norm",
    "modulate",
    "sincos_pos_embed_2d",
    "timestep_embedding",
]
