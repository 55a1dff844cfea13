"""``invasive-train`` / ``python -m training``: fit, evaluate, predict, eda, demo.

Errors the user can cause (bad data, bad options, a broken checkpoint) print one clear message
and exit with status 2; an interrupted ``fit`` says how to resume. Under ``torchrun`` (see
``training.distributed``) only rank 0 prints results; another rank prints only its own errors.

Start-up is cheap: this module and ``training.commands`` import neither torch nor anything that
imports it, so ``--help``, ``--version`` and a wrong path answer at once (``training.preflight``
checks paths first); each command imports its heavy modules when it runs.
``tests/training/test_cli_startup.py`` keeps it so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from model.pixel_limit import configured_max_pixels
from training.cli_flags import (
    DEFAULTS,
    INPUT_SIZE_RANGE,
    SEED_MAX,
    HelpFormatter,
    Parser,
    VersionAction,
    add_data_flags,
    add_group_flags,
    add_json_flag,
    add_recipe_flags,
    add_runtime_flags,
    integer,
    number,
)
from training.config import FitConfig, sibling
from training.errors import TrainingError
from training.preflight import check_data_dir, check_file, check_fit_output

DESCRIPTION = ("Train and use the invasive-plant photo classifier. A first run: look at the "
               "data (eda), train a checkpoint (fit), measure it on held-out photos (evaluate), "
               "score new photos (predict).")
EPILOG = "Run 'invasive-train COMMAND --help' for the options of a command."


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="invasive-train", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=HelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")

    f = sub.add_parser("fit", help="train a checkpoint (or cross-validate with --folds)",
                       description="Train a checkpoint on labelled photos: every epoch of a "
                                   "fixed schedule, the last one kept (--patience N: early "
                                   "stopping, the epoch with the best validation ROC AUC kept).",
                       formatter_class=HelpFormatter)
    add_data_flags(f)
    f.add_argument("--output", type=Path, required=True, metavar="PATH",
                   help="checkpoint file to write, e.g. models/model.safetensors (with --folds: "
                        "a directory)")
    f.add_argument("--arch", default=DEFAULTS.arch,
                   help="any torchvision classification model (resnet18, resnet50, "
                        "mobilenet_v2, ...)")
    f.add_argument("--weights", default=DEFAULTS.weights,
                   help="imagenet (torchvision download), none (from scratch), or PATH to a "
                        "state dict (.safetensors or torch.save)")
    f.add_argument("--image-size", type=integer(*INPUT_SIZE_RANGE), default=None,
                   help="model input side in pixels, stored in the checkpoint (default: "
                        "224 with pretrained weights, 160 with --weights none)")
    f.add_argument("--epochs", type=integer(1), default=None,
                   help="at most this many (default: 10 with pretrained weights, 20 with "
                        "--weights none)")
    f.add_argument("--batch-size", type=integer(1), default=DEFAULTS.batch_size,
                   help="images per step (under torchrun: the global batch)")
    f.add_argument("--lr", type=number(0, low_open=True), default=DEFAULTS.lr,
                   help="peak AdamW learning rate")
    f.add_argument("--weight-decay", type=number(0), default=DEFAULTS.weight_decay,
                   help="AdamW decoupled weight decay (not on biases and norm layers)")
    f.add_argument("--warmup-epochs", type=number(0), default=None,
                   help="linear learning-rate warm-up (default: 1 pretrained, 2 from scratch)")
    f.add_argument("--schedule", choices=["cosine", "onecycle"], default=DEFAULTS.schedule,
                   help="decay after warm-up")
    f.add_argument("--patience", type=integer(0), default=DEFAULTS.patience,
                   help="stop after this many epochs without a better validation ROC AUC; 0: "
                        "never stop early and keep the last epoch (a fixed schedule)")
    add_recipe_flags(f)
    f.add_argument("--seed", type=integer(0, SEED_MAX), default=DEFAULTS.seed,
                   help="split, init and shuffling")
    # (0, 0.5): training.splits.holdout_split's own bounds (it holds out 1 in round(1/x) groups)
    f.add_argument("--val-fraction", type=number(0, 0.5, low_open=True, high_open=True),
                   default=DEFAULTS.val_fraction,
                   help="share of images (whole groups) held out for validation")
    f.add_argument("--folds", type=integer(1), default=DEFAULTS.folds,
                   help="> 1: k-fold cross-validation, reporting the pooled out-of-fold ROC "
                        "AUC with a bootstrap interval over groups (each fold's epoch and "
                        "threshold chosen on an inner --val-fraction split, never on the fold)")
    f.add_argument("--ensemble", action="store_true",
                   help="with --folds k: also write ensemble.safetensors, the k fold models as "
                        "one checkpoint scored as the mean of their probabilities (k forward "
                        "passes per image), its threshold chosen on the out-of-fold predictions")
    add_group_flags(f)
    f.add_argument("--cache", choices=["memory", "disk", "none"], default=DEFAULTS.cache,
                   help="decode each photo once at model size and keep it in memory; disk: "
                        "also save it for the next run; none: decode full photos every epoch")
    f.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="where --cache disk keeps its files "
                        "(default ~/.cache/invasive-species/decode-cache)")
    f.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its saved training state")
    f.add_argument("--keep-train-state", action="store_true",
                   help="keep <checkpoint>.train-state.pt after the run finishes (it exists for "
                        "--resume after a kill; a finished run removes it)")
    f.add_argument("--log", type=Path, default=None, metavar="PATH",
                   help="JSON-lines log (default: beside the checkpoint, *.log.jsonl)")
    f.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=DEFAULTS.sync_bn,
                   help="under torchrun: BatchNorm statistics over the global batch "
                        "(SyncBatchNorm); default on with CUDA, off on CPU (PyTorch has none)")
    f.add_argument("--dist-timeout", type=number(0, low_open=True), default=DEFAULTS.dist_timeout,
                   help="under torchrun: seconds a process waits for the others before the "
                        "job fails; must exceed the longest time one rank works alone")
    add_runtime_flags(f)
    add_json_flag(f, "the result (rounded metrics, every path written)")
    f.set_defaults(handler=run_fit)

    d = sub.add_parser("demo", help="build a small demo checkpoint from generated images",
                       description="Generate a small photo set and train a demo checkpoint on "
                                   "it with the real fit (seconds, offline).",
                       formatter_class=HelpFormatter)
    d.add_argument("--output", type=Path, required=True, metavar="PATH",
                   help="checkpoint file to write, e.g. models/model.safetensors")
    d.add_argument("--image-size", type=integer(*INPUT_SIZE_RANGE), default=64,
                   help="model input side in pixels")
    d.add_argument("--epochs", type=integer(1), default=2, help="training epochs")
    d.add_argument("--arch", default="resnet18", help="any torchvision classification model")
    d.set_defaults(handler=run_demo)

    from training.commands import add_offline_commands

    add_offline_commands(sub)
    return parser


def run_fit(args: argparse.Namespace) -> int:
    check_data_dir(args.data)  # before importing torch: a wrong path is reported at once
    if args.weights not in ("imagenet", "none"):
        if args.weights.lower() in ("imagenet", "none") and not Path(args.weights).exists():
            raise TrainingError(f"--weights {args.weights}: no such file; the keywords are "
                                f"lower case: --weights {args.weights.lower()}")
        check_file(Path(args.weights), "--weights")
    if args.group_file is not None:
        check_file(args.group_file, "--group-file")
    if launch_rank() == 0:  # before training, not after it; under torchrun only rank 0 writes
        check_fit_output(args.output, args.folds, args.log)
    from training.fit import fit

    fields = set(FitConfig.__dataclass_fields__)
    config = FitConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        with human_output_to_stderr(args.json):
            result = fit(config)
    except KeyboardInterrupt:
        if _has_train_state(args.output, args.folds):
            print("\ninterrupted; continue with the same command plus --resume", file=sys.stderr)
        else:  # before the first epoch ended: --resume would find nothing
            print("\ninterrupted before the first epoch finished: nothing to resume; run the "
                  "same command again", file=sys.stderr)
        return 130
    if args.json and launch_rank() == 0:
        from training.summary import rounded

        print(json.dumps(rounded({k: v for k, v in result.items() if k != "history"}),
                         indent=2))
    return 0


def _has_train_state(output: Path, folds: int) -> bool:
    """Whether an interrupted run left a state for ``--resume`` (``training.state.state_path``;
    that module imports torch)."""
    if folds > 1:
        return output.is_dir() and any(output.glob("fold*.train-state.pt"))
    return sibling(output, ".train-state.pt").is_file()


def human_output_to_stderr(enabled: bool) -> contextlib.AbstractContextManager:
    """With ``--json``, everything printed for people goes to stderr, leaving stdout to the
    JSON (``tqdm.write`` and ``print`` look ``sys.stdout`` up when they write)."""
    return contextlib.redirect_stdout(sys.stderr) if enabled else contextlib.nullcontext()


def run_demo(args: argparse.Namespace) -> int:
    from training.demo import build_demo_checkpoint

    path = build_demo_checkpoint(args.output, image_size=args.image_size, epochs=args.epochs,
                                 arch=args.arch)
    print(f"demo checkpoint written to {path}")
    return 0


def launch_rank() -> int:
    """This process's rank as torchrun sets it (``training.distributed.Launch`` reads the same
    variables; that module imports torch)."""
    env = os.environ
    if all(k in env for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")):
        return int(env["RANK"])
    return 0


def _is_user_error(exc: BaseException) -> bool:
    """A ``TrainingError`` or a ``model.checkpoint.CheckpointError``; the latter is looked up
    only if that module was imported (if it was not, nothing can have raised one)."""
    checkpoint = sys.modules.get("model.checkpoint")
    return isinstance(exc, TrainingError) or (
        checkpoint is not None and isinstance(exc, checkpoint.CheckpointError))


def _said_by_rank_0(exc: BaseException) -> bool:
    distributed = sys.modules.get("training.distributed")
    return distributed is not None and isinstance(exc, distributed.EveryRankError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configured_max_pixels()  # a malformed INVASIVE_MAX_IMAGE_PIXELS: said now, once
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        rank = launch_rank()
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        elif not _said_by_rank_0(exc):  # every rank raises those alike: rank 0 prints them
            print(f"error (rank {rank}): {exc}", file=sys.stderr)
        return 2
