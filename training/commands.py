"""Sub-commands that use a trained checkpoint or only look at data: evaluate, predict, eda."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def add_offline_commands(sub, add_data_flags: Callable, add_runtime_flags: Callable) -> None:
    """Register ``evaluate``, ``predict`` and ``eda`` on the ``invasive-train`` parser."""
    e = sub.add_parser("evaluate", help="metrics JSON + ROC, confusion and training-curve PNGs")
    e.add_argument("--checkpoint", type=Path, required=True)
    add_data_flags(e)
    e.add_argument("--output", type=Path, required=True, help="directory for metrics and plots")
    e.add_argument("--log", type=Path, default=None,
                   help="training log for the curves (default: beside the checkpoint)")
    e.add_argument("--tta", action="store_true", help="average with the mirrored image")
    add_runtime_flags(e)
    e.set_defaults(handler=_run_evaluate)

    p = sub.add_parser("predict", help="folder of photos -> Kaggle submission.csv")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True, help="folder of photos (e.g. test/)")
    p.add_argument("--output", type=Path, default=Path("submission.csv"))
    p.add_argument("--tta", action="store_true", help="average with the mirrored image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out")
    add_runtime_flags(p)
    p.set_defaults(handler=_run_predict)

    d = sub.add_parser("eda", help="class-balance chart and image-size summary of a dataset")
    add_data_flags(d)
    d.add_argument("--output", type=Path, required=True, help="directory for eda.json and PNG")
    d.set_defaults(handler=_run_eda)


def _run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    report = evaluate(args.checkpoint, args.data, args.output, device=args.device,
                      precision=args.precision, workers=args.workers, skip_bad=args.skip_bad,
                      flip_tta=args.tta, log=args.log)
    keys = ("roc_auc", "accuracy", "precision", "recall", "f1", "threshold", "confusion",
            "count", "same_data_as_training", "plots")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    print(f"metrics written to {args.output / 'metrics.json'}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from training.predict import predict_folder

    result = predict_folder(args.checkpoint, args.images, args.output, device=args.device,
                            precision=args.precision, workers=args.workers, flip_tta=args.tta,
                            skip_bad=args.skip_bad, batch_size=args.batch_size)
    print(f"wrote {result['rows']} predictions to {result['output']}")
    return 0


def _run_eda(args: argparse.Namespace) -> int:
    from training.eda import explore

    summary = explore(args.data, args.output, skip_bad=args.skip_bad,
                      positive_class=args.positive_class)
    print(json.dumps(summary, indent=2))
    return 0
