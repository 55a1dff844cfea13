"""Validation metrics of "is the invasive class present" and the decision threshold, and of
multi-class data (class folders with no invasive class): "which class is it", no threshold.

A checkpoint with a positive class among several is scored as binary: probability of the
positive class vs the rest, which is the question the service answers for it.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def youden_threshold(is_positive: np.ndarray, p_positive: np.ndarray) -> float:
    """The threshold maximising Youden's J = TPR - FPR on validation (0.5 if undefined).

    J weighs a missed invasive plant and a false alarm equally, and unlike accuracy it does not
    drift with the class balance of the validation set.
    """
    if len(np.unique(is_positive)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(is_positive, p_positive)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def binary_metrics(is_positive: np.ndarray, p_positive: np.ndarray, threshold: float) -> dict:
    """ROC AUC, log loss, and accuracy/precision/recall/F1/confusion at ``threshold``."""
    y = np.asarray(is_positive).astype(int)
    p = np.asarray(p_positive, dtype=np.float64)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "accuracy": float((pred == y).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "threshold": float(threshold),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "count": int(len(y)),
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Top-1 accuracy, macro-F1, log loss, macro one-vs-rest ROC AUC, per-class
    precision/recall/F1/support and the k x k confusion matrix (rows true, columns predicted).

    ``labels`` are indices into ``class_names``; ``probs`` is (N, k). The ROC AUC is NaN when a
    class is missing from ``labels`` (one-vs-rest needs every class on both sides).
    """
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    classes = list(range(k))
    pred = p.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=classes, zero_division=0)
    p_clipped = np.clip(p, 1e-7, 1.0)
    p_clipped = p_clipped / p_clipped.sum(axis=1, keepdims=True)
    present = len(np.unique(y)) == k
    if present and k == 2:  # sklearn takes two classes as binary; both one-vs-rest AUCs equal it
        auc = float(roc_auc_score(y, p[:, 1]))
    elif present:
        auc = float(roc_auc_score(y, p_clipped, multi_class="ovr", average="macro",
                                  labels=classes))
    else:
        auc = math.nan
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y, p_clipped, labels=classes)),
        "roc_auc": auc,  # macro one-vs-rest
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y, pred, labels=classes).tolist(),
        "class_names": list(class_names),
        "count": int(len(y)),
    }
