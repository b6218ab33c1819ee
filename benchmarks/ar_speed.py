"""Autoregressive speed: KV-cached sampling against uncached re-computation, and training.

Prints tokens/s and images/s of sampling a whole token grid with the shared KV cache and
without it (every step recomputes the prefix), their ratio, and training tokens/s (forward +
backward + AdamW on teacher-forced sequences), all measured in one run.

    python benchmarks/ar_speed.py --preset llamagen-tiny --grid 8 --batch-size 8
    python benchmarks/ar_speed.py --preset llamagen-b --grid 16 --batch-size 256 --device cuda \
        --bf16 --compile     # GPT-B at 256 px (16×16 tokens)
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

from genzoo.backbones import build_backbone
from genzoo.families.autoregressive import generate_tokens
from genzoo.zoo.presets import preset


def build(name: str, grid: int, vocab: int, device: str):
    cfg = preset(name).model
    cfg.block_size, cfg.vocab_size, cfg.num_classes = grid * grid, vocab, 1000
    torch.manual_seed(0)
    return build_backbone(cfg).to(device), cfg


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def uncached_sample(net, y, length: int) -> torch.Tensor:
    """Greedy decoding that re-runs the whole prefix at every step (no cache)."""
    tokens = torch.zeros(len(y), 0, dtype=torch.long, device=y.device)
    for _ in range(length):
        padded = torch.cat([tokens, tokens.new_zeros(len(y), 1)], dim=1)
        logits = net(padded, y)[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="llamagen-tiny")
    p.add_argument("--grid", type=int, default=8, help="token grid side (16 = 256 px)")
    p.add_argument("--vocab", type=int, default=16384)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    dev, n, length = a.device, a.batch_size, a.grid * a.grid
    net, cfg = build(a.preset, a.grid, a.vocab, dev)
    net.eval()
    y = torch.randint(0, 1000, (n,), device=dev)
    amp = torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16)

    def cached():
        with amp:
            generate_tokens(net, y, null_label=1000, generators=None, top_k=1)

    def uncached():
        with amp:
            uncached_sample(net, y, length)

    t_cached = timed(cached, dev, a.repeats)
    t_uncached = timed(uncached, dev, a.repeats)

    net.train()
    train_net = torch.compile(net) if a.compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    tokens = torch.randint(0, a.vocab, (n, length), device=dev)

    def train_step():
        with amp:
            logits = train_net(tokens, y)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_train = timed(train_step, dev, a.repeats)
    print(f"machine: {machine()}")
    print(f"model: {a.preset} (dim {cfg.dim}, {cfg.n_layer} layers), {length} tokens, batch {n}")
    for label, t in (("KV-cached sampling", t_cached), ("uncached sampling", t_uncached)):
        print(f"{label:20s} {n * length / t:10.0f} tokens/s {n / t:8.2f} img/s")
    print(f"cache speed-up       {t_uncached / t_cached:10.2f}x")
    print(f"training             {n * length / t_train:10.0f} tokens/s {n / t_train:8.2f} img/s")


if __name__ == "__main__":
    main()
