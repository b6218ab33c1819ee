"""Shared helpers of the benchmark scripts: which machine the figures come from."""

from __future__ import annotations

import os
import platform

import torch


def machine() -> str:
    """GPU name, or the CPU model name; plus torch version, threads and current load."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
        except (OSError, StopIteration):
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"load {load:.1f}"
    )
