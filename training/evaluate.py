"""``evaluate``: a checkpoint on labelled data -> metrics JSON and PNG plots.

Scores through the service's path (``training.scoring``) at the checkpoint's stored threshold.
The checkpoint's data fingerprint is compared with the evaluated data's so a report never passes
off training-set figures as held-out ones without saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model.inference import Classifier
from training.data import load_labelled_data
from training.errors import DataError, list_offenders
from training.metrics import binary_metrics
from training.plots import plot_confusion, plot_roc, plot_training_curves
from training.runlog import read_log
from training.scoring import score_files


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
) -> dict[str, Any]:
    classifier = Classifier.from_checkpoint(checkpoint, device=device, precision=precision)
    meta = classifier.metadata
    data = load_labelled_data(data_dir, skip_bad=skip_bad, positive_class=meta.positive_class)
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
    is_pos = np.array([data.class_names[s.label] == meta.positive_class for s in data.samples])
    p_pos = probs[:, meta.positive_index]
    metrics = binary_metrics(is_pos[keep], p_pos[keep], meta.threshold)
    report = {
        "checkpoint": str(checkpoint), "model_id": classifier.model_id, "data": str(data_dir),
        "positive_class": meta.positive_class, "flip_tta": flip_tta, **metrics,
        "skipped": data.skipped + [f"{paths[i].name}: {w}" for i, w in failures.items()],
        "same_data_as_training": data.fingerprint() == meta.data_fingerprint,
    }
    if report["same_data_as_training"]:
        print("note: this is the data the checkpoint was trained on; the figures are optimistic")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    if len(np.unique(is_pos[keep])) == 2:
        plots["roc"] = plot_roc(is_pos[keep], p_pos[keep], meta.threshold, metrics["roc_auc"],
                                out_dir / "roc.png")
    others = [n for n in meta.class_names if n != meta.positive_class]
    negative = others[0] if len(others) == 1 else f"not {meta.positive_class}"
    plots["confusion"] = plot_confusion(metrics["confusion"], negative, meta.positive_class,
                                        out_dir / "confusion_matrix.png")
    log = log or checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".log.jsonl")
    if log.is_file():
        epochs = [e for e in read_log(log) if e.get("event") == "epoch"]
        if epochs:
            plots["training_curves"] = plot_training_curves(epochs, out_dir / "training_curves.png")
    report["plots"] = {k: str(v) for k, v in plots.items()}
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    return report
