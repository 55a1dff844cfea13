"""Validation metrics of "is the invasive class present" and the decision threshold.

Multi-class checkpoints are scored the same way: probability of the positive class vs the rest,
which is the question the service answers.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve


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
