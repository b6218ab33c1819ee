"""Sampling throughput (img/s of latents) of DiT configurations at 256 px (4×32×32 latents).

One network evaluation per step: Euler steps of the flow family, no guidance by default.

    python benchmarks/sample_speed.py --presets dit-s2,dit-xl2 --batch-size 8 --steps 4
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

from genzoo.backbones import build_backbone
from genzoo.families import build_family
from genzoo.families.flow import FlowConfig
from genzoo.zoo.presets import preset


@torch.no_grad()
def measure(name, batch, steps, cfg_scale, device, bf16, compile_, repeats=2):
    cfg = preset(name)
    cfg.family = FlowConfig()
    cfg.model.input_size, cfg.model.in_channels, cfg.model.learn_sigma = 32, 4, False
    torch.manual_seed(0)
    model = build_backbone(cfg.model).to(device).eval()
    net = torch.compile(model) if compile_ else model
    family = build_family(cfg)
    y = torch.randint(0, 1000, (batch,), device=device)
    noise = torch.randn(batch, 4, 32, 32, device=device)

    def run():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            family.sample(net, y, noise=noise, sampler="euler", steps=steps + 1, cfg=cfg_scale,
                          null_label=1000, generator=None)  # fmt: skip

    run()  # warm-up (and compilation)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="dit-s2,dit-xl2")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="network evaluations per sample")
    p.add_argument("--cfg", type=float, default=1.0)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print(machine())
    for n in a.presets.split(","):
        fp32 = measure(n, a.batch_size, a.steps, a.cfg, device, False, False)
        line = f"{n:8s} batch {a.batch_size:4d} steps {a.steps:3d}  fp32 eager {fp32:8.3f} img/s"
        if cuda:
            fast = measure(n, a.batch_size, a.steps, a.cfg, device, True, True)
            line += f"  bf16+compile {fast:8.3f} img/s  ratio {fast / fp32:5.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
