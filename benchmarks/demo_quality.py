"""How recognisable the demo's samples are, for a choice of data and training settings.

Trains the demo configuration (`genzoo.demo.demo_config`) on DATA for STEPS, samples 20 images
per class (Heun, 12 steps) at each CFG scale, and scores them with a classifier trained on the
full `shapes` data (random poses), so that variants of the data are judged by one judge:
the share of samples recognised as the class they were asked for (chance: 10%).

    python benchmarks/demo_quality.py --data shapes:centred
    python benchmarks/demo_quality.py --data shapes --set train.lr_schedule=cosine
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes:centred")
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--cfg", type=float, action="append", help="CFG scales (default 2)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--classifier", default=None, help="reuse a full-shapes classifier")
    parser.add_argument("--out", default=None, help="keep the run and grids here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from genzoo.config import apply_overrides
    from genzoo.demo import DEMO_RES, DEMO_STEPS, SAMPLE_STEPS, demo_config
    from genzoo.generate import make_labels
    from genzoo.metrics.classifier import classifier_report, train_classifier
    from genzoo.pipeline import load
    from genzoo.train.loop import train

    out = Path(args.out or tempfile.mkdtemp(prefix="demo-quality-"))
    steps = args.steps or DEMO_STEPS
    cfg = demo_config(steps)
    apply_overrides(cfg, [f"data.spec={args.data}", "train.quiet=true", *args.set])
    print(machine())
    began = time.perf_counter()
    train(cfg, out / "run", device="cpu")
    seconds = time.perf_counter() - began

    judge = Path(args.classifier or out / "shapes-classifier.safetensors")
    if not judge.exists():
        train_classifier("shapes", DEMO_RES, judge, steps=3000, quiet=True)
    pipe = load(out / "run")
    labels = make_labels(None, pipe.num_classes, 20, seed=0)
    for scale in args.cfg or [2.0]:
        images = np.concatenate(
            [
                np.asarray(
                    pipe.sample(
                        torch.as_tensor(labels[i : i + 100]), steps=SAMPLE_STEPS, cfg=scale, seed=i
                    )
                )
                for i in range(0, len(labels), 100)
            ]
        )
        report = classifier_report(judge, images, labels, ref_spec="shapes", res=DEMO_RES)
        pipe.save_grid(out / f"grid-cfg{scale:g}.png", cfg=scale, steps=SAMPLE_STEPS)
        print(
            f"data {args.data}, {steps} steps ({seconds:.0f} s), overrides {args.set or 'none'}, "
            f"CFG {scale:g}: {100 * report['accuracy']:.1f}% recognised by the full-shapes "
            f"classifier (its real held-out: {100 * report['real_accuracy']:.1f}%); "
            f"grid {out / f'grid-cfg{scale:g}.png'}"
        )


if __name__ == "__main__":
    main()
