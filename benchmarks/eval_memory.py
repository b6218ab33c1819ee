"""Peak memory of evaluating an ADM npz: it must not grow with the number of images beyond the
features kept whole (here the 1008 IS logits per image; P/R and KID would add 2048 pool_3 floats).

Writes NUM random uint8 images at RES x RES into an npz (streamed, never held whole) in a
temporary folder, then evaluates FID, sFID and IS against random reference statistics with
random Inception weights (no download), in a fresh process, and prints its peak RSS.

    python benchmarks/eval_memory.py --num 10000          # 1.97 GB npz; hours on 2 CPU cores
    python benchmarks/eval_memory.py --num 200 --num 800  # compare two sizes quickly
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
import torch
from genzoo.metrics import evaluate
from genzoo.metrics.inception import InceptionFeatures
npz, ref, weights, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
InceptionFeatures(weights)  # baseline: libraries and the network loaded
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
r = evaluate(npz, ref, "fid,sfid,is", inception_weights=weights, batch_size=batch)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline_mb": base, "peak_mb": peak, "seconds": seconds, "fid": r["fid"]}))
"""


def write_inputs(folder: Path, num: int, res: int, batch: int) -> tuple[Path, Path]:
    from genzoo.data.npz import write_npz

    rng = np.random.default_rng(0)

    def batches():
        for start in range(0, num, batch):
            n = min(batch, num - start)
            yield rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)

    npz = write_npz(folder / f"samples_{num}.npz", batches(), labels=None, num=num)
    ref = folder / "ref_stats.npz"
    if not ref.exists():
        np.savez(
            ref,
            mu=rng.uniform(0, 1, 2048),
            sigma=np.diag(rng.uniform(0.01, 0.1, 2048)),
            mu_s=rng.uniform(0, 1, 2023),
            sigma_s=np.diag(rng.uniform(0.01, 0.1, 2023)),
        )
    return npz, ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, action="append", help="images (repeatable)")
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    sizes = args.num or [10_000]

    from genzoo.metrics.inception import save_random_inception_weights

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = save_random_inception_weights(folder / "inception.pth")
        for num in sizes:
            t0 = time.perf_counter()
            npz, ref = write_inputs(folder, num, args.res, args.batch_size)
            written = time.perf_counter() - t0
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(npz), str(ref), str(weights),
                 str(args.batch_size)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            m = json.loads(out.stdout.strip().splitlines()[-1])
            features_mb = num * 1008 * 4 / 2**20  # IS logits, float32
            print(
                f"{num} images {args.res}x{args.res}: npz {npz.stat().st_size / 1e9:.2f} GB "
                f"(written in {written:.1f} s); eval {m['seconds']:.1f} s; peak RSS "
                f"{m['peak_mb']:.0f} MB = {m['baseline_mb']:.0f} MB with the network loaded "
                f"+ {m['peak_mb'] - m['baseline_mb']:.0f} MB during evaluation "
                f"(kept IS logits {features_mb:.0f} MB)"
            )
            npz.unlink()


if __name__ == "__main__":
    main()
