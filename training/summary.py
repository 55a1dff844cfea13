"""What ``fit`` tells its user: the start-up summary, the epoch legend and the end summary.

Printed by rank 0 only (the callers check ``distributed.is_main()``), through ``tqdm.write`` so
the lines stay clear of progress bars. :func:`finish` also does rank 0's end-of-run chores:
remove the training state (unless ``--keep-train-state``) and draw the training curves. The
machine-readable end summary is :func:`rounded` of the result (``invasive-train fit --json``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training import distributed
from training.config import FitConfig, curves_path
from training.plots import plot_training_curves
from training.state import state_path
from training.weights import describe_weights

LEGEND = ("per epoch: training loss, validation loss / ROC AUC / accuracy, training images/s, "
          "seconds; * = best validation ROC AUC so far")
MULTICLASS_LEGEND = ("per epoch: training loss, validation loss / macro one-vs-rest ROC AUC / "
                     "top-1 accuracy / macro-F1, training images/s, seconds; * = lowest "
                     "validation log loss so far")
UNVALIDATED_LEGEND = "per epoch: training loss, training images/s, seconds (no validation split)"
LAYOUTS = {"kaggle": "Kaggle layout: train/ + train_labels.csv", "folders": "one folder per class"}
PRECISIONS = {"fp32": "fp32", "bf16": "bf16 mixed precision (autocast)",
              "fp16": "fp16 mixed precision (autocast, loss scaling)"}
CACHES = {"memory": "decoded once at model size, kept in memory",
          "disk": "decoded once at model size, kept in memory and on disk",
          "none": "full photos decoded every epoch (each checked once first)"}


def say(lines: list[str]) -> None:
    for line in lines:
        tqdm.write(line)


def rounded(value: Any, digits: int = 4) -> Any:
    """``value`` with every float rounded to ``digits`` decimals, NaN/inf as None, paths as text:
    plain JSON (``json.dumps`` would write NaN, which JSON parsers reject)."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    return [f"  {label:<11} {text}" for label, text in rows]


def class_counts(class_names: list[str], labels: list[int]) -> str:
    counts = Counter(labels)
    return ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(class_names))


def plural(n: float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def data_lines(config: FitConfig, data) -> list[str]:
    """The first part of the start-up summary, printed before the photos are decoded."""
    skipped = f"; {len(data.skipped)} skipped by --skip-bad" if data.skipped else ""
    rows = [
        ("data", f"{config.data} ({LAYOUTS.get(data.layout, data.layout)})"),
        ("images", f"{len(data.samples)}: {class_counts(data.class_names, data.labels)}"
                   f"{skipped}"),
        *[("left out", note) for note in data.notes],
        ("classes", f"{', '.join(data.class_names)}; positive (invasive) class: "
                    f"{data.positive_class}" if not data.multiclass else
                    f"{', '.join(data.class_names)}; multi-class: no --positive-class and no "
                    "folder named invasive, 1 or positive, so the model learns which of the "
                    f"{len(data.class_names)} classes a photo shows (no threshold)"),
        ("decoding", f"--cache {config.cache}: {CACHES.get(config.cache, config.cache)}"),
    ]
    return ["invasive-train fit", *_rows(rows)]


def split_rows(config: FitConfig, groups: list[str] | None, train_idx, val_idx,
               fold: int | None, held_out=None) -> list[tuple[str, str]]:
    """``12 train / 4 validation (25 %), ...``: the sizes, and whether and how it is grouped.

    A cross-validation fold also names its held-out images; train and validation are then the
    inner split of the rest (validation chooses the epoch and threshold), or, with no inner
    split (the fixed schedule), all of the rest trains.
    """
    n_train, n_val = len(train_idx), len(val_idx)
    share = round(100 * n_val / max(1, n_train + n_val))
    if fold is None:
        split = ("split", f"{n_train} train / {n_val} validation ({share} %; hold-out, "
                          f"--val-fraction {config.val_fraction:g}, seed {config.seed})")
    elif held_out is None:
        split = ("split", f"{n_train} train / {n_val} validation ({share} %; fold {fold} of "
                          f"{config.folds}, seed {config.seed})")
    elif not n_val:
        split = ("split", f"fold {fold} of {config.folds}: {len(held_out)} held out (scored "
                          f"once at the end); the other {n_train} all train (fixed schedule: "
                          "no epoch to choose, so no inner validation split; the threshold "
                          f"comes from the other folds' out-of-fold predictions), seed "
                          f"{config.seed}")
    else:
        split = ("split", f"fold {fold} of {config.folds}: {len(held_out)} held out (scored "
                          f"once at the end); the other {n_train + n_val}: {n_train} train / "
                          f"{n_val} validation ({share} %, --val-fraction "
                          f"{config.val_fraction:g}; chooses epoch and threshold), seed "
                          f"{config.seed}")
    if groups is None:
        return [split, ("groups", "none (each image is its own group: tiles of one photo may "
                                  "land on both sides; see --group-column)")]
    source = config.group_file or "the labels CSV"
    g_train = len({groups[i] for i in train_idx})
    g_val = f" / {len({groups[i] for i in val_idx})} validation" if len(val_idx) else ""
    g_held = "" if held_out is None else f" / {len({groups[i] for i in held_out})} held-out"
    return [split, ("groups", f"by {config.group_column!r} from {source}: {g_train} train"
                              f"{g_val}{g_held} groups, none on both sides")]


def fold_line(config: FitConfig, groups: list[str] | None, train_idx, val_idx, fold: int,
              held_out=None) -> str:
    """A later fold's one line: its split and groups."""
    rows = split_rows(config, groups, train_idx, val_idx, fold, held_out)
    return "  " + "; ".join(f"{label}: {text}" for label, text in rows)


def run_lines(config: FitConfig, *, groups: list[str] | None, train_idx, val_idx,
              fold: int | None, device: str, precision: str, world_size: int, weights: str,
              steps: int, outputs: dict[str, str | None], held_out=None,
              multiclass: bool = False) -> list[str]:
    """The rest of the start-up summary: split, model, weights, device, schedule, outputs."""
    selection = selection_name(multiclass)
    per_rank = (f", {config.batch_size // world_size} per process ({world_size} processes, "
                "torchrun)" if world_size > 1 else "")
    rows = [
        *split_rows(config, groups, train_idx, val_idx, fold, held_out),
        ("model", f"{config.arch}, input {config.image_size} px"),
        ("weights", weights),
        ("device", f"{device}, {PRECISIONS.get(precision, precision)}"),
        ("batches", f"{config.batch_size} images{per_rank}, {plural(steps, 'step')} per epoch; "
                    + (f"up to {plural(config.epochs, 'epoch')}, stopping after "
                       f"{config.patience} without a better {selection}" if config.patience else
                       f"{plural(config.epochs, 'epoch')}, the last one kept (--patience 0)")),
        ("optimiser", f"AdamW, lr {config.lr:g}, weight decay {config.weight_decay:g}, warm-up "
                      f"{plural(config.warmup_epochs, 'epoch')}, then {config.schedule}"),
    ]
    rows += [(label, path) for label, path in outputs.items() if path is not None]
    return [*_rows(rows), legend(multiclass, config.patience, validated=len(val_idx) > 0)]


def legend(multiclass: bool, patience: int, *, validated: bool = True) -> str:
    """The line above the epochs: what they show, what "*" marks and which epoch is saved
    (``validated`` false: a cross-validation fold with no inner validation split)."""
    saved = (", checkpoint saved" if patience else
             "; the checkpoint is saved every epoch and the last one kept (--patience 0)")
    if not validated:
        return UNVALIDATED_LEGEND + saved
    return (MULTICLASS_LEGEND if multiclass else LEGEND) + saved


def selection_name(multiclass: bool) -> str:
    """What chooses the kept epoch (``training.validation``)."""
    return "validation log loss" if multiclass else "validation ROC AUC"


def fit_outputs(config: FitConfig, checkpoint: Path, log: Path | None,
                state: Path) -> dict[str, str | None]:
    """The files a single-split run writes, as the start-up summary lists them."""
    keep = "kept" if config.keep_train_state else "removed when the run finishes"
    kept = "the best epoch's" if config.patience else "the last epoch's"
    if checkpoint.is_file() and not config.resume:  # say so before the first epoch replaces it
        kept += " weights; replaces the file there now after epoch 1"
    else:
        kept += " weights"
    return {"checkpoint": f"{checkpoint} ({kept})",
            "log": str(log) if log else None,
            "train state": f"{state} (for --resume after a kill; {keep})"}


def cv_outputs(config: FitConfig, out_dir: Path, log: Path | None) -> dict[str, str | None]:
    keep = "kept" if config.keep_train_state else "removed when all folds finish"
    return {"predictions": f"{out_dir}/oof_predictions.csv (every image, scored by the fold "
                           "that held it out)",
            "checkpoints": f"{out_dir}/fold1.safetensors ... fold{config.folds}.safetensors",
            "log": str(log) if log else None,
            "summary": str(out_dir / "cv.json"),
            "train state": f"{out_dir}/fold<k>.train-state.pt (for --resume; {keep})"}


def metrics_text(m: dict[str, Any]) -> str:
    if "macro_f1" in m:  # multi-class (training.metrics.multiclass_metrics)
        return (f"top-1 accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, log loss "
                f"{m['log_loss']:.4f}, macro one-vs-rest ROC AUC {m['roc_auc']:.4f}")
    auc = (f"ROC AUC {m['roc_auc']:.4f}" if math.isfinite(m["roc_auc"])
           else "ROC AUC undefined (one class only)")
    return (f"{auc}, accuracy {m['accuracy']:.4f}, precision "
            f"{m['precision']:.4f}, recall {m['recall']:.4f}, F1 {m['f1']:.4f}, log loss "
            f"{m['log_loss']:.4f}")


def end_lines(config: FitConfig, result: dict[str, Any], wall_s: float) -> list[str]:
    """The end summary of a single-split run: the kept epoch, its metrics, threshold, paths."""
    kept, best, run = result["kept"], result["best"], result["epochs_run"]
    multiclass = result.get("task") == "multiclass"
    selection = selection_name(multiclass)
    stop = (f"stopped early ({config.patience} without a better {selection})"
            if run < config.epochs else f"--epochs {config.epochs}")
    lines = [f"done in {_duration(wall_s)}: {plural(run, 'epoch')}, {stop}"]
    if kept is None:
        return [*lines, "  no epoch was run: nothing to report"]
    state = result.get("train_state")
    if config.patience:
        why = f"the best {selection}"
    elif best["epoch"] == kept["epoch"]:
        why = f"the last (--patience 0), and the best {selection}"
    elif _figure(best, multiclass) == _figure(kept, multiclass):
        why = f"the last (--patience 0), tied for the best {selection} with epoch {best['epoch']}"
    else:  # a fixed schedule: say which epoch validated best, and that it was not kept
        name, value = _figure(best, multiclass)
        why = (f"the last (--patience 0); the best {selection} was epoch {best['epoch']}'s "
               f"({name} {value:.4f}), not kept")
    rows = [
        ("kept epoch", f"{kept['epoch']} of {run}: {why}"),
        ("validation", f"{kept['count']} images: {metrics_text(kept)}"),
        ("threshold", None if multiclass else f"{kept['threshold']:.4f}: maximises Youden's J "
                      "(TPR - FPR) on validation; stored in the checkpoint"),
        ("answer", "the top class (multi-class: no threshold)" if multiclass else None),
        ("checkpoint", result["checkpoint"]),
        ("log", result.get("log")),
        ("curves", result.get("plots", {}).get("training_curves")),
        ("train state", state if state else "removed (a finished run needs none; "
                                            "--keep-train-state keeps it)"),
    ]
    lines += _rows([(k, str(v)) for k, v in rows if v is not None])
    chosen = [*(["kept epoch"] if config.patience else []), *([] if multiclass else
                                                                ["threshold"])]
    if chosen:  # multi-class on a fixed schedule: these images chose nothing
        honest = "held-out data gives" if multiclass else "held-out data or --folds give"
        lines.append(f"  (the {' and the '.join(chosen)} {'were' if len(chosen) > 1 else 'was'} "
                     "chosen on these validation images, so the figures lean optimistic; "
                     f"{honest} an honest estimate)")
    if not config.demo:  # a demo's photos are generated and gone: there is nothing to compare
        lines.append(f"next: invasive-train evaluate --checkpoint {result['checkpoint']} "
                     "--data HELD_OUT_DATA --output runs/eval")
    return lines


def _figure(metrics: dict[str, Any], multiclass: bool) -> tuple[str, float]:
    """The figure that scores an epoch (``training.validation.validation_metrics``)."""
    if not multiclass and math.isfinite(metrics.get("roc_auc", math.nan)):
        return "ROC AUC", metrics["roc_auc"]
    return "log loss", metrics["log_loss"]


def cv_end_lines(config: FitConfig, summary: dict[str, Any], wall_s: float,
                 paths: dict[str, Any]) -> list[str]:
    """The end summary of a cross-validation: the pooled out-of-fold figure first."""
    oof, ci = summary["oof"], summary["oof"]["interval"]
    at = oof["at_threshold"]

    def figures(values: list[float]) -> str:
        return ", ".join(f"{a:.4f}" for a in values)

    inner = summary.get("inner_split", True)
    chosen = figures(summary["selection_roc_auc_per_fold"]) if inner else ""
    over = (f"{ci['groups']} groups by {config.group_column!r}" if config.group_column
            else f"{ci['groups']} images, each its own group")
    rows = [
        ("ROC AUC", f"{oof['roc_auc']:.4f}, {ci['level']:.0%} interval {ci['low']:.4f} - "
                    f"{ci['high']:.4f}: pooled out-of-fold, {summary['images']} images, each "
                    "scored by the one fold model that neither trained nor chose anything on "
                    f"it (bootstrap over {over}, {ci['resamples']} resamples, seed "
                    f"{ci['seed']})"),
        ("threshold", f"{oof['threshold']:.4f}: maximises Youden's J on the pooled out-of-fold "
                      f"predictions; there accuracy {at['accuracy']:.4f}, precision "
                      f"{at['precision']:.4f}, recall {at['recall']:.4f} (chosen on them: "
                      "optimistic)"),
        ("per fold", f"held-out ROC AUC {figures(summary['roc_auc_per_fold'])} (mean ± sd "
                     f"{summary['roc_auc_mean']:.4f} ± {summary['roc_auc_sd']:.4f}); accuracy "
                     f"at each fold checkpoint's threshold {summary['accuracy_mean']:.4f} "
                     "(mean)"),
        ("selection", "epoch and threshold chosen on an inner validation split of each fold's "
                      f"training part (ROC AUC there: {chosen}; selected on it: optimistic); "
                      "the held-out folds chose nothing" if inner else
                      "none per epoch: each fold trained on all of its training part (fixed "
                      "schedule); its threshold maximises Youden's J on the other folds' "
                      "out-of-fold predictions; the held-out folds chose nothing"),
        ("kept epochs", ", ".join(str(e) for e in summary["kept_epochs"])
                        + (" (the last of each fold: --patience 0)" if not config.patience
                           else f" (the best inner {selection_name(False)} of each fold)")),
        *[(k, str(v)) for k, v in paths.items() if v],
    ]
    return [f"done in {_duration(wall_s)}: {config.arch} {config.folds}-fold cross-validation",
            *_rows(rows)]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


# ---- called by training.fit on rank 0 ---------------------------------------------------------


def announce(config: FitConfig, prepared, train_idx, val_idx, fold: int | None, model,
             steps: int, output: Path, log: Path | None, device, precision: str,
             held_out=None) -> None:
    """The start-up summary (a later fold of a cross-validation: only its split)."""
    if fold is not None and fold > 1:
        say([fold_line(config, prepared.groups, train_idx, val_idx, fold, held_out)])
        return
    outputs = (cv_outputs(config, output.parent, log) if fold is not None
               else fit_outputs(config, output, log, state_path(output)))
    say(run_lines(config, groups=prepared.groups, train_idx=train_idx, val_idx=val_idx,
                  fold=fold, device=str(device), precision=precision,
                  world_size=distributed.get_world_size(), steps=steps, outputs=outputs,
                  weights=describe_weights(config.arch, config.weights, model),
                  held_out=held_out, multiclass=prepared.data.multiclass))


def finish(config: FitConfig, result: dict[str, Any], output: Path, started: float) -> None:
    """Rank 0, after a finished run: drop the training state (a finished run needs none for
    ``--resume``) unless ``--keep-train-state``, draw the curves, print the end summary."""
    state = state_path(output)
    if not config.keep_train_state:
        state.unlink(missing_ok=True)
    plots = {}
    if result["history"] and not config.demo:  # a demo checkpoint's models/ stays one file
        plots["training_curves"] = str(plot_training_curves(result["history"],
                                                            curves_path(output)))
    result.update(train_state=str(state) if state.is_file() else None, plots=plots,
                  wall_s=round(time.perf_counter() - started, 1))
    if result.get("task") != "multiclass":
        result["threshold_method"] = "youden_j"
    say(end_lines(config, result, result["wall_s"]))
