"""Evaluation throughput: genzoo against torch-fidelity on the same two image folders.

Both compute FID, IS, KID and precision/recall with the same Inception weights (random ones
unless --inception-weights is given, so nothing is downloaded). Reports images/s for features
plus metrics, the ratio torch-fidelity time / genzoo time (>= 1 means genzoo is not slower) in
wall-clock and in CPU time (steadier on a shared machine), and the metric values side by side.

    python benchmarks/eval_speed.py --num 64 --res 256
"""

from __future__ import annotations

import argparse
import platform
import resource
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


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (torch-fidelity's loader workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@torch.inference_mode()
def time_networks(weights: str, res: int, device: str) -> tuple[float, float]:
    """CPU seconds per image of the Inception forward alone, genzoo vs torch-fidelity."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from genzoo.metrics.inception import InceptionFeatures

    ours = InceptionFeatures(weights).to(device)
    theirs = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights
    ).to(device)
    x = torch.randint(0, 256, (16, 3, res, res), dtype=torch.uint8, device=device)
    ours(x), theirs(x)  # warm-up
    times = []
    for net in (ours, theirs):
        start = cpu_seconds()
        net(x)
        times.append((cpu_seconds() - start) / len(x))
    return times[0], times[1]


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
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
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

        def run_genzoo():
            return evaluate(
                a, b, ("fid", "is", "kid", "pr"), batch_size=args.batch_size, device=args.device,
                inception_weights=weights, is_mode="torch-fidelity", kid_subset_size=subset,
            )  # fmt: skip

        def run_torch_fidelity():
            return torch_fidelity.calculate_metrics(
                input1=str(a), input2=str(b), cuda=args.device.startswith("cuda"), fid=True,
                isc=True, kid=True, prc=True, feature_extractor="inception-v3-compat",
                feature_extractor_weights_path=weights, batch_size=args.batch_size,
                kid_subset_size=subset, cache=False, verbose=False,
            )  # fmt: skip

        # Alternate the two and keep each one's best time: a shared machine's load then
        # penalises neither side systematically.
        t_ours = t_theirs = cpu_ours = cpu_theirs = float("inf")
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), cpu_seconds()
            ours = run_genzoo()
            t_ours = min(t_ours, time.perf_counter() - wall)
            cpu_ours = min(cpu_ours, cpu_seconds() - cpu)
            wall, cpu = time.perf_counter(), cpu_seconds()
            theirs = run_torch_fidelity()
            t_theirs = min(t_theirs, time.perf_counter() - wall)
            cpu_theirs = min(cpu_theirs, cpu_seconds() - cpu)

        features_ours, features_theirs = time_networks(weights, args.res, args.device)

    images = 2 * args.num
    print(f"device: {args.device} ({cpu_model()}, {torch.get_num_threads()} threads)")
    print(f"inputs: 2 folders x {args.num} PNG images at {args.res}x{args.res}")
    print(f"genzoo         {t_ours:8.2f} s  {images / t_ours:7.2f} img/s (best of {args.repeats})")
    print(
        f"torch-fidelity {t_theirs:8.2f} s  {images / t_theirs:7.2f} img/s (best of {args.repeats})"
    )
    print(
        f"ratio (torch-fidelity time / genzoo time): {t_theirs / t_ours:.2f} wall-clock, "
        f"{cpu_theirs / cpu_ours:.2f} CPU time ({cpu_theirs:.1f} s / {cpu_ours:.1f} s)"
    )
    print(
        f"features only (16 images, CPU s/img): genzoo {features_ours:.3f}, torch-fidelity "
        f"{features_theirs:.3f}, ratio {features_theirs / features_ours:.2f}"
    )
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
