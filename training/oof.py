"""Out-of-fold (OOF) figures of a cross-validation: the predictions CSV, the pooled ROC AUC with a
bootstrap interval over groups, and a decision threshold chosen on the pooled predictions.

Every image is scored once, by the model of the fold that held it out (see ``training.cv`` for
why that model chose nothing on it). Pooling those predictions gives one ROC AUC over all images:
the figure to quote. Its interval resamples *groups* (photos whose tiles share a
``--group-column`` value; without one, single images), because tiles of one photo are not
independent evidence: resampling tiles would make the interval too narrow.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from training.metrics import binary_metrics, youden_threshold

OOF_FILE = "oof_predictions.csv"
OOF_COLUMNS = ["name", "group", "fold", "label", "class", "probability"]
RESAMPLES = 1000
LEVEL = 0.95


def grouped_bootstrap_auc(is_positive: np.ndarray, p_positive: np.ndarray, groups: list[str],
                          *, resamples: int = RESAMPLES, level: float = LEVEL,
                          seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap interval of ROC AUC, resampling groups with replacement.

    Each resample draws as many groups as there are, with replacement; an image counts as often
    as its group was drawn (``sample_weight``, the same as repeating its rows). Resamples with a
    single class have no ROC AUC and are left out (``used`` says how many remain).
    """
    y = np.asarray(is_positive).astype(int)
    p = np.asarray(p_positive, dtype=np.float64)
    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        weight = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))[codes]
        chosen = weight > 0
        if len(np.unique(y[chosen])) < 2:
            continue
        aucs.append(roc_auc_score(y[chosen], p[chosen], sample_weight=weight[chosen]))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail]) if aucs else (np.nan, np.nan)
    return {"low": float(low), "high": float(high), "level": level, "method":
            "percentile bootstrap, resampling groups with replacement", "resamples": resamples,
            "used": len(aucs), "groups": int(len(names)), "seed": seed}


def pooled_figures(is_positive: np.ndarray, p_positive: np.ndarray, groups: list[str], *,
                   seed: int = 0, resamples: int = RESAMPLES) -> dict[str, Any]:
    """ROC AUC of the pooled OOF predictions, its interval, and the Youden's J threshold on them.

    The threshold is chosen on these same predictions, so the metrics at it (accuracy, F1, ...)
    lean optimistic; the ROC AUC does not depend on any threshold.
    """
    threshold = youden_threshold(is_positive, p_positive)
    metrics = binary_metrics(is_positive, p_positive, threshold)
    return {
        "roc_auc": metrics["roc_auc"],
        "interval": grouped_bootstrap_auc(is_positive, p_positive, groups, seed=seed,
                                          resamples=resamples),
        "threshold": threshold,
        "threshold_method": "youden_j",
        "threshold_chosen_on": f"the pooled out-of-fold predictions ({metrics['count']} images): "
                               "maximises Youden's J = TPR - FPR",
        "at_threshold": {k: v for k, v in metrics.items() if k not in ("roc_auc", "threshold")},
    }


def write_oof_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``name, group, fold, label (1 = positive class), class, probability`` (of the positive
    class), one row per image in dataset order; probabilities written exactly (shortest
    round-trip repr), so figures recomputed from the CSV match the summary's."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=OOF_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "probability": repr(float(r["probability"]))} for r in rows)
    return path
