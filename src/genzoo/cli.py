"""`genzoo train | sample | encode | export | demo | eval | ref | train-classifier`.

Every flag of `train` and `sample` is a config field (`--steps` is `train.steps`, `--cfg` is
`cfg`); `--set key=value` reaches any field, e.g. `--set model.depth=4 --set train.lr=3e-4`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genzoo.errors import GenzooError

# (flag, config field, type, help)
TRAIN_FLAGS = [
    ("--data", "data.spec", str, "shapes | shapes:centred | digits | folder:PATH | latents:DIR"),
    ("--res", "data.res", int, "image resolution in pixels"),
    ("--tokenizer", "tokenizer", str, "pixels | kl-vae:PATH | vq:RUN_OR_FILE | maskgit-vqgan:FILE"),
    ("--family", "family.kind", str, "diffusion | flow | ar | …"),
    ("--steps", "train.steps", int, "total optimizer steps"),
    ("--batch-size", "train.batch_size", int, "global batch size"),
    ("--grad-accum", "train.grad_accum", int, "gradient accumulation steps"),
    ("--lr", "train.lr", float, "AdamW learning rate"),
    ("--ema-decay", "train.ema_decay", float, "EMA decay"),
    ("--precision", "train.precision", str, "auto | fp32 | bf16"),
    ("--seed", "train.seed", int, "global seed"),
    ("--workers", "data.workers", int, "data loader worker processes"),
    ("--log-every", "train.log_every", int, "log scalars every N steps"),
    ("--ckpt-every", "train.ckpt_every", int, "checkpoint every N steps"),
    ("--grid-every", "train.grid_every", int, "sample grid every N steps (0: at the end)"),
    ("--eval-every", "train.eval_every", int, "evaluate the EMA model every N steps"),
    ("--eval-num", "train.eval_num", int, "samples per evaluation"),
    ("--eval-ref", "train.eval_ref", str, "reference batch / statistics for evaluation"),
    ("--eval-metrics", "train.eval_metrics", str, "comma-separated metrics, e.g. fid,is"),
]
TRAIN_SWITCHES = [
    ("--compile", "train.compile", "torch.compile the model"),
    ("--skip-bad", "data.skip_bad", "skip unreadable images (they are counted)"),
    ("--quiet", "train.quiet", "no progress bar"),
]
SAMPLE_FLAGS = [
    # --run-dir / --num-samples: under torchrun, its own parser claims --run and --num
    (("--run", "--run-dir"), "run", str, "a genzoo run directory"),
    ("--official", "official", str, "official checkpoint kind: dit | sit | llamagen | rar | …"),
    ("--weights", "weights", str, "official weights (.pt / .safetensors)"),
    ("--vae", "vae", str, "SD-VAE folder or hub id for official latent models"),
    ("--vq", "vq", str, "official VQ tokenizer weights for official token models"),
    ("--official-preset", "official_preset", str, "e.g. DiT-XL/2 (default: from the weights)"),
    ("--image-size", "image_size", int, "image size of an official model (256 or 512)"),
    (("--num", "--num-samples"), "num", int, "number of samples"),
    ("--per-class", "per_class", int, "exactly K samples of every class"),
    ("--seed", "seed", int, "global seed: sample i depends on (seed, i) only"),
    ("--batch-size", "batch_size", int, "per-process batch size"),
    ("--out", "out", str, "output .npz (ADM format)"),
    ("--grid", "grid", str, "also write a PNG grid, one row per class"),
    ("--device", "device", str, "cpu | cuda"),
]


def _add_flags(p: argparse.ArgumentParser, flags, switches) -> None:
    for flag, key, typ, help_ in flags:
        names = flag if isinstance(flag, tuple) else (flag,)
        p.add_argument(*names, dest=key, type=typ, default=None, help=f"{help_} [{key}]")
    for flag, key, help_ in switches:
        p.add_argument(flag, dest=key, action="store_true", default=None, help=f"{help_} [{key}]")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any field"
    )


def _overrides(args: argparse.Namespace, flags, switches) -> list[str]:
    out = []
    for _, key, *_ in [*flags, *switches]:
        v = getattr(args, key)
        if v is not None:
            out.append(f"{key}={v}")
    return out + list(args.set)


def cmd_train(args) -> int:
    from genzoo.config import RunConfig, apply_overrides
    from genzoo.train.loop import CONFIG_FILE, train
    from genzoo.zoo.presets import preset

    out = Path(args.out)
    if args.preset is None and (out / CONFIG_FILE).is_file():
        cfg = RunConfig.load(out / CONFIG_FILE)  # resuming: the run's own config is the base
    else:
        cfg = preset(args.preset or "dit-s2")
    apply_overrides(cfg, _overrides(args, TRAIN_FLAGS, TRAIN_SWITCHES))
    run = train(cfg, out, device=args.device)
    from genzoo.train.distributed import barrier, init_distributed, shutdown

    d = init_distributed(args.device)  # the process group train() joined, if any
    barrier(d)  # every rank has finished (rank 0 writes the last checkpoint and grid)
    shutdown(d)  # leave the group before exit: gloo's threads must not outlive it
    if not cfg.train.quiet:
        print(f"run: {run}\ngrid: {run / 'grid.png'}")
    return 0


def sampling_option_flags() -> dict[str, object]:
    """Every sampling option of the registered families (`--top-k` is option top_k)."""
    from genzoo.families import FAMILIES
    from genzoo.families.base import option_names

    return option_names(FAMILIES.get(k) for k in FAMILIES.kinds())


def cmd_sample(args) -> int:
    from genzoo.config import SampleConfig, apply_overrides
    from genzoo.sample_command import run_sample

    cfg = SampleConfig()
    apply_overrides(cfg, _overrides(args, SAMPLE_FLAGS, [("--quiet", "quiet", "")]))
    for name in sampling_option_flags():
        value = getattr(args, f"option:{name}")
        if value is not None:
            cfg.options[name] = value  # typed and checked by the pipeline's family
    run_sample(cfg)
    return 0


def cmd_encode(args) -> int:
    from genzoo.data.latents import encode_command

    encode_command(
        args.data, args.tokenizer, args.res, args.out, args.batch_size, args.device,
        args.scale, args.quiet,
    )  # fmt: skip
    return 0


def cmd_export(args) -> int:
    from genzoo.zoo.export import export_run

    path = export_run(args.run, args.format, args.out, weights=args.weights)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from genzoo.demo import run_demo

    run_demo(args.out, family=args.family, steps=args.steps, device=args.device, quiet=args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from genzoo.zoo.presets import preset_names

    PRESETS = preset_names()
    parser = argparse.ArgumentParser(prog="genzoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a generator (resumes an existing run directory)")
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    _add_flags(p, TRAIN_FLAGS, TRAIN_SWITCHES)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a run or an official checkpoint into an ADM npz")
    _add_flags(p, SAMPLE_FLAGS, [("--quiet", "quiet", "no progress bar")])
    options = p.add_argument_group("sampling options (each family takes its own; see its docs)")
    for name, default in sampling_option_flags().items():
        options.add_argument(
            "--" + name.replace("_", "-"), dest=f"option:{name}", default=None,
            metavar=name.upper(),
            help=f"default {default!r}",
        )  # fmt: skip
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("encode", help="pre-encode a dataset (and its flips) into a latent cache")
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True, help="kl-vae:PATH_OR_HUB_ID")
    p.add_argument("--res", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--scale", type=float, default=0.18215)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("export", help="write a run's weights in an official layout")
    p.add_argument("--run", required=True)
    p.add_argument("--format", default="official-dit", help="official-dit")
    p.add_argument("--out", required=True, help="output .pt")
    p.add_argument("--weights", default="ema", help="ema | model")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="train a small generator on the embedded shapes, end to end")
    p.add_argument("--family", default="flow", help="flow (a small DiT) | ar (VQ + LlamaGen)")
    p.add_argument("--out", default="runs-demo")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    from genzoo.metrics.cli import add_parsers

    add_parsers(sub)  # eval, ref, train-classifier
    return parser


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GenzooError as e:
        print(f"genzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
