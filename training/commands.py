"""Sub-commands that use a trained checkpoint or only look at data: evaluate, predict, eda.

Like ``training.cli``, this module imports nothing heavy: each handler checks its paths
(``training.preflight``), then imports the module that does the work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from training.cli_flags import (
    HelpFormatter,
    add_data_flags,
    add_group_flags,
    add_json_flag,
    add_runtime_flags,
    integer,
)
from training.errors import TrainingError
from training.preflight import (
    check_checkpoint,
    check_data_dir,
    check_file,
    check_name_lengths,
    check_output,
)

# = model.engines.ENGINES, written out because that module imports torch (seconds on every
# --help); tests/training/test_cli_startup.py keeps the two equal.
ENGINES = ("auto", "eager", "compile", "cudagraphs", "openvino", "onnxruntime")


def add_offline_commands(sub) -> None:
    """Register ``evaluate``, ``predict`` and ``eda`` on the ``invasive-train`` parser."""
    e = sub.add_parser("evaluate", help="score a checkpoint on labelled photos: metrics, plots, "
                                        "misclassified images",
                       description="Score a checkpoint on labelled photos at its stored "
                                   "threshold and write metrics.json, ROC, precision-recall, "
                                   "confusion and training-curve PNGs, and the misclassified "
                                   "images (misclassified.csv and a contact sheet) into --output.",
                       formatter_class=HelpFormatter)
    _add_checkpoint_flag(e)
    add_data_flags(e, positive_help="the checkpoint's positive class, if given (unset: the "
                                    "checkpoint's; another class is refused: the stored "
                                    "threshold was chosen for the checkpoint's own; a "
                                    "multi-class checkpoint refuses it)")
    e.add_argument("--output", type=Path, required=True, metavar="DIR",
                   help="folder for the report (metrics.json, PNGs, misclassified.csv), e.g. "
                        "runs/eval")
    e.add_argument("--log", type=Path, default=None, metavar="PATH",
                   help="training log for the curves (default: beside the checkpoint)")
    e.add_argument("--tta", action="store_true", help="average with the mirrored image")
    add_runtime_flags(e)
    _add_engine_flag(e)
    add_json_flag(e, "the metrics")
    e.set_defaults(handler=_run_evaluate)

    p = sub.add_parser("predict", help="score a folder of photos: Kaggle's name,invasive CSV",
                       description="Score every photo in a folder and its sub-folders and write "
                                   "Kaggle's submission CSV: name (the path under the folder "
                                   "without extension: 12, or invasive/12 in a sub-folder), "
                                   "invasive (probability of the positive class).",
                       formatter_class=HelpFormatter)
    _add_checkpoint_flag(p)
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="folder of photos, searched recursively (e.g. data/kaggle/test, or a "
                        "class-folders root)")
    p.add_argument("--output", type=_csv_output, required=True, metavar="PATH",
                   help="CSV file to write, e.g. runs/submission.csv (an existing folder, or a "
                        "path ending in /, gets submission.csv inside it; an existing file is "
                        "replaced only if it is a .csv)")
    p.add_argument("--tta", action="store_true", help="average with the mirrored image")
    p.add_argument("--batch-size", type=integer(1), default=32, help="images per forward pass")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out")
    add_runtime_flags(p)
    _add_engine_flag(p)
    p.set_defaults(handler=_run_predict)

    d = sub.add_parser("eda", help="look at a dataset: class balance, image sizes, sample "
                                   "photos, groups",
                       description="Summarise a dataset before training on it: class balance, "
                                   "image sizes and formats, a grid of sample photos per class "
                                   "and, with --group-column, the groups.",
                       formatter_class=HelpFormatter)
    add_data_flags(d)
    add_group_flags(d)
    d.add_argument("--output", type=Path, required=True, metavar="DIR",
                   help="folder for eda.json, class_balance.png and samples.png, e.g. runs/eda")
    d.add_argument("--samples", type=integer(1), default=8,
                   help="sample photos per class in samples.png")
    d.add_argument("--seed", type=int, default=0, help="which sample photos are drawn")
    add_json_flag(d, "the summary")
    d.set_defaults(handler=_run_eda)


def _add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                   help="checkpoint written by invasive-train fit (.safetensors)")


def _add_engine_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="eager", choices=ENGINES,
                   help="what runs the model, as the service's INVASIVE_ENGINE (default eager: "
                        "PyTorch as written; a failed conversion falls back to it)")


def _run_evaluate(args: argparse.Namespace) -> int:
    check_checkpoint(args.checkpoint)  # before importing torch: a wrong path fails at once
    check_data_dir(args.data)
    if args.log is not None:
        check_file(args.log, "--log")
    check_output(args.output, folder=True)  # before scoring every photo, not after
    from training.cli import human_output_to_stderr
    from training.evaluate import evaluate, evaluation_lines
    from training.summary import rounded

    with human_output_to_stderr(args.json):
        report = evaluate(args.checkpoint, args.data, args.output, device=args.device,
                          precision=args.precision, workers=args.workers,
                          skip_bad=args.skip_bad, flip_tta=args.tta, log=args.log,
                          engine=args.engine, positive_class=args.positive_class)
        print(f"evaluated {args.checkpoint}")
        print("\n".join(evaluation_lines(report)))
    if args.json:
        keys = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "threshold",
                "confusion", "count", "same_data_as_training", "scope", "misclassified",
                "plots", "metrics_file")
        if report.get("task") == "multiclass":
            keys = ("task", "class_names", "accuracy", "macro_f1", "log_loss", "roc_auc",
                    "per_class", "confusion_matrix", "count", *keys[-5:])
        print(json.dumps(rounded({k: report[k] for k in keys}), indent=2))
    return 0


def _csv_output(raw: str) -> Path:
    """``--output`` of predict: ``runs/new/`` names a folder to make, not a file called ``new``
    (``Path`` drops the trailing slash, so it is read here, from the string)."""
    path = Path(raw)
    return path / "submission.csv" if raw.endswith(("/", os.sep)) else path


def check_csv_output(output: Path, checkpoint: Path) -> Path:
    """The CSV file predict writes, refused before any work if writing it would destroy a file
    that is no earlier submission: the checkpoint itself (audit: the model became a CSV), or any
    existing file not named .csv (a photo, a config). Replacing a .csv is a rerun's job."""
    check_name_lengths(output)
    if output.is_dir():  # an existing folder gets submission.csv inside it
        output = output / "submission.csv"
    if output.exists():
        if checkpoint.exists() and os.path.samefile(output, checkpoint):
            raise TrainingError(f"--output {output} is the checkpoint file; writing the CSV "
                                "there would destroy the model (pass another path, e.g. "
                                "runs/submission.csv)")
        if output.suffix.lower() != ".csv":
            raise TrainingError(f"--output {output} exists and is not a .csv file; predict "
                                "replaces only an earlier CSV (pass a new path, or remove it)")
    check_output(output)
    return output


def _run_predict(args: argparse.Namespace) -> int:
    check_checkpoint(args.checkpoint)
    check_data_dir(args.images, "--images", "image folder")
    output = check_csv_output(args.output, args.checkpoint)
    from training.predict import predict_folder

    result = predict_folder(args.checkpoint, args.images, output, device=args.device,
                            precision=args.precision, workers=args.workers, flip_tta=args.tta,
                            skip_bad=args.skip_bad, batch_size=args.batch_size,
                            engine=args.engine)
    print(f"wrote {result['rows']} predictions to {result['output']}")
    return 0


def _run_eda(args: argparse.Namespace) -> int:
    check_data_dir(args.data)
    if args.group_file is not None:
        check_file(args.group_file, "--group-file")
    check_output(args.output, folder=True)
    from training.eda import eda_lines, explore

    summary = explore(args.data, args.output, skip_bad=args.skip_bad,
                      positive_class=args.positive_class, group_column=args.group_column,
                      group_file=args.group_file, samples_per_class=args.samples,
                      seed=args.seed)
    out = sys.stderr if args.json else sys.stdout
    print(f"eda of {args.data}", file=out)
    print("\n".join(eda_lines(summary)), file=out)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
