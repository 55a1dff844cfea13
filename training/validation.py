"""Per-epoch validation for this task: binary (is the invasive class present) or multi-class.

``fit`` asks four things of a validated epoch, whatever the task: its metrics and its score
(:func:`validation_metrics`: what ``--patience`` watches, and what selects the kept epoch
under it), the figures for the epoch's log record
(:func:`epoch_figures`), the epoch's progress-line text (:func:`epoch_text`) and what the kept
checkpoint's metadata records (:func:`checkpoint_update`).

Binary: ROC AUC scores (negative log loss when the AUC is undefined); the checkpoint's threshold
maximises Youden's J. Multi-class (``data.multiclass``: class folders with no invasive class): the
answer is the top class, there is no threshold, and the lowest log loss scores best; see
:data:`MULTICLASS_SELECTION`. Under the default fixed schedule (``--patience 0``) no score
selects anything: the last epoch is kept, for either task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.data import LabelledData
from training.metrics import binary_metrics, multiclass_metrics, youden_threshold

# Multi-class epochs are selected by validation log loss (lower is better), not by top-1
# accuracy or macro one-vs-rest ROC AUC: accuracy moves in steps of 1/N on a small validation
# set (ties, and luck decides between them), and the one-vs-rest AUC is undefined as soon as a
# small class has no validation image and ranks each class on its own, not the choice among
# them. Log loss is always defined, continuous, a proper scoring rule (it rewards both the right
# top class and honest probabilities, which the service returns for every class) and the very
# quantity training minimises.
MULTICLASS_SELECTION = "log_loss"
FIXED_SCHEDULE = "last_epoch"  # what a multi-class checkpoint's "selection" says under --patience 0


def validation_metrics(data: LabelledData, labels: np.ndarray,
                       probs: np.ndarray) -> tuple[dict[str, Any], float]:
    """This task's validation metrics of ``probs`` (N, classes) against ``labels`` (class
    indices), and the epoch's selection score (higher is better)."""
    if data.multiclass:
        metrics = multiclass_metrics(labels, probs, data.class_names)
        return metrics, -metrics["log_loss"]
    is_pos = np.asarray(labels) == data.positive_index
    p_pos = probs[:, data.positive_index]
    metrics = binary_metrics(is_pos, p_pos, youden_threshold(is_pos, p_pos))
    score = metrics["roc_auc"] if math.isfinite(metrics["roc_auc"]) else -metrics["log_loss"]
    return metrics, score


def is_multiclass(metrics: dict[str, Any]) -> bool:
    return "macro_f1" in metrics


def epoch_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The validation fields of an epoch's log record (``val_roc_auc`` for both tasks: the
    training curves plot it; multi-class: macro one-vs-rest)."""
    figures = {"val_loss": round(metrics["log_loss"], 5), "val_roc_auc": metrics["roc_auc"],
               "val_accuracy": metrics["accuracy"]}
    if is_multiclass(metrics):
        return {**figures, "val_macro_f1": metrics["macro_f1"]}
    return {**figures, "threshold": metrics["threshold"]}


def epoch_text(metrics: dict[str, Any]) -> str:
    """The validation part of an epoch's progress line."""
    text = (f"  val_loss {metrics['log_loss']:.4f}  val_auc {metrics['roc_auc']:.4f}  "
            f"val_acc {metrics['accuracy']:.3f}")
    if is_multiclass(metrics):
        text += f"  val_f1 {metrics['macro_f1']:.3f}"
    return text


def checkpoint_update(metrics: dict[str, Any], epoch: int, *,
                      fixed_schedule: bool = False) -> dict[str, Any]:
    """The metadata fields the kept epoch's checkpoint gets (``fixed_schedule``: kept for being
    the last, not chosen by its score)."""
    validation = {**metrics, "epoch": epoch}
    if is_multiclass(metrics):
        selection = FIXED_SCHEDULE if fixed_schedule else MULTICLASS_SELECTION
        return {"metrics": {"validation": validation, "selection": selection}}
    return {"threshold": metrics["threshold"],
            "metrics": {"validation": validation, "threshold_method": "youden_j"}}
