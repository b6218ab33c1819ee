"""Evaluation throughput: genzoo against torch-fidelity on the same two image folders.

Both compute FID, IS, KID and precision/recall with the same Inception weights (random ones
unless --inception-weights is given, so nothing is downloaded). Reports images/s for features
plus metrics, the ratio torch-fidelity time / genzoo time (>= 1 means genzoo is not slower),
and the metric values side by side.

    python benchmarks/eval_speed.py --num 64 --res 256
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def write_folder(path: Path, num: int, res: int, seed: int) -> Path:
    """Smooth random colour fields plus noise: varied images, cheap to make."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for i in range(num):
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((res, res), Image.BICUBIC), np.float64)
        image = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(path / f"{i:05d}.png")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=64, help="images per set")
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--inception-weights", default=None)
    args = parser.parse_args()

    import torch_fidelity  # imported before timing: both sides then pay no import cost

    from genzoo.metrics import evaluate
    from genzoo.metrics.inception import save_random_inception_weights

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.inception_weights or str(save_random_inception_weights(tmp / "w.pth"))
        a = write_folder(tmp / "a", args.num, args.res, 0)
        b = write_folder(tmp / "b", args.num, args.res, 1)
        subset = min(1000, args.num)

        start = time.perf_counter()
        ours = evaluate(
            a, b, ("fid", "is", "kid", "pr"), batch_size=args.batch_size, device=args.device,
            inception_weights=weights, is_mode="torch-fidelity", kid_subset_size=subset,
        )  # fmt: skip
        t_ours = time.perf_counter() - start

        start = time.perf_counter()
        theirs = torch_fidelity.calculate_metrics(
            input1=str(a), input2=str(b), cuda=args.device.startswith("cuda"), fid=True,
            isc=True, kid=True, prc=True, feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=weights, batch_size=args.batch_size,
            kid_subset_size=subset, cache=False, verbose=False,
        )  # fmt: skip
        t_theirs = time.perf_counter() - start

    images = 2 * args.num
    print(f"device: {args.device} ({cpu_model()}, {torch.get_num_threads()} threads)")
    print(f"inputs: 2 folders x {args.num} PNG images at {args.res}x{args.res}")
    print(f"genzoo         {t_ours:8.2f} s  {images / t_ours:7.2f} img/s")
    print(f"torch-fidelity {t_theirs:8.2f} s  {images / t_theirs:7.2f} img/s")
    print(f"ratio (torch-fidelity time / genzoo time): {t_theirs / t_ours:.2f}")
    pairs = [
        ("fid", "frechet_inception_distance"),
        ("is", "inception_score_mean"),
        ("kid", "kernel_inception_distance_mean"),
        ("precision", "precision"),
        ("recall", "recall"),
    ]
    for ours_key, their_key in pairs:
        print(
            f"  {ours_key:<10} genzoo {ours[ours_key]:.6g}  torch-fidelity {theirs[their_key]:.6g}"
        )


if __name__ == "__main__":
    main()
