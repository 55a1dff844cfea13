"""``predict``: a checkpoint on a folder of photos -> Kaggle ``submission.csv`` (``name,invasive``).

The folder is searched recursively (a class-folders root, ``site/day/*.jpg``, ...; hidden folders
are left out). ``name`` is the photo's path relative to the folder, without extension and with
``/`` between folders: a flat folder gives the file name without extension (Kaggle's test ids),
``invasive/12.jpg`` gives ``invasive/12``. ``invasive`` is the probability of the positive class.
Rows are in natural order (2 before 10), as in Kaggle's sample submission.
A multi-class checkpoint (no positive class) writes ``name,label,<class 1>,...,<class k>``
instead: the top class, then every class's probability (columns named after the classes).
``--output`` is required (no file lands in the working directory by surprise); an existing
folder gets ``submission.csv`` inside it.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from model.checkpoint import write_atomically
from model.inference import Classifier
from training.data import IMAGE_SUFFIXES
from training.errors import DataError, TrainingError, list_offenders
from training.scoring import score_files


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_name(path: Path, folder: Path) -> str:
    """The CSV name of ``path``: relative to ``folder``, POSIX separators, no extension."""
    return path.relative_to(folder).with_suffix("").as_posix()


def list_images(folder: Path) -> list[Path]:
    """Every photo under ``folder``, recursively (hidden folders and files left out; symlinked
    folders not followed), sorted naturally by their CSV name."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    paths = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # pruned in place: not descended
        paths += [Path(parent) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} or its sub-folders")
    names = [image_name(p, folder) for p in paths]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError(list_offenders(f"{folder}: names that differ only in extension", clashes))
    return sorted(paths, key=lambda p: natural_key(image_name(p, folder)))


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
        names = [f"{paths[i].relative_to(images).as_posix()} ({why})"
                 for i, why in failures.items()]
        if not skip_bad:
            raise DataError(f"{images}: " + list_offenders("unreadable images", names)
                            + " (pass --skip-bad to leave them out of the CSV)")
        print(list_offenders("left out unreadable images", names))
    meta = classifier.metadata
    if meta.multiclass:
        header = ("name", "label", *meta.class_names)
        rows = [(image_name(p, images), meta.class_names[int(probs[i].argmax())],
                 *(f"{v:.6f}" for v in probs[i])) for i, p in enumerate(paths)
                if i not in failures]
    else:
        pos = meta.positive_index
        header = ("name", "invasive")
        rows = [(image_name(p, images), f"{probs[i, pos]:.6f}") for i, p in enumerate(paths)
                if i not in failures]
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows([header, *rows])
    write_atomically(output, text.getvalue().encode())  # never half a submission
    return {"output": str(output), "rows": len(rows), "skipped": len(failures),
            "model_id": classifier.model_id, "flip_tta": flip_tta}
