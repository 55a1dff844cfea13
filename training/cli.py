"""``invasive-train`` / ``python -m training``: fit, evaluate, predict, eda, demo.

Errors the user can cause (bad data, bad options, a broken checkpoint) print one clear message
and exit with status 2; an interrupted ``fit`` says how to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.checkpoint import CheckpointError
from training.errors import TrainingError
from training.fit import FitConfig

DEFAULTS = FitConfig(data=Path("."), output=Path("."))


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16/fp16 mixed precision on CUDA, bf16 on CPUs that support it")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers,
                   help="DataLoader worker processes / decode threads (default %(default)s)")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True,
                   help="Kaggle layout (train/ + train_labels.csv, archives are extracted) "
                        "or one folder per class")
    p.add_argument("--skip-bad", action="store_true",
                   help="drop missing, duplicate, mislabelled and unreadable images, listing them")
    p.add_argument("--positive-class", default=None,
                   help="the invasive class of a class-folders dataset; None: the folder named "
                        "'invasive' or '1'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="invasive-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train a checkpoint (or run k-fold cross-validation)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_data_flags(f)
    f.add_argument("--output", type=Path, required=True,
                   help="checkpoint file to write (with --folds: a directory)")
    f.add_argument("--arch", default=DEFAULTS.arch, help="any torchvision classification model")
    f.add_argument("--weights", default=DEFAULTS.weights,
                   help="imagenet (torchvision download), none (from scratch), or PATH to a "
                        "state dict (.safetensors or torch.save)")
    f.add_argument("--image-size", type=int, default=DEFAULTS.image_size,
                   help="model input side in pixels (stored in the checkpoint)")
    f.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="at most this many")
    f.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    f.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak AdamW learning rate")
    f.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                   help="AdamW decoupled weight decay (not on biases and norm layers)")
    f.add_argument("--warmup-epochs", type=float, default=DEFAULTS.warmup_epochs,
                   help="linear learning-rate warm-up")
    f.add_argument("--schedule", choices=["cosine", "onecycle"], default=DEFAULTS.schedule,
                   help="decay after warm-up")
    f.add_argument("--patience", type=int, default=DEFAULTS.patience,
                   help="stop after this many epochs without a better validation ROC AUC")
    f.add_argument("--seed", type=int, default=DEFAULTS.seed, help="split, init and shuffling")
    f.add_argument("--val-fraction", type=float, default=DEFAULTS.val_fraction,
                   help="share of images (whole groups) held out for validation")
    f.add_argument("--folds", type=int, default=DEFAULTS.folds,
                   help="> 1: k-fold cross-validation, reporting mean and sd of ROC AUC")
    f.add_argument("--group-column", default=None,
                   help="keep images sharing this column's value on one side of every split")
    f.add_argument("--group-file", type=Path, default=None,
                   help="CSV with 'name' and the group column (default: the labels CSV)")
    f.add_argument("--cache", choices=["memory", "disk", "none"], default=DEFAULTS.cache,
                   help="decode cache: keep decoded, resized images in memory (default), also "
                        "on disk, or none (decode full photos every epoch)")
    f.add_argument("--cache-dir", type=Path, default=None,
                   help="where --cache disk keeps its files "
                        "(default ~/.cache/invasive-species/decode-cache)")
    f.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its saved training state")
    f.add_argument("--log", type=Path, default=None,
                   help="JSON-lines log (default: beside the checkpoint, *.log.jsonl)")
    _add_runtime_flags(f)

    d = sub.add_parser("demo", help="build a small demo checkpoint from generated images")
    d.add_argument("--output", type=Path, required=True)
    d.add_argument("--image-size", type=int, default=64)
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--arch", default="resnet18")

    from training.commands import add_offline_commands

    add_offline_commands(sub, _add_data_flags, _add_runtime_flags)
    return parser


def run_fit(args: argparse.Namespace) -> int:
    from training.fit import fit

    fields = set(FitConfig.__dataclass_fields__)
    config = FitConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        result = fit(config)
    except KeyboardInterrupt:
        print("\ninterrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    summary = {k: v for k, v in result.items() if k not in ("history", "folds")}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from training.demo import build_demo_checkpoint

    path = build_demo_checkpoint(args.output, image_size=args.image_size, epochs=args.epochs,
                                 arch=args.arch)
    print(f"demo checkpoint written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"fit": run_fit, "demo": run_demo}
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        return args.handler(args)
    except (TrainingError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
