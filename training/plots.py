"""PNG figures for evaluate and eda (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def plot_roc(is_positive: np.ndarray, p_positive: np.ndarray, threshold: float, auc: float,
             path: Path) -> Path:
    fpr, tpr, thresholds = roc_curve(is_positive, p_positive)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC AUC {auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    at = int(np.argmin(np.abs(thresholds - threshold)))
    ax.scatter([fpr[at]], [tpr[at]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_precision_recall(is_positive: np.ndarray, p_positive: np.ndarray, threshold: float,
                          path: Path) -> Path:
    """Precision-recall curve with the operating point, and precision/recall/F1 against the
    threshold with the checkpoint's threshold marked: what moving the threshold would trade."""
    precision, recall, thresholds = precision_recall_curve(is_positive, p_positive)
    pred = p_positive >= threshold
    tp = int((pred & is_positive).sum())
    at_p = tp / max(1, int(pred.sum()))
    at_r = tp / max(1, int(is_positive.sum()))
    fig, (ax_pr, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    ax_pr.plot(recall, precision)
    ax_pr.scatter([at_r], [at_p], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax_pr.axhline(is_positive.mean(), linestyle="--", color="grey", linewidth=1,
                  label=f"chance ({is_positive.mean():.2f})")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall curve",
              xlim=(0, 1.02), ylim=(0, 1.02))
    ax_pr.legend(loc="lower left")
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    ax_t.plot(thresholds, precision[:-1], label="precision")
    ax_t.plot(thresholds, recall[:-1], label="recall")
    ax_t.plot(thresholds, f1[:-1], label="F1", linestyle=":")
    ax_t.axvline(threshold, color="red", linewidth=1, label=f"threshold {threshold:.3f}")
    ax_t.set(xlabel="threshold on p(positive)", ylabel="value", title="against the threshold",
             xlim=(0, 1), ylim=(0, 1.02))
    ax_t.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_confusion(confusion: dict[str, int], negative: str, positive: str, path: Path) -> Path:
    matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], [negative, positive])
    ax.set_yticks([0, 1], [negative, positive])
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    return _save(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> Path:
    """The k x k confusion matrix of a multi-class evaluation: counts, rows true, columns
    predicted, class names on both axes."""
    counts = np.asarray(matrix)
    k = len(class_names)
    side = max(4.5, 1.0 + 0.7 * k)
    fig, ax = plt.subplots(figsize=(side + 0.5, side))
    ax.imshow(counts, cmap="Blues")
    for (r, c), value in np.ndenumerate(counts):
        ax.text(c, r, str(value), ha="center", va="center",
                color="white" if value > counts.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 3 else 0, ha="right" if k > 3
                  else "center")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    return _save(fig, path)


def plot_training_curves(epochs: list[dict[str, Any]], path: Path) -> Path:
    """Loss and validation ROC AUC per epoch, one line per fold when the log has several."""
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    folds = sorted({e.get("fold") for e in epochs}, key=lambda f: (f is None, f))
    for fold in folds:
        rows = [e for e in epochs if e.get("fold") == fold]
        x = [e["epoch"] for e in rows]
        tag = f" fold {fold}" if fold is not None else ""
        ax_loss.plot(x, [e["train_loss"] for e in rows], label=f"train{tag}")
        if all("val_loss" in e for e in rows):  # (a fold trained without a validation split)
            ax_loss.plot(x, [e["val_loss"] for e in rows], linestyle="--", label=f"val{tag}")
            ax_auc.plot(x, [e["val_roc_auc"] for e in rows], label=f"val ROC AUC{tag}")
    if not ax_auc.lines:
        ax_auc.text(0.5, 0.5, "no validation split\n(cross-validation folds under the fixed "
                    "schedule:\nsee the out-of-fold figures)", ha="center", va="center",
                    transform=ax_auc.transAxes)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_auc.set(xlabel="epoch", ylabel="ROC AUC", title="validation ROC AUC")
    for ax in (ax_loss, ax_auc):
        if ax.lines:
            ax.legend(fontsize="small")
    return _save(fig, path)


def plot_class_balance(counts: dict[str, int], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, len(counts) * 1.2), 4))
    bars = ax.bar(list(counts), list(counts.values()), color="tab:green")
    ax.bar_label(bars)
    ax.set(ylabel="images", title="class balance")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
