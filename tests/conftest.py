"""Shared fixtures: a tiny trained run, and helpers to run the CLI in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run thousands of small ops: one thread is fastest and does not fight
    other processes for the cores (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Caches (reference features) go to a temporary folder, never to the user's home."""
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path_factory.mktemp("genzoo-cache")))


def run_cli(*args: str, torchrun: int = 0, check: bool = True, timeout: int = 300):
    """Run `genzoo ARGS` in a new process (optionally under torchrun with N CPU processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if torchrun:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
            "--standalone", "-m", "genzoo.cli", *args,
        ]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "genzoo.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


TINY_TRAIN = [
    "--preset", "dit-tiny", "--data", "shapes", "--res", "16", "--batch-size", "8",
    "--quiet", "--device", "cpu", "--set", "train.grid_steps=2", "--set", "train.log_every=1",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A dit-tiny run on 16×16 shapes, trained for 2 steps (in this process)."""
    from genzoo.cli import main

    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY_TRAIN, "--steps", "2", "--out", str(out)]) == 0
    return out


def tiny_vae(seed: int = 0):
    """A randomly initialised diffusers AutoencoderKL small enough for CPU tests (stride 2)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    ).eval()
