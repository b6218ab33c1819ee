"""The family league: every family's tiny preset trained on the same embedded data with the same
budget of images seen, sampled and scored with the same metrics, in one table and one chart.

For each dataset (full-pose `shapes`, `digits`): a dataset classifier is trained once (the judge),
the token families share one tiny VQ trained once (its images are counted apart, as a tokenizer
is reused across generators), then each entry trains for `--images` images, samples `--per-class`
images of every class, and is scored in the judge's features: FD to the held-out split, the
share of samples recognised as their class, precision and recall (k = 3).

    python benchmarks/league.py --images 48000 --out league
    python benchmarks/league.py --entries dit-flow,llamagen --data shapes --images 3200
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import machine

BATCH = 32
RES = 32


@dataclass
class Entry:
    preset: str
    overrides: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # sampling options of the family
    tokens: bool = False  # trained on the ids of the shared VQ


ENTRIES = {
    "dit-flow": Entry(
        "dit-demo",
        ["family=flow", "family.time_dist=logit-normal", "train.lr=2e-3", "train.warmup=100"],
        {"cfg": 2.0, "steps": 12},
    ),
    "dit-diffusion": Entry(
        "dit-demo",
        ["train.lr=2e-3", "train.warmup=100"],
        {"cfg": 2.0, "sampler": "ddim", "steps": "ddim25"},
    ),  # fmt: skip
    "llamagen": Entry("llamagen-tiny", ["train.warmup=100"], {"cfg": 2.0}, tokens=True),
    "maskgit": Entry("maskgit-tiny", ["train.warmup=100"], {}, tokens=True),
    "mar": Entry("mar-tiny", ["train.warmup=100"], {"cfg": 2.0}),
    "biggan": Entry("biggan-tiny", [], {"truncation": 1.0}),
}
COMMON = ["train.ema_decay=0.995", "train.ema_warmup=true", "train.quiet=true"]


def images_per_step(cfg) -> int:
    """Images one step consumes (a GAN's batch already counts all its D updates)."""
    return cfg.train.batch_size


def train_entry(entry: Entry, data: str, images: int, out: Path, tokens: Path | None):
    from genzoo.config import apply_overrides
    from genzoo.train.loop import train
    from genzoo.zoo.presets import preset

    cfg = preset(entry.preset)
    spec = f"tokens:{tokens}" if entry.tokens else data
    apply_overrides(cfg, [f"data.spec={spec}", f"data.res={RES}", f"train.batch_size={BATCH}"])
    apply_overrides(cfg, [*COMMON, *entry.overrides])
    steps = max(1, images // images_per_step(cfg))
    apply_overrides(cfg, [f"train.steps={steps}", f"train.ckpt_every={steps}"])
    began = time.perf_counter()
    train(cfg, out, device="cpu")
    return time.perf_counter() - began, steps


def shared_vq(data: str, images: int, out: Path) -> Path:
    """One tiny VQ for the token families, and its cached ids (image + mirror image)."""
    from genzoo.config import apply_overrides
    from genzoo.data import build_dataset
    from genzoo.data.latents import encode_dataset
    from genzoo.tokenizers import build_tokenizer
    from genzoo.train.loop import train
    from genzoo.zoo.presets import preset

    steps = max(2, images // BATCH)
    cfg = apply_overrides(
        preset("vq16-tiny"),
        [
            f"data.spec={data}", f"data.res={RES}", f"train.batch_size={BATCH}",
            f"train.steps={steps}", f"train.ckpt_every={steps}", "family.perceptual_weight=0",
            f"family.disc_start={steps + 1}", "train.ema_decay=0.99", "train.quiet=true",
        ],
    )  # fmt: skip
    run = train(cfg, out / "vq", device="cpu")
    dataset = build_dataset(data, RES, train=True, seed=0)
    return encode_dataset(dataset, build_tokenizer(f"vq:{run}"), out / "tokens", progress=False)


def score(run: Path, judge: Path, data: str, options: dict, per_class: int, grid: Path) -> dict:
    from genzoo.generate import make_labels
    from genzoo.metrics.classifier import (
        classifier_report,
        dataset_tensors,
        load_classifier,
        nchw_uint8,
        predict,
    )
    from genzoo.metrics.precision_recall import precision_recall
    from genzoo.pipeline import load

    pipe = load(run, device="cpu")
    pipe.save_grid(grid, per_class=8, **options)
    labels = make_labels(None, pipe.num_classes, per_class, seed=0)
    images = pipe.sample(labels, seed=0, batch_size=100, **options)
    report = classifier_report(judge, images, labels, ref_spec=data, res=RES)
    model = load_classifier(judge)
    real, _, _ = dataset_tensors(data, RES, train=False)
    gen_feats, _ = predict(model, nchw_uint8(images))
    real_feats, _ = predict(model, real)
    pr = precision_recall(gen_feats, real_feats, k=3)
    return {**report, "precision": pr.precision, "recall": pr.recall}


def chart(rows: list[dict], path: Path) -> None:
    """Recognition (dark) and recall (light) per entry and dataset, as a PNG bar chart."""
    from PIL import Image, ImageDraw

    bar, gap, left = 26, 14, 170
    img = Image.new("RGB", (left + 320, len(rows) * (bar + gap) + 40), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 6), "recognised (dark) / recall (light), 0-100%", fill="black")
    for i, r in enumerate(rows):
        y = 30 + i * (bar + gap)
        draw.text((6, y + 7), f"{r['entry']} / {r['data']}", fill="black")
        draw.rectangle([left, y, left + 300 * r["recall"], y + bar], fill=(170, 200, 240))
        draw.rectangle([left, y + 6, left + 300 * r["accuracy"], y + bar - 6], fill=(30, 70, 150))
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="shapes,digits")
    p.add_argument("--entries", default=",".join(ENTRIES))
    p.add_argument("--images", type=int, default=48_000, help="images seen by each generator")
    p.add_argument("--vq-images", type=int, default=12_800, help="images seen by the shared VQ")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--out", default="league")
    a = p.parse_args()
    from genzoo.metrics.classifier import train_classifier

    out = Path(a.out)
    names = [n.strip() for n in a.entries.split(",") if n.strip()]
    print(machine())
    rows = []
    for data in [d.strip() for d in a.data.split(",") if d.strip()]:
        where = out / data.replace(":", "-")
        where.mkdir(parents=True, exist_ok=True)
        judge = where / "classifier.safetensors"
        if not judge.exists():
            train_classifier(data, RES, judge, steps=a.classifier_steps, quiet=True)
        tokens = None
        if any(ENTRIES[n].tokens for n in names):
            began = time.perf_counter()
            tokens = shared_vq(data, a.vq_images, where)
            print(f"{data}: shared VQ + token cache in {time.perf_counter() - began:.0f} s")
        for name in names:
            entry = ENTRIES[name]
            seconds, steps = train_entry(entry, data, a.images, where / name, tokens)
            grid = where / f"{name}.png"
            s = score(where / name, judge, data, entry.options, a.per_class, grid)
            rows.append({"entry": name, "preset": entry.preset, "data": data, "steps": steps,
                         "seconds": round(seconds), **{k: s[k] for k in
                         ("fd", "accuracy", "precision", "recall")}})  # fmt: skip
            print(json.dumps(rows[-1]))
    table = [
        "| entry | preset | data | images | steps | train s | FD ↓ | recognised | P | R |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['entry']} | {r['preset']} | {r['data']} | {a.images} | {r['steps']} | "
            f"{r['seconds']} | {r['fd']:.2f} | {100 * r['accuracy']:.1f}% | "
            f"{r['precision']:.2f} | {r['recall']:.2f} |"
        )
    text = "\n".join(table)
    print(text)
    (out / "league.md").write_text(text + "\n")
    chart(rows, out / "league.png")
    print(f"wrote {out / 'league.md'} and {out / 'league.png'}")
    (out / "league.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
