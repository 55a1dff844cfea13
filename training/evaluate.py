"""``evaluate``: a checkpoint on labelled data -> metrics JSON, PNG plots, misclassified images.

Scores through the service's path (``training.scoring``) at the checkpoint's stored threshold.
The checkpoint's data fingerprint and training config are compared with the evaluated data so
the report says exactly what was scored: held-out photos, or the checkpoint's own training and
validation images (optimistic figures), never passing one off as the other.

Writes into the output folder: ``metrics.json``, ``roc.png``, ``precision_recall.png``,
``confusion_matrix.png``, ``training_curves.png`` (when the training log is found),
``misclassified.csv`` (every wrong image, worst first) and ``misclassified.png`` (a contact sheet
of the worst :data:`training.sheets.MISCLASSIFIED_LIMIT`). A multi-class checkpoint (no positive
class) is scored by its top class instead (``training.evaluate_multiclass``): per-class
precision/recall/F1/support, top-1 accuracy, macro-F1, log loss, the k x k confusion matrix and
the misclassified images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from model.inference import Classifier
from training import sheets
from training.data import LabelledData, load_labelled_data
from training.errors import DataError, TrainingError, list_offenders, writing
from training.evaluate_multiclass import multiclass_evaluation_lines, multiclass_results
from training.metrics import binary_metrics
from training.plots import plot_confusion, plot_precision_recall, plot_roc, plot_training_curves
from training.runlog import read_log
from training.scoring import load_classifier, score_files
from training.sheets import Tile
from training.summary import metrics_text

FALSE_POSITIVE, FALSE_NEGATIVE = (200, 30, 30), (230, 140, 0)  # frame colours on the sheet
PLOT_NAMES = {"roc": "ROC curve", "precision_recall": "precision-recall",
              "confusion": "confusion matrix", "training_curves": "training curves"}


def evaluate(
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 2,
    skip_bad: bool = False,
    flip_tta: bool = False,
    log: Path | None = None,
    engine: str = "eager",
    positive_class: str | None = None,
) -> dict[str, Any]:
    """``positive_class`` (``--positive-class``) may only repeat the checkpoint's own: see
    :func:`check_positive_class`."""
    classifier = load_classifier(checkpoint, device=device, precision=precision, engine=engine)
    meta = classifier.metadata
    check_positive_class(positive_class, meta.positive_class, meta.class_names, meta.threshold)
    # one class is enough to measure (a folder of confirmed sightings: recall, accuracy)
    data = load_labelled_data(data_dir, skip_bad=skip_bad, positive_class=meta.positive_class,
                              min_classes=1)
    if data.skipped:
        print(list_offenders("--skip-bad: skipped", data.skipped))
    unknown = sorted(set(data.class_names) - set(meta.class_names))
    if unknown:
        raise DataError(f"{data_dir} has classes the checkpoint does not know: {unknown} "
                        f"(checkpoint classes: {meta.class_names})")
    paths = [s.path for s in data.samples]
    probs, failures = score_files(classifier, paths, threads=workers, flip_tta=flip_tta,
                                  desc="evaluating")
    if failures:
        names = [f"{paths[i].name} ({why})" for i, why in failures.items()]
        if not skip_bad:
            raise DataError(f"{data_dir}: " + list_offenders("unreadable images", names)
                            + " (pass --skip-bad to leave them out)")
        print(list_offenders("skipped unreadable images", names))
    keep = np.array([i not in failures for i in range(len(paths))], dtype=bool)
    with writing(out_dir, folder=True):  # a full disk, /proc: one line, no traceback
        return _report(checkpoint, data_dir, out_dir, classifier, data, probs, failures, keep,
                       flip_tta=flip_tta, log=log)


def _report(checkpoint: Path, data_dir: Path, out_dir: Path, classifier: Classifier,
            data: LabelledData, probs: np.ndarray, failures: dict[int, str], keep: np.ndarray,
            *, flip_tta: bool, log: Path | None) -> dict[str, Any]:
    """The metrics, plots and misclassified images of the scored ``probs``, written into
    ``out_dir``."""
    meta = classifier.metadata
    paths = [s.path for s in data.samples]
    clear_earlier_report(out_dir)
    if meta.multiclass:
        out_dir.mkdir(parents=True, exist_ok=True)
        same = data.fingerprint() == meta.data_fingerprint
        metrics, plots, wrong = multiclass_results(data, meta.class_names, probs, keep, out_dir)
        report = {
            "checkpoint": str(checkpoint), "model_id": classifier.model_id, "data": str(data_dir),
            "task": "multiclass", "flip_tta": flip_tta, **metrics,
            "skipped": data.skipped + [f"{paths[i].name}: {w}" for i, w in failures.items()],
            "same_data_as_training": same,
            "left_out": data.notes,  # photos not scored (no label row), as eda and fit say
            "scope": data_scope(meta.training_config, data_dir, int(keep.sum()), same),
            "misclassified": wrong,
        }
        plots.update(training_curves(checkpoint, log, out_dir))
        report["plots"] = {k: str(v) for k, v in plots.items()}
        report["metrics_file"] = str(out_dir / "metrics.json")
        (out_dir / "metrics.json").write_text(json.dumps(finite_or_null(report), indent=2))
        return report
    is_pos = np.array([data.class_names[s.label] == meta.positive_class for s in data.samples])
    p_pos = probs[:, meta.positive_index]
    metrics = binary_metrics(is_pos[keep], p_pos[keep], meta.threshold)
    same = data.fingerprint() == meta.data_fingerprint
    report = {
        "checkpoint": str(checkpoint), "model_id": classifier.model_id, "data": str(data_dir),
        "positive_class": meta.positive_class, "flip_tta": flip_tta, **metrics,
        "skipped": data.skipped + [f"{paths[i].name}: {w}" for i, w in failures.items()],
        "same_data_as_training": same,
        "left_out": data.notes,  # photos not scored (no label row), as eda and fit say
        "scope": data_scope(meta.training_config, data_dir, int(keep.sum()), same),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    if len(np.unique(is_pos[keep])) == 2:
        plots["roc"] = plot_roc(is_pos[keep], p_pos[keep], meta.threshold, metrics["roc_auc"],
                                out_dir / "roc.png")
        plots["precision_recall"] = plot_precision_recall(is_pos[keep], p_pos[keep],
                                                          meta.threshold,
                                                          out_dir / "precision_recall.png")
    others = [n for n in meta.class_names if n != meta.positive_class]
    negative = others[0] if len(others) == 1 else f"not {meta.positive_class}"
    plots["confusion"] = plot_confusion(metrics["confusion"], negative, meta.positive_class,
                                        out_dir / "confusion_matrix.png")
    plots.update(training_curves(checkpoint, log, out_dir))
    wrong = misclassified(data, p_pos, keep, meta.threshold, meta.positive_class, negative)
    report["misclassified"] = write_misclassified(wrong, out_dir, meta.threshold,
                                                  meta.positive_class, int(keep.sum()))
    report["plots"] = {k: str(v) for k, v in plots.items()}
    report["metrics_file"] = str(out_dir / "metrics.json")
    (out_dir / "metrics.json").write_text(json.dumps(finite_or_null(report), indent=2))
    return report


# Every file an evaluation may write into its --output folder.
REPORT_FILES = ("metrics.json", "roc.png", "precision_recall.png", "confusion_matrix.png",
                "training_curves.png", "misclassified.csv", "misclassified.png")


def clear_earlier_report(out_dir: Path) -> None:
    """Remove an earlier evaluation's files from ``out_dir`` (only those: other files stay).
    A rerun into the same folder writes only what applies to it, and a plot it does not draw
    (training curves of another checkpoint, an ROC curve of a one-class set) would otherwise
    sit beside its figures as if it were theirs."""
    for name in REPORT_FILES:
        (out_dir / name).unlink(missing_ok=True)


def training_curves(checkpoint: Path, log: Path | None, out_dir: Path) -> dict[str, Path]:
    """``training_curves.png`` from the training log (default: beside the checkpoint), if any."""
    log = log or checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".log.jsonl")
    if log.is_file():
        epochs = [e for e in read_log(log) if e.get("event") == "epoch"]
        if epochs:
            return {"training_curves": plot_training_curves(epochs,
                                                            out_dir / "training_curves.png")}
    return {}


def check_positive_class(asked: str | None, stored: str | None, class_names: list[str],
                         threshold: float) -> None:
    """Refuse a ``--positive-class`` other than the checkpoint's.

    ``evaluate`` measures the checkpoint as the service runs it: the service answers with the
    probability of the checkpoint's positive class, compared with a threshold chosen for that
    class. Scoring another class as positive would report figures at a threshold that was never
    chosen for it, for a question the service never answers; a user who asks for it gets a clear
    error instead of a silently ignored flag (or a silently different report). A multi-class
    checkpoint (``stored`` None) has no positive class and no threshold: any is refused.
    """
    if stored is None and asked is not None:
        raise TrainingError(
            f"--positive-class {asked!r}: this checkpoint is multi-class (classes: {class_names}; "
            "no positive class, no threshold): evaluate reports every class and the service "
            "answers with the top class; leave --positive-class out, or train a binary "
            f"checkpoint with fit --positive-class {asked}")
    if asked is None or asked == stored:
        return
    if asked not in class_names:
        raise TrainingError(f"--positive-class {asked!r} is not a class of this checkpoint "
                            f"(its classes: {class_names}; positive: {stored!r})")
    raise TrainingError(
        f"--positive-class {asked!r}: this checkpoint scores {stored!r} as the positive class "
        f"(its threshold {threshold:.4f} was chosen for it, and the service answers with its "
        f"probability), so evaluate scores {stored!r}; leave --positive-class out, or train a "
        f"checkpoint with fit --positive-class {asked}")


def finite_or_null(value: Any) -> Any:
    """``value`` with NaN and infinities as None: ``json.dumps`` would write ``NaN`` (a macro
    ROC AUC over a class with no image), which JSON parsers reject."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def data_scope(training_config: dict[str, Any], data_dir: Path, scored: int, same: bool) -> str:
    """What was scored, relative to what the checkpoint was trained and validated on."""
    trained, validated = training_config.get("train_size"), training_config.get("val_size")
    if same and trained is not None and validated is not None:
        return (f"all {scored} images under {data_dir}, including the {validated} the checkpoint "
                f"was validated on and the {trained} it was trained on: an optimistic figure; "
                "evaluate on photos it never saw, or cross-validate (fit --folds 5, with "
                "--group-column for tiles of one photo) for an honest estimate")
    if same:
        return (f"all {scored} images under {data_dir}: the data the checkpoint was trained and "
                "validated on, an optimistic figure; evaluate on photos it never saw")
    source = training_config.get("data")
    if source and Path(source).resolve() == Path(data_dir).resolve():
        return (f"{scored} images under {data_dir}, the folder the checkpoint was trained on, "
                "but its files changed since (the data fingerprint differs): most of them likely "
                "trained or validated it, so the figures are probably optimistic")
    # A fingerprint names the whole set: differing ones show only that the sets differ, not
    # that they share no photo (a subset of the training photos differs too).
    return (f"{scored} images under {data_dir}, a different set from the data the checkpoint "
            "was trained on (the data fingerprints differ); it may still share photos with it, "
            "which would flatter the figures: only photos the checkpoint never saw give a "
            "held-out estimate")


def misclassified(data: LabelledData, p_pos: np.ndarray, keep: np.ndarray, threshold: float,
                  positive: str, negative: str) -> list[dict[str, Any]]:
    """The wrongly classified images, most confidently wrong first."""
    rows = []
    for i, sample in enumerate(data.samples):
        truth = data.class_names[sample.label]
        said_positive = bool(p_pos[i] >= threshold)
        if not keep[i] or said_positive == (truth == positive):
            continue
        p = float(p_pos[i])
        rows.append({"name": sample.name, "true_class": truth,
                     "predicted": positive if said_positive else negative,
                     "p_positive": round(p, 6),
                     "error": "false positive" if said_positive else "false negative",
                     "path": str(sample.path), "_wrongness": p if said_positive else 1.0 - p})
    rows.sort(key=lambda r: -r["_wrongness"])
    return [{k: v for k, v in r.items() if k != "_wrongness"} for r in rows]


def write_misclassified(rows: list[dict[str, Any]], out_dir: Path, threshold: float,
                        positive: str, scored: int) -> dict[str, Any]:
    """``misclassified.csv`` (all of them) and ``misclassified.png`` (the worst, if any)."""
    def title(shown: int) -> str:
        return (f"misclassified at threshold {threshold:.3f}: {len(rows)} of {scored} images, "
                "worst first" + (f" (the first {shown})" if shown < len(rows) else "")
                + "; red frame: false positive, orange: false negative")

    def tile(r: dict[str, Any]) -> Tile:
        return Tile(Path(r["path"]), (r["name"], f"true: {r['true_class']}",
                                      f"p({positive}) = {r['p_positive']:.3f}"),
                    FALSE_POSITIVE if r["error"] == "false positive" else FALSE_NEGATIVE)

    columns = ["name", "true_class", "predicted", "p_positive", "error", "path"]
    return sheets.write_misclassified(rows, columns, out_dir, title=title, tile=tile)


def evaluation_lines(report: dict[str, Any]) -> list[str]:
    """The readable summary ``invasive-train evaluate`` prints."""
    if report.get("task") == "multiclass":
        return multiclass_evaluation_lines(report)
    c, wrong = report["confusion"], report["misclassified"]
    rows = [
        ("scored", report["scope"]),
        ("metrics", f"{metrics_text(report)}; at the checkpoint's threshold "
                    f"{report['threshold']:.4f}" + (", mirror-image TTA" if report["flip_tta"]
                                                    else "")),
        ("confusion", f"TN {c['tn']}, FP {c['fp']}, FN {c['fn']}, TP {c['tp']} (positive: "
                      f"{report['positive_class']})"),
        *[("left out", note) for note in report.get("left_out", [])],
        ("misclassified", f"{wrong['count']}: " + ", ".join(
            p for p in (wrong["csv"], wrong["sheet"]) if p) + (" (worst first)" if wrong["count"]
                                                               else "")),
        ("metrics file", report["metrics_file"]),
        *[(PLOT_NAMES.get(name, name), path) for name, path in report["plots"].items()],
    ]
    return [f"  {label:<16} {text}" for label, text in rows]
