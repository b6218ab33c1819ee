"""DiT (Peebles & Xie 2023) with optional LightningDiT / DiMR switches."""

from dataclasses import dataclass


@dataclass
class DiTConfig:
    """Official DiT constructor arguments, plus switches that default to the official layout."""

    input_size: int = 32  # latent (or pixel) side
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    # switches (official DiT: adaln / layernorm / gelu / sincos / no qk-norm)
    time_cond: str = "adaln"  # "adaln" | "tdln" (DiMR time-dependent LayerNorm)
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" (tanh approx.) | "swiglu"
    pos: str = "sincos"  # "sincos" (absolute table) | "rope" (2-D rotary)
    qk_norm: bool = False
