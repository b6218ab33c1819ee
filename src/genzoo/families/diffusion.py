"""Gaussian diffusion (DDPM / IDDPM as used by ADM and DiT)."""

from dataclasses import dataclass


@dataclass
class DiffusionConfig:
    noise_schedule: str = "linear"  # "linear" | "cosine" (squaredcos_cap_v2)
    diffusion_steps: int = 1000
    predict: str = "eps"  # "eps" | "v" | "x0"
    learn_sigma: bool = True  # learned-range variance, hybrid MSE + VLB loss
