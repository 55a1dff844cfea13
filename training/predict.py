"""``predict``: a checkpoint on a folder of photos -> Kaggle ``submission.csv`` (``name,invasive``).

``name`` is the file name without extension (Kaggle's test ids), ``invasive`` the probability of
the positive class. Rows are in natural order (2 before 10), as in Kaggle's sample submission.
``--output`` is required (no file lands in the working directory by surprise); an existing
folder gets ``submission.csv`` inside it.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from model.checkpoint import write_atomically
from model.inference import Classifier
from training.data import IMAGE_SUFFIXES
from training.errors import DataError, TrainingError, list_offenders
from training.scoring import score_files


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    paths = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    stems = [p.stem for p in paths]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise DataError(list_offenders(f"{folder}: names that differ only in extension", clashes))
    return sorted(paths, key=lambda p: natural_key(p.name))


def predict_folder(
    checkpoint: Path,
    images: Path,
    output: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 2,
    flip_tta: bool = False,
    skip_bad: bool = False,
    batch_size: int = 32,
    engine: str = "eager",
) -> dict:
    if output.is_dir():
        output = output / "submission.csv"
    try:
        classifier = Classifier.from_checkpoint(checkpoint, device=device, precision=precision,
                                                engine=engine)
    except ValueError as exc:  # --device cuda without CUDA, --precision fp16 on a CPU
        raise TrainingError(str(exc)) from None
    paths = list_images(images)
    probs, failures = score_files(classifier, paths, batch_size=batch_size, threads=workers,
                                  flip_tta=flip_tta, desc="predicting")
    if failures:
        names = [f"{paths[i].name} ({why})" for i, why in failures.items()]
        if not skip_bad:
            raise DataError(f"{images}: " + list_offenders("unreadable images", names)
                            + " (pass --skip-bad to leave them out of the CSV)")
        print(list_offenders("left out unreadable images", names))
    pos = classifier.metadata.positive_index
    rows = [(p.stem, f"{probs[i, pos]:.6f}") for i, p in enumerate(paths) if i not in failures]
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows([("name", "invasive"), *rows])
    write_atomically(output, text.getvalue().encode())  # never half a submission
    return {"output": str(output), "rows": len(rows), "skipped": len(failures),
            "model_id": classifier.model_id, "flip_tta": flip_tta}
