"""k-fold cross-validation: out-of-fold predictions for every image, and their pooled ROC AUC.

Each of the k (grouped, stratified) folds is held out once, and nothing is chosen on it: the fold
model that did not train on it scores it once, at the end, so its predictions are what the same
``fit`` recipe gives on photos it never saw. (Scoring the fold every epoch and keeping its best
epoch, as this module did before, selects on the very images it reports: an optimistic figure.)

What the fold model trains on depends on what there is to choose:

- **The fixed schedule** (``--patience 0``, the default): the last epoch is kept, so the only
  choice is each fold checkpoint's threshold. The fold trains on all of the other k-1 folds, as
  many photos as a plain ``fit`` on the whole set trains on (1 - 1/k = 80 % against its 80 %
  at ``--val-fraction 0.2``), and its threshold maximises Youden's J on the out-of-fold
  predictions of the *other* folds (none of its own held-out photos). Recipe row m14 in
  docs/benchmarks.md measured the change.
- **Early stopping** (``--patience N``) also chooses the epoch: the other k-1 folds are split
  again, by the same ``holdout_split`` as a plain ``fit`` (``--val-fraction``, whole groups), into
  an inner training part and an inner validation part, which chooses the epoch and threshold.
  Each fold then trains on (1 - val_fraction) of the other folds' images, fewer than ``fit``.

The figure to quote is the ROC AUC of the pooled out-of-fold predictions, with a bootstrap
interval over groups (``training.oof``); per-fold figures are kept beside it.

The data is indexed and decoded once for all folds. ``--output`` is a directory that receives
``fold<k>.safetensors`` (each fold's kept checkpoint, with its resumable state until all folds
are done), with ``--ensemble`` ``ensemble.safetensors`` (all k as one, ``model.ensemble``),
``oof_predictions.csv``, ``log.jsonl``, ``cv.json`` (the summary) and
``training_curves.png``. ``--resume`` skips finished folds and continues the one that was
interrupted.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import CheckpointMetadata, EnsembleSpec, load_checkpoint, save_checkpoint
from model.ensemble import FoldEnsemble
from training.errors import DataError
from training.fit import (
    EpochCallback,
    FitConfig,
    PreparedData,
    prepare_data,
    runtime,
    split_images,
    train_split,
)
from training.loop import score_with_classifier
from training.metrics import binary_metrics, youden_threshold
from training.oof import OOF_FILE, pooled_figures, write_oof_csv
from training.plots import plot_training_curves
from training.runlog import RunLog
from training.splits import fold_limit, holdout_split, kfold_splits
from training.state import state_path
from training.summary import cv_end_lines, plural, say

ENSEMBLE_FILE = "ensemble.safetensors"
SELECTION = ("epoch and threshold of each fold chosen on an inner validation split of its "
             "training part (--val-fraction, whole groups); the held-out fold was scored once, "
             "by the kept checkpoint, and chose nothing")
SELECTION_WHOLE = ("fixed schedule: each fold trained on all of its training part and kept its "
                   "last epoch; its threshold maximises Youden's J on the other folds' "
                   "out-of-fold predictions; the held-out fold was scored once and chose nothing")


def cross_validate(config: FitConfig, *, on_epoch_end: EpochCallback | None = None) -> dict:
    started = time.perf_counter()
    from training.data import load_labelled_data  # indexing only: refuse before any decoding

    data = load_labelled_data(config.data, skip_bad=config.skip_bad,
                              positive_class=config.positive_class)
    if data.multiclass:
        raise DataError("--folds is for binary data; multi-class CV is not supported yet (class "
                        "folders with no invasive class: leave out --folds for a hold-out split, "
                        "or name the invasive class with --positive-class)")

    def check_split(labels: list[int], groups: list[str] | None) -> None:
        plan_folds(config, labels, groups)  # too many folds, or too small a fold: fail now

    prepared = prepare_data(config, data=data, check_split=check_split)
    return run_folds(config, prepared, on_epoch_end=on_epoch_end, started=started)


def run_folds(config: FitConfig, prepared: PreparedData, *,
              on_epoch_end: EpochCallback | None = None, started: float | None = None) -> dict:
    """Cross-validate on data already indexed and decoded (``cross_validate`` prepares all of
    ``config.data``; benchmarks/train_ensemble.py passes the training part of an outer fold)."""
    started = time.perf_counter() if started is None else started
    out_dir = Path(config.output)
    plan = fold_plan(config, prepared)  # every split first: a fold too small fails before training
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_folds(config, prepared, plan, out_dir, on_epoch_end, started)
    except BaseException:
        # A run that failed (or was interrupted) before writing anything leaves no folder: an
        # empty one named like a checkpoint (models/model.safetensors) misleads everything
        # that later looks for a file there. A folder with files in it stays, for --resume.
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _run_folds(config: FitConfig, prepared: PreparedData,
               plan: list[tuple[np.ndarray, np.ndarray, np.ndarray]], out_dir: Path,
               on_epoch_end: EpochCallback | None, started: float) -> dict:
    data = prepared.data
    log = RunLog(config.log or out_dir / "log.jsonl")
    if not config.resume:  # a new run: not appended to an old one's log
        log.path.unlink(missing_ok=True)
    is_pos = np.asarray(data.labels) == data.positive_index
    p_oof = np.full(len(data.samples), np.nan)
    fold_of = np.zeros(len(data.samples), dtype=int)
    results = []
    for k, (fit_idx, select_idx, held_idx) in enumerate(plan, start=1):
        result = train_split(config, prepared, fit_idx, select_idx,
                             out_dir / f"fold{k}.safetensors", log, fold=k, held_out=held_idx,
                             on_epoch_end=on_epoch_end)
        p_held = score_held_out(config, prepared, Path(result["checkpoint"]), held_idx)
        p_oof[held_idx], fold_of[held_idx] = p_held, k
        if len(select_idx):  # else its threshold comes from the other folds, once all are done
            result["held_out"] = binary_metrics(is_pos[held_idx], p_held,
                                                result["kept"]["threshold"])
            log.write("held_out", fold=k, **result["held_out"])
        results.append(result)
    if not config.inner_split_per_fold:
        thresholds_from_other_folds(results, is_pos, p_oof, fold_of, log)
    groups = prepared.groups or [s.name for s in data.samples]
    oof_file = write_oof_csv(out_dir / OOF_FILE, [
        {"name": s.name, "group": groups[i], "fold": int(fold_of[i]), "label": int(is_pos[i]),
         "class": data.class_names[s.label], "probability": float(p_oof[i])}
        for i, s in enumerate(data.samples)])
    oof = pooled_figures(is_pos, p_oof, groups, seed=config.seed)
    summary = {
        "roc_auc_oof": oof["roc_auc"],
        "roc_auc_oof_interval": [oof["interval"]["low"], oof["interval"]["high"]],
        "threshold": oof["threshold"], "threshold_method": oof["threshold_method"],
        "oof": {**oof, "predictions_file": str(oof_file),
                "selection": SELECTION if config.inner_split_per_fold else SELECTION_WHOLE},
        "inner_split": config.inner_split_per_fold,
        **summarise_folds(results),
    }
    summary.update(arch=config.arch, weights=config.weights, folds=config.folds,
                   group_column=config.group_column, images=len(data.samples),
                   data_fingerprint=prepared.fingerprint, config=config.as_metadata())
    log.write("cv", **{k: v for k, v in summary.items() if k != "folds_detail"})
    checkpoints = [Path(r["checkpoint"]) for r in results]
    if not config.keep_train_state:  # only now: --resume skips finished folds by their state
        for checkpoint in checkpoints:
            state_path(checkpoint).unlink(missing_ok=True)
    if config.ensemble:
        ensemble = write_ensemble(out_dir / ENSEMBLE_FILE, checkpoints, results, oof)
        summary["ensemble"] = {"checkpoint": str(ensemble), "members": len(checkpoints),
                               "threshold": oof["threshold"]}
    history = [e for r in results for e in r["history"]]
    curves = plot_training_curves(history, out_dir / "training_curves.png") if history else None
    states = [str(state_path(c)) for c in checkpoints if state_path(c).is_file()]
    summary.update(output=str(out_dir), checkpoints=[str(c) for c in checkpoints],
                   log=str(log.path), summary_file=str(out_dir / "cv.json"),
                   train_states=states, plots={"training_curves": str(curves)} if curves else {},
                   wall_s=round(time.perf_counter() - started, 1))
    (out_dir / "cv.json").write_text(json.dumps(summary, indent=2, default=str))
    say(cv_end_lines(config, summary, summary["wall_s"], {
        "predictions": str(oof_file),
        "checkpoints": f"{checkpoints[0]} ... {checkpoints[-1].name}",
        "ensemble": summary.get("ensemble", {}).get("checkpoint"),
        "summary": summary["summary_file"], "log": summary["log"],
        "curves": summary["plots"].get("training_curves"),
        "train state": ", ".join(states) if states else "removed (--keep-train-state keeps it)",
    }))
    return summary


def thresholds_from_other_folds(results: list[dict[str, Any]], is_pos: np.ndarray,
                                p_oof: np.ndarray, fold_of: np.ndarray, log: RunLog) -> None:
    """Folds trained without an inner validation split: fold k's threshold maximises Youden's J
    on the out-of-fold predictions of the other folds (made by the other fold models, on photos
    none of them trained on), so none of fold k's held-out photos chose it. Written into each
    fold checkpoint, and its held-out figures taken at it."""
    for result in results:
        k = result["fold"]
        others, held = fold_of != k, fold_of == k
        threshold = youden_threshold(is_pos[others], p_oof[others])
        checkpoint = Path(result["checkpoint"])
        loaded = load_checkpoint(checkpoint)
        at_others = binary_metrics(is_pos[others], p_oof[others], threshold)
        metrics = {"validation": None, "selection": "last_epoch", "threshold_method": "youden_j",
                   "threshold_chosen_on": f"the out-of-fold predictions of the other "
                                          f"{len(results) - 1} folds ({int(others.sum())} "
                                          f"images; none of this fold's held-out images)",
                   "at_threshold_there": at_others}
        save_checkpoint(checkpoint, loaded.model,
                        loaded.metadata.model_copy(update={"threshold": threshold,
                                                           "metrics": metrics}))
        result["kept"]["threshold"] = threshold
        result["held_out"] = binary_metrics(is_pos[held], p_oof[held], threshold)
        log.write("held_out", fold=k, **result["held_out"])


def write_ensemble(path: Path, checkpoints: list[Path], results: list[dict[str, Any]],
                   oof: dict[str, Any]) -> Path:
    """The fold checkpoints as one ``model.ensemble`` checkpoint at ``path``.

    Its threshold is the one chosen on the pooled out-of-fold predictions (the only predictions
    of these models on photos they did not train on). Those are single members' probabilities;
    the ensemble's mean is a little less extreme on new photos, so the threshold is slightly
    conservative for it, which the metadata says.
    """
    loaded = [load_checkpoint(c) for c in checkpoints]
    members = [{"fold": r["fold"], "file": c.name, "model_id": m.model_id,
                "epoch": r["kept"]["epoch"], "held_out_roc_auc": r["held_out"]["roc_auc"]}
               for c, m, r in zip(checkpoints, loaded, results, strict=True)]
    first = loaded[0].metadata
    metadata = CheckpointMetadata(
        **first.model_dump(include={"arch", "class_names", "positive_class", "input_size", "mean",
                                    "std", "resize", "training_config", "data_fingerprint",
                                    "demo"}),
        threshold=oof["threshold"],
        metrics={"oof": {k: oof[k] for k in ("roc_auc", "interval", "threshold",
                                              "at_threshold")},
                 "threshold_method": oof["threshold_method"],
                 "threshold_chosen_on": oof["threshold_chosen_on"] + " of the single fold "
                 "models; the ensemble averages them"},
        ensemble=EnsembleSpec(members=len(loaded), member_info=members),
    )
    return save_checkpoint(path, FoldEnsemble([m.model for m in loaded]), metadata)


def fold_plan(config: FitConfig, prepared: PreparedData
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold: (inner training, inner validation, held-out) indices into the dataset."""
    return plan_folds(config, prepared.data.labels, prepared.groups)


def plan_folds(config: FitConfig, labels: list[int], groups: list[str] | None
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`fold_plan` from the labels and groups alone, so it can run before the decode.

    The inner split is ``fit``'s own hold-out split applied to the fold's training part, so whole
    groups stay on one side of it too. Without one (``FitConfig.inner_split_per_fold`` false: the
    fixed schedule has no epoch to choose) the fold trains on all of its training part and its
    inner validation indices are empty.
    """
    limit, why = fold_limit(labels, groups)
    if config.folds > limit:
        raise DataError(f"--folds {config.folds}: {why}, too few for {config.folds} folds (each "
                        "holds out whole groups, every class spread over the folds); use at most "
                        f"--folds {limit}")
    y = np.asarray(labels)
    plan = []
    for k, (train_idx, held_idx) in enumerate(
            kfold_splits(labels, groups, config.folds, config.seed), start=1):
        if not config.inner_split_per_fold:
            plan.append((train_idx, np.zeros(0, dtype=train_idx.dtype), held_idx))
            continue
        part_groups = [groups[i] for i in train_idx] if groups is not None else None
        try:
            fit_pos, select_pos = holdout_split(y[train_idx].tolist(), part_groups,
                                                config.val_fraction, config.seed)
        except DataError as exc:  # too few groups for 1 in round(1 / --val-fraction)
            part = len(set(part_groups)) if part_groups is not None else len(train_idx)
            raise DataError(
                f"--folds {config.folds}: fold {k}'s training part ({len(train_idx)} images, "
                f"{plural(part, 'group')}) is too small for the inner validation split that "
                f"chooses the epoch and threshold: {exc}; or use fewer --folds (each fold then "
                "trains on more)") from None
        plan.append((train_idx[fit_pos], train_idx[select_pos], held_idx))
    return plan


def score_held_out(config: FitConfig, prepared: PreparedData, checkpoint: Path,
                   held_idx: np.ndarray) -> np.ndarray:
    """p(positive class) of the held-out images by the fold's kept checkpoint, scored through
    the service's ``Classifier`` as validation is."""
    device, precision = runtime(config)
    loaded = load_checkpoint(checkpoint, map_location=device)
    model = loaded.model.to(device, memory_format=torch.channels_last)
    probs = score_with_classifier(model, loaded.metadata,
                                  split_images(prepared, held_idx, config.workers),
                                  device=device, precision=precision)
    return probs[:, prepared.data.positive_index].astype(np.float64)


def summarise_folds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold figures and speed. ``roc_auc_per_fold``: each fold's kept checkpoint on its
    held-out fold (nothing chosen there); ``selection_roc_auc_per_fold``: the kept epoch on the
    inner validation split that chose it (optimistic)."""
    aucs = [r["held_out"]["roc_auc"] for r in results]
    epochs = [e for r in results for e in r["history"]]
    return {
        "roc_auc_per_fold": aucs,
        "roc_auc_mean": statistics.fmean(aucs),
        "roc_auc_sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
        "accuracy_mean": statistics.fmean(r["held_out"]["accuracy"] for r in results),
        # (None: the fold had no inner validation split)
        "selection_roc_auc_per_fold": [r["kept"].get("roc_auc") for r in results],
        "train_images_per_s_mean": statistics.fmean(e["images_per_s"] for e in epochs),
        "epoch_s_mean": statistics.fmean(e["epoch_s"] for e in epochs),
        "data_s_per_epoch_mean": statistics.fmean(e["data_s"] for e in epochs),
        "compute_s_per_epoch_mean": statistics.fmean(e["compute_s"] for e in epochs),
        "epochs_run": [r["epochs_run"] for r in results],
        "kept_epochs": [r["kept"]["epoch"] for r in results],  # the fold checkpoints' epochs
        # the best inner-validation epoch of each fold (= kept_epochs with --patience N)
        "best_epochs": [(r["best"] or r["kept"])["epoch"] for r in results],
        "folds_detail": [{k: v for k, v in r.items() if k != "history"} for r in results],
    }
