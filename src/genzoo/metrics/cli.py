"""`genzoo eval`, `genzoo ref` and `genzoo train-classifier`: argparse wiring and printing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genzoo.errors import GenzooError
from genzoo.files import atomic_write
from genzoo.metrics.evaluate import METRICS, RESIZE_POLICIES
from genzoo.metrics.fid import FD_METHODS
from genzoo.metrics.inception_score import IS_MODES


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="FID / sFID / IS / P-R / KID / FD-DINOv2 / CAS of samples against a reference",
        description="Evaluate an ADM npz, an image folder or a statistics file against a "
        "reference (e.g. ADM's VIRTUAL_imagenet256_labeled.npz). Prints a table; --json writes "
        "every number with its protocol.",
    )
    p.add_argument(
        "samples", help="samples: ADM .npz (arr_0 uint8 NHWC), image folder or stats npz"
    )
    p.add_argument("--ref", default=None, help="reference: ADM reference npz, image folder, ...")
    p.add_argument("--metrics", default="fid", help=f"comma-separated, from: {', '.join(METRICS)}")
    p.add_argument("--json", default=None, help="write the full result (with protocol) here")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--inception-weights", default=None, help="local torch-fidelity Inception .pth")
    p.add_argument("--dinov2-weights", default=None, help="local dinov2_vitl14_pretrain.pth")
    p.add_argument("--resize-policy", default="none", choices=list(RESIZE_POLICIES))
    p.add_argument("--is-mode", default="adm", choices=IS_MODES, help="IS split convention")
    p.add_argument("--pr-precision", default="float32", choices=["float32", "float16"])
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--fd-method", default="eigh", choices=FD_METHODS)
    p.add_argument("--data", default=None, help="real dataset spec for fd-classifier / cas")
    p.add_argument("--classifier", default=None, help="classifier .safetensors (fd-classifier)")
    p.add_argument(
        "--no-ref-cache", dest="ref_cache", action="store_false",
        help="do not read or write cached reference features",
    )  # fmt: skip
    p.add_argument(
        "--cache-dir", default=None,
        help="reference-feature cache (default $GENZOO_CACHE or ~/.cache/genzoo)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "ref",
        help="build a reference npz (images + Inception statistics) from a dataset",
        description="Statistics over every image of DATA (ADM centre crop for folders) and a "
        "seeded random subset of images, in ADM's reference-file layout.",
    )
    p.add_argument("--data", required=True, help="dataset spec, e.g. folder:/data/imagenet/train")
    p.add_argument("--res", type=int, required=True)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--num-images", type=int, default=10_000, help="images kept as arr_0")
    p.add_argument("--seed", type=int, default=0, help="draws the images kept as arr_0")
    p.add_argument("--data-seed", type=int, default=0, help="stream of procedural datasets")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--dinov2-weights", default=None, help="also store FD-DINOv2 statistics")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ref)

    p = subparsers.add_parser(
        "train-classifier",
        help="train the small dataset classifier (FD features and CAS on small domains)",
    )
    p.add_argument("--data", required=True, help="dataset spec, e.g. shapes or digits")
    p.add_argument("--res", type=int, required=True)
    p.add_argument("--out", required=True, help="output NAME.safetensors (+ NAME.json)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument("--data-seed", type=int, default=0, help="stream of procedural datasets")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_classifier)


def _print(text: str, quiet: bool = False) -> None:
    if not quiet:
        print(text)


def format_table(result: dict) -> str:
    """One line per number, with the protocol essentials beside it."""
    rows = []
    for name, rec in result["metrics"].items():
        if name == "pr":
            rows.append(("precision", rec["precision"], f"k={rec['k']}, {rec['distances']}"))
            rows.append(("recall", rec["recall"], f"{rec['reference_images']} reference images"))
            continue
        note = {
            "is": lambda r: f"{r['splits']} splits: {r['split_rule']}",
            "kid": lambda r: f"std {r['std']:.4g}, {r['subsets']} subsets of {r['subset_size']}",
            "cas": lambda r: f"top-5 {r['top5']:.4f}, {r['reference']}",
            "fd-classifier": lambda r: f"class accuracy {r['accuracy']}, {r['reference']}",
        }.get(name, lambda r: f"{r['features']}; trace {r['trace_method']}")(rec)
        rows.append((name, rec["value"], note))
    width = max(len(r[0]) for r in rows)
    lines = [f"{n:<{width}}  {v:>12.6g}  {note}" for n, v, note in rows]
    s = result["samples"]
    lines.append(f"samples: {s['source']} ({s['num']} images, {s['resolution']}, {s['labels']})")
    if "reference" in result:
        r = result["reference"]
        lines.append(f"reference: {r['id']} ({r['num_images']} images, {r['resolution']})")
        if "features" in r:
            lines.append(f"reference features: {r['features']}")
    for name, fx in result["feature_extractors"].items():
        lines.append(f"{name}: sha256 {fx['weights_sha256'][:16]} ({fx['name']})")
    for name, rec in result["metrics"].items():
        if "warning" in rec:
            lines.append(f"warning ({name}): {rec['warning']}")
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def cmd_eval(args: argparse.Namespace) -> int:
    from genzoo.metrics.evaluate import evaluate

    result = evaluate(
        args.samples,
        args.ref,
        args.metrics,
        batch_size=args.batch_size,
        device=args.device,
        inception_weights=args.inception_weights,
        dinov2_weights=args.dinov2_weights,
        resize_policy=args.resize_policy,
        is_mode=args.is_mode,
        pr_precision=args.pr_precision,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        fd_method=args.fd_method,
        data=args.data,
        classifier=args.classifier,
        progress=not args.quiet,
        ref_cache=args.ref_cache,
        cache_dir=args.cache_dir,
    )
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
        _print(f"wrote {args.json}", args.quiet)
    return 0


def cmd_ref(args: argparse.Namespace) -> int:
    from genzoo.metrics.reference import build_reference

    info = build_reference(
        args.data,
        args.res,
        args.out,
        num_images=args.num_images,
        seed=args.seed,
        data_seed=args.data_seed,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        skip_bad=args.skip_bad,
        inception_weights=args.inception_weights,
        dinov2_weights=args.dinov2_weights,
        progress=not args.quiet,
    )
    _print(json.dumps(info, indent=2), args.quiet)
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from genzoo.metrics.classifier import train_classifier

    report = train_classifier(
        args.data,
        args.res,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        data_seed=args.data_seed,
        device=args.device,
        quiet=args.quiet,
    )
    _print(json.dumps(report, indent=2), args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the `genzoo` command registers these subcommands itself)."""
    parser = argparse.ArgumentParser(prog="genzoo")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GenzooError as e:
        print(f"genzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
