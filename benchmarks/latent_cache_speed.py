"""Training-data throughput (img/s): cached SD-VAE latents vs encoding every batch on the fly.

The VAE is a randomly initialised `AutoencoderKL` with the SD-VAE configuration (block channels
128, 256, 512, 512; 2 layers per block; 4 latent channels), so its cost is the real one and
nothing is downloaded. Images come from the procedural `shapes` dataset at --res.

Two measurements per pipeline:
* data: producing a batch of training latents (read + flip + encode, or a read from the cache);
* step: the same plus one diffusion training step of a DiT preset (forward, backward, AdamW).
The one-off cost of writing the cache is reported too.

    python benchmarks/latent_cache_speed.py --res 256 --num 16 --batch-size 8
    python benchmarks/latent_cache_speed.py --res 128 --num 32 --device cuda --model dit-xl2
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from genzoo.data.latents import LatentDataset, encode_dataset
from genzoo.data.shapes import ShapesDataset
from genzoo.data.transforms import to_float
from genzoo.tokenizers import build_tokenizer

SD_VAE = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def batches(count: int, batch_size: int, epochs: int, seed: int):
    """(indices, flips) of shuffled batches, drawn the way a training loop draws them."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(count)
        for start in range(0, count - batch_size + 1, batch_size):
            indices = order[start : start + batch_size]
            yield indices, rng.integers(0, 2, size=batch_size)


def on_the_fly(images: ShapesDataset, tokenizer, indices, flips, device: str, seed: int):
    pixels = torch.stack([images.get(int(i), bool(f))[0] for i, f in zip(indices, flips)])
    generator = torch.Generator().manual_seed(seed)
    return tokenizer.encode(to_float(pixels).to(device), generator=generator)


def from_cache(cache: LatentDataset, indices, flips, device: str):
    return cache.get_batch(indices, flips)[0].to(device)


def make_step(model_name: str, res: int, device: str):
    """One diffusion training step of `model_name` on latents, or None for --model none."""
    if model_name == "none":
        return None
    from genzoo.backbones import build_backbone
    from genzoo.families import build_family
    from genzoo.zoo.presets import preset

    cfg = preset(model_name)
    cfg.model.input_size, cfg.model.in_channels = res // 8, 4
    torch.manual_seed(0)
    net = build_backbone(cfg.model).to(device).train()
    family = build_family(cfg)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step(latents: torch.Tensor) -> None:
        labels = torch.zeros(len(latents), dtype=torch.long, device=device)
        optimizer.zero_grad(set_to_none=True)
        family.loss(net, latents, labels)["loss"].backward()
        optimizer.step()

    return step


def throughput(make_batch, step, plan, device: str) -> float:
    """img/s over `plan` after one warm-up batch."""
    plan = list(plan)
    for indices, flips in plan[:1]:
        latents = make_batch(indices, flips)
        if step is not None:
            step(latents)
    sync(device)
    began = time.perf_counter()
    for indices, flips in plan[1:]:
        latents = make_batch(indices, flips)
        if step is not None:
            step(latents)
    sync(device)
    return sum(len(i) for i, _ in plan[1:]) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--res", type=int, default=256, help="image side (multiple of 8)")
    parser.add_argument("--num", type=int, default=16, help="images in the dataset")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20, help="epochs over the cache")
    parser.add_argument("--model", default="dit-s2", help="DiT preset for the step, or none")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = args.device

    images = ShapesDataset(args.res, length=args.num)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        AutoencoderKL(**SD_VAE).save_pretrained(Path(tmp) / "vae")
        tokenizer = build_tokenizer(f"kl-vae:{Path(tmp) / 'vae'}").to(device)

        began = time.perf_counter()
        encode_dataset(images, tokenizer, Path(tmp) / "cache", batch_size=args.batch_size,
                       device=device, progress=False)  # fmt: skip
        sync(device)
        cache_seconds = time.perf_counter() - began
        cache = LatentDataset(Path(tmp) / "cache", args.res)

        def fly(indices, flips):
            return on_the_fly(images, tokenizer, indices, flips, device, seed=0)

        def cached(indices, flips):
            return from_cache(cache, indices, flips, device)

        one_epoch = list(batches(args.num, args.batch_size, 1, seed=0))
        many = list(batches(args.num, args.batch_size, args.epochs, seed=0))
        results = {
            "data": (
                throughput(fly, None, one_epoch, device),
                throughput(cached, None, many, device),
            ),
        }
        step = make_step(args.model, args.res, device)
        if step is not None:
            results[f"data + {args.model} step"] = (
                throughput(fly, step, one_epoch, device),
                throughput(cached, step, one_epoch, device),
            )

    where = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_model()
    print(f"device: {device} ({where}), torch threads: {torch.get_num_threads()}")
    print(f"SD-VAE-sized random AutoencoderKL, {args.res} px, batch {args.batch_size}, "
          f"{args.num} images")  # fmt: skip
    print(f"one-off cache build (image + mirror): {cache_seconds:.1f} s, "
          f"{2 * args.num / cache_seconds:.2f} encodes/s")  # fmt: skip
    print(f"{'pipeline':<24}{'on the fly img/s':>18}{'cached img/s':>16}{'ratio':>13}")
    for name, (fly_rate, cached_rate) in results.items():
        print(f"{name:<24}{fly_rate:>18.2f}{cached_rate:>16.1f}{cached_rate / fly_rate:>12.1f}x")


if __name__ == "__main__":
    main()
