"""Flow matching / stochastic interpolants (SiT conventions: t=0 noise, t=1 data)."""

from dataclasses import dataclass


@dataclass
class FlowConfig:
    path: str = "linear"  # "linear" | "gvp"
    predict: str = "velocity"
