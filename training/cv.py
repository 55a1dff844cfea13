"""k-fold cross-validation: the same ``train_split`` per fold, ROC AUC reported as mean ± sd.

The data is indexed and decoded once for all folds. ``--output`` is a directory that receives
``fold<k>.safetensors`` (each fold's best checkpoint, with its resumable state until all folds
are done), ``log.jsonl``, ``cv.json`` (the summary) and ``training_curves.png``. ``--resume``
skips finished folds and continues the one that was interrupted.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from training.fit import EpochCallback, FitConfig, prepare_data, train_split
from training.plots import plot_training_curves
from training.runlog import RunLog
from training.splits import kfold_splits
from training.state import state_path
from training.summary import cv_end_lines, say


def cross_validate(config: FitConfig, *, on_epoch_end: EpochCallback | None = None) -> dict:
    started = time.perf_counter()
    out_dir = Path(config.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_data(config)
    splits = kfold_splits(prepared.data.labels, prepared.groups, config.folds, config.seed)
    log = RunLog(config.log or out_dir / "log.jsonl")
    results = []
    for k, (train_idx, val_idx) in enumerate(splits, start=1):
        results.append(train_split(config, prepared, train_idx, val_idx,
                                   out_dir / f"fold{k}.safetensors", log, fold=k,
                                   on_epoch_end=on_epoch_end))
    summary = summarise_folds(results)
    summary.update(arch=config.arch, weights=config.weights, folds=config.folds,
                   group_column=config.group_column, images=len(prepared.data.samples),
                   data_fingerprint=prepared.fingerprint, config=config.as_metadata())
    log.write("cv", **{k: v for k, v in summary.items() if k != "folds_detail"})
    checkpoints = [Path(r["checkpoint"]) for r in results]
    if not config.keep_train_state:  # only now: --resume skips finished folds by their state
        for checkpoint in checkpoints:
            state_path(checkpoint).unlink(missing_ok=True)
    history = [e for r in results for e in r["history"]]
    curves = plot_training_curves(history, out_dir / "training_curves.png") if history else None
    states = [str(state_path(c)) for c in checkpoints if state_path(c).is_file()]
    summary.update(output=str(out_dir), checkpoints=[str(c) for c in checkpoints],
                   log=str(log.path), summary_file=str(out_dir / "cv.json"),
                   train_states=states, plots={"training_curves": str(curves)} if curves else {},
                   wall_s=round(time.perf_counter() - started, 1))
    (out_dir / "cv.json").write_text(json.dumps(summary, indent=2, default=str))
    say(cv_end_lines(config, summary, summary["wall_s"], {
        "checkpoints": f"{checkpoints[0]} ... {checkpoints[-1].name}",
        "summary": summary["summary_file"], "log": summary["log"],
        "curves": summary["plots"].get("training_curves"),
        "train state": ", ".join(states) if states else "removed (--keep-train-state keeps it)",
    }))
    return summary


def summarise_folds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd of the folds' best validation ROC AUC, plus speed figures."""
    aucs = [r["best"]["roc_auc"] for r in results]
    epochs = [e for r in results for e in r["history"]]
    return {
        "roc_auc_mean": statistics.fmean(aucs),
        "roc_auc_sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
        "roc_auc_per_fold": aucs,
        "accuracy_mean": statistics.fmean(r["best"]["accuracy"] for r in results),
        "train_images_per_s_mean": statistics.fmean(e["images_per_s"] for e in epochs),
        "epoch_s_mean": statistics.fmean(e["epoch_s"] for e in epochs),
        "data_s_per_epoch_mean": statistics.fmean(e["data_s"] for e in epochs),
        "compute_s_per_epoch_mean": statistics.fmean(e["compute_s"] for e in epochs),
        "epochs_run": [r["epochs_run"] for r in results],
        "best_epochs": [r["best"]["epoch"] for r in results],
        "folds_detail": [{k: v for k, v in r.items() if k != "history"} for r in results],
    }
