"""``predict``: a checkpoint on a folder of photos -> Kaggle ``submission.csv`` (``name,invasive``).

The folder is searched recursively (a class-folders root, ``site/day/*.jpg``, ...; hidden folders
are left out). ``name`` is the photo's path relative to the folder, without extension and with
``/`` between folders: a flat folder gives the file name without extension (Kaggle's test ids),
``invasive/12.jpg`` gives ``invasive/12``. ``invasive`` is the probability of the positive class.
Rows are in natural order (2 before 10), as in Kaggle's sample submission.
A multi-class checkpoint (no positive class) writes ``name,label,<class 1>,...,<class k>``
instead: the top class, then every class's probability (columns named after the classes).
``--output`` is required (no file lands in the working directory by surprise); an existing
folder, or a path ending in ``/``, gets ``submission.csv`` inside it. Files in the folder that
are not scored (other names, named pipes, folders that cannot be listed) are listed as left out.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from model.checkpoint import write_atomically
from training.data import IMAGE_SUFFIXES
from training.errors import DataError, list_offenders, writing
from training.scoring import load_classifier, score_files


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_name(path: Path, folder: Path) -> str:
    """The CSV name of ``path``: relative to ``folder``, POSIX separators, no extension."""
    return path.relative_to(folder).with_suffix("").as_posix()


@dataclass
class Listing:
    """The photos of a folder, and what else it held that is not scored (lines to print)."""

    paths: list[Path]
    left_out: list[str] = field(default_factory=list)


def list_images(folder: Path) -> Listing:
    """Every photo under ``folder``, recursively, sorted naturally by their CSV name.

    Hidden folders and files are left out silently (thumbnails, macOS's ``._x.jpg``). Everything
    else that is not scored is said: files whose names are no image names (a photo saved without
    its extension included), entries that are no regular file once links are followed (a named
    pipe called ``x.jpg`` would block the decode for ever; a broken link), folders that cannot be
    listed. Links to folders are followed, once per real folder: a link back up the tree, or a
    second way to a folder already read, would score the same photos again under other names.
    """
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    paths: list[Path] = []
    other_names: list[str] = []
    not_files: list[str] = []
    unlisted: list[str] = []
    repeated: list[str] = []
    seen: set[tuple[int, int]] = set()

    def rel(path: Path) -> str:
        return path.relative_to(folder).as_posix()

    def walk(directory: Path) -> None:
        try:
            st = directory.stat()
            if (st.st_dev, st.st_ino) in seen:
                repeated.append(f"{rel(directory)}/")
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            unlisted.append(f"{rel(directory) or '.'}/ ({exc.strerror or exc})")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow links
            except OSError:
                is_dir = is_file = False
            if is_dir:
                walk(path)
            elif not is_file:
                not_files.append(rel(path))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
            else:
                other_names.append(rel(path))

    walk(folder)
    left_out = [list_offenders(title, items) for title, items in (
        (f"files whose names are not image names ({', '.join(IMAGE_SUFFIXES)}; a photo saved "
         "without its extension needs one), left out", other_names),
        ("entries that are not regular files (named pipes, devices, broken links), left out",
         not_files),
        ("folders that cannot be listed, left out", unlisted),
        ("links to folders already read, not followed again", repeated),
    ) if items]
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} or its sub-folders"
                        + "".join(f"; {line}" for line in left_out))
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(image_name(p, folder), []).append(rel(p))
    clashes = [f"{n} ({', '.join(sorted(files))})" for n, files in sorted(by_name.items())
               if len(files) > 1]
    if clashes:
        raise DataError(list_offenders(f"{folder}: names that differ only in extension", clashes))
    return Listing(sorted(paths, key=lambda p: natural_key(image_name(p, folder))), left_out)


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
    classifier = load_classifier(checkpoint, device=device, precision=precision, engine=engine)
    listing = list_images(images)
    for line in listing.left_out:
        print(line)
    paths = listing.paths
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
    with writing(output):
        write_atomically(output, text.getvalue().encode())  # never half a submission
    return {"output": str(output), "rows": len(rows), "skipped": len(failures),
            "model_id": classifier.model_id, "flip_tta": flip_tta}
