"""Fold ensemble vs single model on the same outer folds: nested cross-validation (issue 12).

Not a test. The figure a user of ``fit --folds k --ensemble`` gets on new photos cannot be read off
the cross-validation that built the ensemble: every image was in the training part of k-1 of its
members. So this runs the same 5 outer folds as ``benchmarks/train_cv.py`` and
``benchmarks/train_recipes.py`` (grouped by ``source_image``, same seed) and, for each outer fold,
builds the ensemble on the outer training part alone, exactly as a user would on all their data
(``training.cv.run_folds`` with ``--inner-folds`` folds and ``ensemble=True``, members trained as
``fit --folds`` trains them: under the fixed schedule on all of their training part, thresholds
from the other members' out-of-fold predictions; the figures in docs/benchmarks.md predate that
and held out an inner split per member), then scores the held-out outer fold with it, once.
Pooling the outer folds gives the ensemble's out-of-fold ROC AUC with the same group bootstrap
interval as the single model's.

The single model's figure for the same recipe is the recipe's ordinary 5-fold CV (one model per
outer fold, trained on the same outer training part): computed here too, unless
``--row`` names the row of ``train_recipes.json`` whose recipe this runs (training is
deterministic on a CPU: the same config gives the same predictions).

    nice .venv/bin/python benchmarks/train_ensemble.py --arch mobilenet_v2 --row m0 \\
        > benchmarks/results/train_ensemble.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_cv import SHARED, machine  # noqa: E402
from benchmarks.train_recipes import WEIGHTS  # noqa: E402
from training.config import FitConfig  # noqa: E402
from training.cv import run_folds, score_held_out  # noqa: E402
from training.fit import PreparedData, prepare_data  # noqa: E402
from training.oof import pooled_figures  # noqa: E402
from training.splits import kfold_splits  # noqa: E402


def subset(prepared: PreparedData, idx: np.ndarray) -> PreparedData:
    """The images ``idx`` of ``prepared`` as a dataset of their own (decode cache included)."""
    data = prepared.data
    samples = [data.samples[i] for i in idx]
    part = type(data)(data.root, data.layout, data.class_names, data.positive_class, samples)
    groups = [prepared.groups[i] for i in idx] if prepared.groups is not None else None
    images = prepared.images[idx] if prepared.images is not None else None
    return PreparedData(part, groups, prepared.spec, images, part.fingerprint())


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    known = {f.name for f in fields(FitConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in known:
            raise SystemExit(f"--set {pair}: FitConfig has no field {key!r}")
        default = getattr(FitConfig(data=Path("."), output=Path(".")), key)
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(default)(value) if default is not None else value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "hogweed-dev")
    parser.add_argument("--arch", default="mobilenet_v2", choices=sorted(WEIGHTS))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="recipe changes from the FitConfig defaults")
    parser.add_argument("--folds", type=int, default=5, help="outer folds")
    parser.add_argument("--inner-folds", type=int, default=3, help="ensemble members")
    parser.add_argument("--row", default=None, metavar="ID",
                        help="a train_recipes.json row: its recipe (then --set on top), and its "
                             "out-of-fold figures as the single model's (same folds, same recipe)")
    parser.add_argument("--recipes", type=Path,
                        default=ROOT / "benchmarks/results/train_recipes.json",
                        help="the train_recipes.py summary holding --row (resnet18's later rows "
                             "are in train_recipes_r.json)")
    parser.add_argument("--raw-dir", type=Path,
                        default=ROOT / "benchmarks/results/raw/train_ensemble")
    parser.add_argument("--summary", type=Path,
                        default=ROOT / "benchmarks/results/train_ensemble.json")
    args = parser.parse_args()
    started = time.perf_counter()
    row = None
    if args.row:
        rows = json.loads(args.recipes.read_text())["rows"]
        row = next((r for r in rows if r["id"] == args.row), None)
        if row is None:
            raise SystemExit(f"no row {args.row!r} in {args.recipes}")
        if row["arch"] != args.arch:
            raise SystemExit(f"row {args.row} is {row['arch']}, not {args.arch}")
    recipe = {**(row["recipe"] if row else {}), **parse_overrides(args.set)}
    config = FitConfig(data=args.data, output=args.raw_dir, arch=args.arch,
                       weights=WEIGHTS[args.arch], folds=args.folds,
                       group_column="source_image", group_file=args.data / "tiles_meta.csv",
                       **recipe)
    prepared = prepare_data(config)
    labels = prepared.data.labels
    is_pos = np.asarray(labels) == prepared.data.positive_index
    groups = prepared.groups
    p_ensemble = np.full(len(labels), np.nan)
    outer = []
    for k, (train_idx, held_idx) in enumerate(
            kfold_splits(labels, groups, args.folds, config.seed), start=1):
        t = time.perf_counter()
        inner = replace(config, folds=args.inner_folds, ensemble=True,
                        output=args.raw_dir / f"{args.arch}-outer{k}")
        summary = run_folds(inner, subset(prepared, train_idx))
        ensemble = Path(summary["ensemble"]["checkpoint"])
        p_ensemble[held_idx] = score_held_out(config, prepared, ensemble, held_idx)
        outer.append({"fold": k, "train": len(train_idx), "held_out": len(held_idx),
                      "inner_oof_roc_auc": summary["roc_auc_oof"],
                      "seconds": round(time.perf_counter() - t, 1)})
        print(f"outer fold {k}: {outer[-1]}", flush=True)
    ensemble_figures = pooled_figures(is_pos, p_ensemble, groups, seed=config.seed)

    if row is not None and not args.set:
        single = {"source": f"{args.recipes.name} row {args.row} (same folds, same recipe)",
                  "roc_auc_oof": row["roc_auc_oof"],
                  "roc_auc_oof_interval": row["roc_auc_oof_interval"]}
    else:
        t = time.perf_counter()
        cv = run_folds(replace(config, output=args.raw_dir / f"{args.arch}-single"), prepared)
        single = {"source": "computed in this run", "roc_auc_oof": cv["roc_auc_oof"],
                  "roc_auc_oof_interval": cv["roc_auc_oof_interval"],
                  "seconds": round(time.perf_counter() - t, 1)}
    result = {
        "machine": machine(), "command": " ".join(sys.argv), "arch": args.arch,
        "weights": config.weights, "recipe": config.as_metadata(),
        "outer_folds": args.folds, "members": args.inner_folds,
        "ensemble": {"roc_auc_oof": ensemble_figures["roc_auc"],
                     "roc_auc_oof_interval": [ensemble_figures["interval"]["low"],
                                              ensemble_figures["interval"]["high"]],
                     "outer": outer},
        "single": single,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.summary.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("ensemble", "single", "wall_s")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
