"""``evaluate`` of a multi-class checkpoint: the answer is the top class, there is no threshold.

Reports top-1 accuracy, macro-F1, log loss, macro one-vs-rest ROC AUC and per-class
precision/recall/F1/support (``training.metrics.multiclass_metrics``), draws the k x k confusion
matrix, and lists the misclassified images, most confidently wrong first (by how much more
probability the predicted class got than the true one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training import sheets
from training.data import LabelledData
from training.metrics import multiclass_metrics
from training.plots import plot_confusion_matrix
from training.sheets import Tile
from training.summary import metrics_text

WRONG = (200, 30, 30)  # frame colour on the sheet
PLOT_NAMES = {"confusion": "confusion matrix", "training_curves": "training curves"}


def multiclass_results(data: LabelledData, class_names: list[str], probs: np.ndarray,
                       keep: np.ndarray, out_dir: Path
                       ) -> tuple[dict[str, Any], dict[str, Path], dict[str, Any]]:
    """Metrics, plots and the misclassified list of ``probs`` (N, k; the checkpoint's classes
    ``class_names``) on ``data``, whose classes must all be among ``class_names``."""
    truth = np.array([class_names.index(data.class_names[s.label]) for s in data.samples],
                     dtype=int)
    metrics = multiclass_metrics(truth[keep], probs[keep], class_names)
    plots = {"confusion": plot_confusion_matrix(metrics["confusion_matrix"], class_names,
                                                out_dir / "confusion_matrix.png")}
    rows = misclassified(data, class_names, truth, probs, keep)
    return metrics, plots, write_misclassified(rows, out_dir, int(keep.sum()))


def misclassified(data: LabelledData, class_names: list[str], truth: np.ndarray,
                  probs: np.ndarray, keep: np.ndarray) -> list[dict[str, Any]]:
    """The images whose top class is not their class, most confidently wrong first."""
    rows = []
    for i, sample in enumerate(data.samples):
        predicted = int(np.argmax(probs[i])) if keep[i] else truth[i]
        if predicted == truth[i]:
            continue
        p_pred, p_true = float(probs[i, predicted]), float(probs[i, truth[i]])
        rows.append({"name": sample.name, "true_class": class_names[truth[i]],
                     "predicted": class_names[predicted], "p_predicted": round(p_pred, 6),
                     "p_true": round(p_true, 6), "path": str(sample.path),
                     "_wrongness": p_pred - p_true})
    rows.sort(key=lambda r: -r["_wrongness"])
    return [{k: v for k, v in r.items() if k != "_wrongness"} for r in rows]


def write_misclassified(rows: list[dict[str, Any]], out_dir: Path, scored: int) -> dict[str, Any]:
    """``misclassified.csv`` (all of them) and ``misclassified.png`` (the worst, if any)."""
    def title(shown: int) -> str:
        return (f"misclassified (top class is not the true class): {len(rows)} of {scored} "
                "images, worst first" + (f" (the first {shown})" if shown < len(rows) else ""))

    def tile(r: dict[str, Any]) -> Tile:
        return Tile(Path(r["path"]), (r["name"], f"true: {r['true_class']}",
                                      f"{r['predicted']} {r['p_predicted']:.3f}"), WRONG)

    columns = ["name", "true_class", "predicted", "p_predicted", "p_true", "path"]
    return sheets.write_misclassified(rows, columns, out_dir, title=title, tile=tile)


def multiclass_evaluation_lines(report: dict[str, Any]) -> list[str]:
    """The readable summary ``invasive-train evaluate`` prints for a multi-class checkpoint."""
    wrong = report["misclassified"]
    rows = [
        ("scored", report["scope"]),
        ("metrics", f"{metrics_text(report)}; multi-class: the top class is the answer (no "
                    "threshold)" + (", mirror-image TTA" if report["flip_tta"] else "")),
        *[(f"  {name}", f"precision {c['precision']:.4f}, recall {c['recall']:.4f}, F1 "
                        f"{c['f1']:.4f}, support {c['support']}")
          for name, c in report["per_class"].items()],
        *[("left out", note) for note in report.get("left_out", [])],
        ("misclassified", f"{wrong['count']}: " + ", ".join(
            p for p in (wrong["csv"], wrong["sheet"]) if p) + (" (worst first)" if wrong["count"]
                                                               else "")),
        ("metrics file", report["metrics_file"]),
        *[(PLOT_NAMES.get(name, name), path) for name, path in report["plots"].items()],
    ]
    return [f"  {label:<16} {text}" for label, text in rows]
