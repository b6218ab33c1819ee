"""Training throughput (img/s) of DiT configurations in latent space (4×32×32, i.e. 256 px images).

Measures one optimizer step at a time (forward, backward, AdamW, EMA) of the diffusion family on
random latents: fp32 eager everywhere, and bf16 autocast + torch.compile where CUDA exists.

    python benchmarks/train_speed.py --presets dit-s2,dit-xl2 --batch-size 8 --steps 5
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

from genzoo.backbones import build_backbone
from genzoo.families import build_family
from genzoo.train.ema import make_ema, update_ema
from genzoo.zoo.presets import preset


def measure(
    name: str, batch: int, steps: int, warmup: int, device: str, bf16: bool, compile_: bool
):
    cfg = preset(name)
    cfg.model.input_size, cfg.model.in_channels = 32, 4
    torch.manual_seed(0)
    model = build_backbone(cfg.model).to(device).train()
    ema = make_ema(model)
    family = build_family(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compile_ else model
    x = torch.randn(batch, 4, 32, 32, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = family.loss(net, x, y)["loss"]
        loss.backward()
        opt.step()
        update_ema(ema, model, 0.9999)

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="dit-s2,dit-xl2")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print(machine())
    for preset_name in a.presets.split(","):
        fp32 = measure(preset_name, a.batch_size, a.steps, a.warmup, device, False, False)
        line = f"{preset_name:8s} batch {a.batch_size:4d}  fp32 eager {fp32:8.2f} img/s"
        if cuda:
            fast = measure(preset_name, a.batch_size, a.steps, a.warmup, device, True, True)
            line += f"  bf16+compile {fast:8.2f} img/s  ratio {fast / fp32:5.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
